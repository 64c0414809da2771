"""Train a MobileNet on digits (default) or CIFAR-10, save, reload and check.

    python examples/train_mobilenet.py                      # digits, MobileNetV2, default backend
    python examples/train_mobilenet.py --data-dir cifar/    # CIFAR-10 python batches in cifar/
    mpiexec -n 2 python examples/train_mobilenet.py         # data-parallel over 2 ranks (minidl.distributed)

Under mpiexec every rank trains on its share of each batch (--batchsize is the global batch), the
gradients are averaged over the ranks, rank 0 prints and writes the files, and every rank loads the
saved weights back. --sync-bn takes batch norm's statistics over the global batch.

Trains on the default backend (CUDA when present, else NumPy) with the
training recipe of minidl: a learning-rate schedule stepped every batch
(cosine with linear warmup, or one-cycle with --schedule onecycle), global
gradient-norm clipping, augmentation (random crops, plus horizontal flips on
CIFAR-10; on digits, one-pixel shifts of half the images and no flips) prepared
by a background loader while the previous macro-batch trains. Prints progress
and the test accuracy, writes the training curves as CSV (and PNG when
matplotlib is installed) next to the weights, saves the weights to an .h5
file, builds a fresh model, loads them and checks its predictions are
identical. Bad arguments end with one line on stderr and exit status 2.
"""

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minidl import distributed  # noqa: E402
from minidl.backend import backendName, gpuarray  # noqa: E402
from minidl.cost import CrossEntropy  # noqa: E402
from minidl.datasets import (  # noqa: E402
    Compose, Loader, Normalize, RandomApply, RandomCrop, RandomHorizontalFlip, loadCifar10, loadDigits,
)
from minidl.handlers import Calculator, Trainer, Validator  # noqa: E402
from minidl.models import loadMobileNetV1, loadMobileNetV2, loadMobileNetV3  # noqa: E402
from minidl.optimizers import MomentumSGD, OneCycleLR, WarmupCosineLR  # noqa: E402

# CIFAR-10's per-channel mean and standard deviation over its training images
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message):
        sys.stderr.write("%s: error: %s (see --help)\n" % (self.prog, message))
        sys.exit(2)


def _number(kind, low, lowOpen, text):
    """text as kind (int or float), finite and >= low (> low when lowOpen); argparse's error otherwise."""
    what = "an integer" if kind is int else "a finite number"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text)) from None
    if not math.isfinite(value) or value < low or (lowOpen and value == low):
        raise argparse.ArgumentTypeError("must be %s %s %s, got %r" % (what, ">" if lowOpen else ">=", low, text))
    return value


def _arg(kind, low, lowOpen=False):
    return lambda text: _number(kind, low, lowOpen, text)


def parseArgs(argv):
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with CIFAR-10's python batches (default: digits)")
    parser.add_argument("--model", choices=("v1", "v2", "v3-small", "v3-large"), default="v2")
    parser.add_argument("--width", type=_arg(float, 0, True), default=0.5)
    parser.add_argument("--epochs", type=_arg(int, 1), default=None, help="default: 12 on digits, 10 on CIFAR-10")
    parser.add_argument("--batchsize", type=_arg(int, 1), default=32)
    parser.add_argument("--lr", type=_arg(float, 0, True), default=0.02, help="the peak learning rate")
    parser.add_argument("--schedule", choices=("cosine", "onecycle"), default="cosine",
                        help="cosine: linear warmup then cosine to 0; onecycle: PyTorch's OneCycleLR shape")
    parser.add_argument("--warmup", type=_arg(float, 0), default=None,
                        help="fraction of the run spent warming up (default 0.05 cosine, 0.3 onecycle)")
    parser.add_argument("--clip", type=_arg(float, 0), default=20.0,
                        help="maximum global gradient norm (0: no clipping)")
    parser.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    parser.add_argument("--seed", type=_arg(int, 0), default=0)
    parser.add_argument("--sync-bn", action="store_true", help="under mpiexec: batch statistics over every rank")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "minidl_mobilenet.h5"),
                        help="the weights file; the curves go beside it (<name>_curves.csv, .png)")
    parser.add_argument("--limit", type=_arg(int, 1), default=None,
                        help="use at most this many training and test images (a quick try)")
    args = parser.parse_args(argv)
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        parser.error("--data-dir %r is not a folder" % args.data_dir)
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder) or os.path.isdir(args.out):
        parser.error("--out %r: %s" % (args.out, "is a folder" if os.path.isdir(args.out) else
                                       "its folder %r does not exist" % folder))
    if args.warmup is not None and args.warmup >= 1:
        parser.error("--warmup must be a fraction of the run, below 1, got %g" % args.warmup)
    return parser, args


