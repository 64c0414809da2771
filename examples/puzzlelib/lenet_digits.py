"""A PuzzleLib training script, run by minidl with only its imports changed.

lenet_digits_puzzlelib.py is the same script as written for PuzzleLib; this
file differs from it in the import lines alone (tests/test_puzzlelib_script.py
checks that, and runs this one). It trains a LeNet-style convnet on
scikit-learn's 8x8 digits with PuzzleLib's idioms: one flat optimizer state
(setupOn(net, useGlobalState=True)), a weight-decay hook, learning-rate steps
by assignment, Trainer/Validator callbacks reading currBatch/totalBatches, and
a weights file with the model's blueprint, rebuilt without the code above.

    python examples/puzzlelib/lenet_digits.py
"""

import os
import tempfile

import numpy as np
from sklearn.datasets import load_digits

from minidl.blueprint import load
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.handlers import Calculator, Trainer, Validator
from minidl.modules import Activation, Conv2D, Flatten, Linear, MaxPool2D, relu
from minidl.optimizers import Hooks, MomentumSGD


def loadData():
    digits = load_digits()
    data = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int32)

    order = np.random.RandomState(0).permutation(data.shape[0])
    return data[order], labels[order]


def buildNet():
    seq = Sequential(name="lenet")

    seq.append(Conv2D(1, 16, 3, pad=1, initscheme="he", name="conv1"))
    seq.append(MaxPool2D(2, 2, name="pool1"))
    seq.append(Activation(relu, name="relu1"))

    seq.append(Conv2D(16, 32, 3, pad=1, initscheme="he", name="conv2"))
    seq.append(MaxPool2D(2, 2, name="pool2"))
    seq.append(Activation(relu, name="relu2"))

    seq.append(Flatten(name="flatten"))
    seq.append(Linear(seq.dataShapeFrom((1, 1, 8, 8))[1], 64, initscheme="he", name="fc1"))
    seq.append(Activation(relu, name="relu3"))
    seq.append(Linear(64, 10, name="fc2"))

    return seq


def main():
    data, labels = loadData()
    print("Loaded digits: %s" % (data.shape, ))

    np.random.seed(1234)
    net = buildNet()

    optimizer = MomentumSGD()
    optimizer.setupOn(net, useGlobalState=True)
    optimizer.learnRate = 0.05
    optimizer.momRate = 0.9
    optimizer.addHook(Hooks.WeightDecay(0.0001))

    cost = CrossEntropy(maxlabels=10)
    trainer = Trainer(
        net, cost, optimizer, batchsize=32,
        onBatchFinish=lambda train: print(
            "Processed batch %d out of %d" % (train.currBatch, train.totalBatches)
        ) if train.currBatch % 15 == 0 else None
    )
    validator = Validator(net, cost)

    for i in range(8):
        trainer.trainFromHost(
            data[:1500], labels[:1500], macroBatchSize=750,
            onMacroBatchFinish=lambda train: print("Train error: %s" % train.cost.getMeanError())
        )
        valerror = validator.validateFromHost(data[1500:], labels[1500:], macroBatchSize=1000)
        print("Epoch %d. Accuracy: %s" % (i + 1, 1.0 - valerror))

        if (i + 1) % 3 == 0:
            optimizer.learnRate *= 0.5
            print("Lowered learn rate: %s" % optimizer.learnRate)

    print("conv1 filters: %s" % (net.getByName("conv1").W.shape, ))

    path = os.path.join(tempfile.mkdtemp(), "lenet.hdf")
    net.save(path, withBlueprint=True)
    restored = load(path)

    outputs = [Calculator(mod).calcFromHost(data[1500:]) for mod in (net, restored)]
    same = np.array_equal(outputs[0], outputs[1])
    print("Restored from blueprint: %s, same outputs: %s" % (restored.name, same))


if __name__ == "__main__":
    main()
