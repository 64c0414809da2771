"""Train a MobileNet on digits (default) or CIFAR-10, save, reload and check.

    python examples/train_mobilenet.py                      # digits, MobileNetV2, default backend
    python examples/train_mobilenet.py --data-dir cifar/    # CIFAR-10 python batches in cifar/

Trains on the default backend (CUDA when present, else NumPy), prints
progress and the test accuracy, saves the weights to an .h5 file, builds a
fresh model, loads them and checks its predictions are identical.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minidl.backend import backendName, gpuarray  # noqa: E402
from minidl.cost import CrossEntropy  # noqa: E402
from minidl.datasets import loadCifar10, loadDigits  # noqa: E402
from minidl.handlers import Calculator, Trainer, Validator  # noqa: E402
from minidl.models import loadMobileNetV1, loadMobileNetV2  # noqa: E402
from minidl.optimizers import MomentumSGD  # noqa: E402


def buildModel(args, inmaps, numClasses):
    if args.model == "v1":
        return loadMobileNetV1(width=args.width, numClasses=numClasses, smallInput=True, inmaps=inmaps, dropout=0)
    return loadMobileNetV2(width=args.width, numClasses=numClasses, smallInput=True, inmaps=inmaps, dropout=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with CIFAR-10's python batches (default: digits)")
    parser.add_argument("--model", choices=("v1", "v2"), default="v2")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=None, help="default: 12 on digits, 10 on CIFAR-10")
    parser.add_argument("--batchsize", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "minidl_mobilenet.h5"))
    parser.add_argument("--limit", type=int, default=None,
                        help="use at most this many training and test images (a quick try)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1, got %d" % args.limit)

    np.random.seed(args.seed)
    if args.data_dir:
        trainX, trainY, testX, testY = loadCifar10(args.data_dir)
        name, epochs = "CIFAR-10", args.epochs or 10
    else:
        trainX, trainY, testX, testY = loadDigits(seed=args.seed)
        name, epochs = "digits", args.epochs or 12
    numClasses = int(trainY.max()) + 1
    if args.limit:
        trainX, trainY, testX, testY = trainX[:args.limit], trainY[:args.limit], testX[:args.limit], testY[:args.limit]
    print("backend: %s; %s: %d train / %d test images of shape %s"
          % (backendName(), name, len(trainX), len(testX), trainX.shape[1:]))

    net = buildModel(args, trainX.shape[1], numClasses)
    print("model: MobileNet%s width %g, %s parameters" % (args.model.upper(), args.width,
                                                         "{:,}".format(net.numOfParams())))
    optimizer = MomentumSGD(learnRate=args.lr, momRate=0.9)
    optimizer.setupOn(net)
    trainer = Trainer(net, CrossEntropy(), optimizer, batchsize=args.batchsize, seed=args.seed)
    validator = Validator(net, CrossEntropy(), batchsize=256)
    testXd, testYd = gpuarray.to_gpu(testX), gpuarray.to_gpu(testY)

    start = time.perf_counter()
    for epoch in range(epochs):
        # cosine learning-rate schedule over the run
        optimizer.learnRate = args.lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        net.trainMode()
        loss = trainer.trainFromHost(trainX, trainY, macroBatchSize=len(trainX))
        net.evalMode()
        error = validator.validate(testXd, testYd)
        print("epoch %2d/%d  lr %.4f  train loss %.4f  test accuracy %.2f%%  (%.1f s)"
              % (epoch + 1, epochs, optimizer.learnRate, loss, 100 * (1 - error), time.perf_counter() - start))
    elapsed = time.perf_counter() - start
    accuracy = 1 - validator.validate(testXd, testYd)
    print("test accuracy: %.2f%% after %d epochs in %.1f s" % (100 * accuracy, epochs, elapsed))

    net.save(args.out)
    fresh = buildModel(args, trainX.shape[1], numClasses)
    fresh.load(args.out)
    fresh.evalMode()
    before = Calculator(net, batchsize=256).calc(testXd)
    after = Calculator(fresh, batchsize=256).calc(testXd)
    if not np.array_equal(before, after):
        print("ERROR: the reloaded model's predictions differ (max |diff| %g)" % np.abs(before - after).max())
        return 1
    print("saved weights to %s; a fresh model loaded them and predicts identically" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