def buildModel(args, inmaps, numClasses):
    if args.model.startswith("v3-"):
        return loadMobileNetV3(args.model[3:], width=args.width, numClasses=numClasses, smallInput=True,
                               inmaps=inmaps, dropout=0)
    if args.model == "v1":
        return loadMobileNetV1(width=args.width, numClasses=numClasses, smallInput=True, inmaps=inmaps, dropout=0)
    return loadMobileNetV2(width=args.width, numClasses=numClasses, smallInput=True, inmaps=inmaps, dropout=0)


def loadData(args):
    """(name, epochs, trainX, trainY, testX, testY, augmentation) for the chosen dataset."""
    if args.data_dir:
        trainX, trainY, testX, testY = loadCifar10(args.data_dir)
        normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        trainX, testX = normalize(trainX), normalize(testX)
        # crops of 32 from the images zero-padded by 4 (zero after normalising: the mean colour)
        name, epochs, augment = "CIFAR-10", 10, Compose([RandomCrop(32, pad=4), RandomHorizontalFlip()])
    else:
        trainX, trainY, testX, testY = loadDigits(seed=args.seed)
        # half the images shifted by up to a pixel (a crop of 8 from the images padded by 1): the test
        # images are centred, and shifting all of them costs 2-5 points of accuracy in 12 epochs at
        # 8x8; no flip, a mirrored digit is another glyph
        name, epochs, augment = "digits", 12, RandomApply(RandomCrop(8, pad=1), p=0.5)
    if args.limit:
        trainX, trainY, testX, testY = trainX[:args.limit], trainY[:args.limit], testX[:args.limit], testY[:args.limit]
    return name, args.epochs or epochs, trainX, trainY, testX, testY, None if args.no_augment else augment


def makeSchedule(args, totalSteps):
    if args.schedule == "onecycle":
        return OneCycleLR(args.lr, totalSteps, pctStart=0.3 if args.warmup is None else args.warmup)
    warmup = 0.05 if args.warmup is None else args.warmup
    return WarmupCosineLR(args.lr, totalSteps, warmupSteps=min(int(round(warmup * totalSteps)), totalSteps - 1))


def curvesPaths(out):
    stem = os.path.splitext(out)[0]
    return stem + "_curves.csv", stem + "_curves.png"


def main(argv=None):
    parser, args = parseArgs(argv)
    world = distributed.init()          # the ranks of mpiexec, or this process alone
    if world.rank != 0:
        sys.stdout = open(os.devnull, "w")      # rank 0 reports
    if args.batchsize % world.size:
        parser.error("--batchsize %d (the global batch) does not split over %d ranks"
                     % (args.batchsize, world.size))
    batchsize = args.batchsize // world.size
    np.random.seed(args.seed)
    try:   # what the data and the arguments together can make invalid: one line, no traceback
        name, epochs, trainX, trainY, testX, testY, augment = loadData(args)
        numClasses = int(trainY.max()) + 1
        net = buildModel(args, trainX.shape[1], numClasses)
        if args.sync_bn:
            net = distributed.convertSyncBatchNorm(net)
        sampler = distributed.DistributedSampler(len(trainX), seed=args.seed) if world.size > 1 else None
        loader = Loader(trainX, trainY, macroBatchSize=8 * batchsize, augment=augment,
                        seed=args.seed + 1000003 * world.rank, sampler=sampler)
        schedule = makeSchedule(args, epochs * loader.batchesPerEpoch(batchsize))
    except (ValueError, OSError, ImportError) as e:
        parser.error(str(e))
    print("backend: %s; %s: %d train / %d test images of shape %s"
          % (backendName(), name, len(trainX), len(testX), trainX.shape[1:]))
    print("distributed: %d rank%s%s, batch %d per rank (global %d)%s"
          % (world.size, "s" if world.size > 1 else "", " over MPI" if world.isMPI else " (no MPI)", batchsize,
             args.batchsize, ", synchronised batch norm" if args.sync_bn else ""))
    print("model: MobileNet%s width %g, %s parameters" % (args.model.upper(), args.width,
                                                         "{:,}".format(net.numOfParams())))
    print("recipe: %s, %s, %s" % (schedule, "clip gradient norm at %g" % args.clip if args.clip else "no clipping",
                                 "augmentation %r" % (augment,) if augment else "no augmentation"))

    optimizer = MomentumSGD(learnRate=args.lr, momRate=0.9)
    optimizer.setupOn(net)
    optimizer = distributed.DataParallel(net, optimizer)   # rank 0's weights everywhere; gradients averaged
    trainer = Trainer(net, CrossEntropy(), optimizer, batchsize=batchsize, seed=args.seed,
                      schedule=schedule, clipGradNorm=args.clip or None)
    validator = Validator(net, CrossEntropy(), batchsize=256)
    testShare = distributed.DistributedSampler(len(testX), shuffle=False, equalize=None).indices()
    testXd, testYd = gpuarray.to_gpu(testX[testShare]), gpuarray.to_gpu(testY[testShare])

    def testError():    # every rank scores its share of the test set; the mean over all of it
        return distributed.average(validator.validate(testXd, testYd), len(testShare))

    start = time.perf_counter()
    for epoch in range(epochs):
        loss = distributed.average(trainer.trainFromLoader(loader), loader.numSamples)
        error = testError()
        row = trainer.history.addValidation(error, accuracy=1 - error)
        print("epoch %2d/%d  lr %.4f  train loss %.4f  train accuracy %.2f%%  test accuracy %.2f%%  (%.1f s)"
              % (epoch + 1, epochs, row["learnRate"], loss,
                 100 * distributed.average(row["trainAccuracy"], loader.numSamples), 100 * (1 - error),
                 time.perf_counter() - start))
    elapsed = time.perf_counter() - start
    accuracy = 1 - testError()
    print("test accuracy: %.2f%% after %d epochs in %.1f s" % (100 * accuracy, epochs, elapsed))

    csvPath, pngPath = curvesPaths(args.out)
    if distributed.isMain():        # (the curves hold rank 0's own training figures)
        trainer.history.writeCsv(csvPath)
        try:
            trainer.history.plot(pngPath, title="MobileNet%s on %s" % (args.model.upper(), name))
            print("training curves: %s and %s" % (csvPath, pngPath))
        except ImportError:
            print("training curves: %s (no PNG: matplotlib is not installed; pip install 'minidl[plot]')" % csvPath)

    distributed.saveOnMain(net, args.out)       # rank 0 writes; then every rank reads it back
    fresh = buildModel(args, trainX.shape[1], numClasses)
    fresh.load(args.out)
    fresh.evalMode()
    before = Calculator(net, batchsize=256).calc(testXd)
    after = Calculator(fresh, batchsize=256).calc(testXd)
    differ = distributed.allreduceSum(float(np.abs(before - after).max()))
    if differ != 0:
        print("ERROR: the reloaded model's predictions differ (max |diff| %g)" % differ)
        return 1
    print("saved weights to %s; a fresh model loaded them on %s and predicts identically"
          % (args.out, "each of the %d ranks" % world.size if world.size > 1 else "this process"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
