"""Trainer, Validator and Calculator: loops over minibatches.

``train(data, target)`` takes arrays already on the backend and walks them in
order; ``trainFromHost(data, target, macroBatchSize)`` takes host data (numpy
arrays or h5py datasets), shuffles samples with the trainer's seeded
generator each call, and moves one macro-batch at a time to the backend.
A step never reads a value back from the device: errors add up in the cost's
on-device accumulator, read once per call.
"""

import numpy as np

from minidl.backend import gpuarray
from minidl.handlers.progress import progress


def _checkPair(owner, data, target):
    if len(data) != len(target):
        raise ValueError("%s: data has %d samples but target has %d" % (owner, len(data), len(target)))
    if len(data) == 0:
        raise ValueError("%s: no samples given" % owner)


def _hostBatches(data, target, macroBatchSize, order):
    """Yield (data, target) macro-batches on the backend, samples in the given order."""
    for start in range(0, len(order), macroBatchSize):
        idx = order[start:start + macroBatchSize]
        sortedIdx = np.sort(idx)                  # h5py reads increasing indices only
        x, y = np.asarray(data[sortedIdx]), np.asarray(target[sortedIdx])
        back = np.argsort(np.argsort(idx))        # restore the shuffled order inside the batch
        yield gpuarray.to_gpu(x[back]), gpuarray.to_gpu(y[back])


class Trainer:
    def __init__(self, net, cost, optimizer, batchsize=128, onBatchFinish=None, seed=0):
        if batchsize < 1:
            raise ValueError("Trainer: batchsize must be >= 1, got %r" % (batchsize,))
        self.net, self.cost, self.optimizer = net, cost, optimizer
        self.batchsize = batchsize
        self.onBatchFinish = onBatchFinish
        self.rng = np.random.default_rng(seed)

    def trainStep(self, data, target):
        """One optimizer step on one batch (no host synchronisation)."""
        self.net(data)
        self.cost(self.net.data, target, queryError=False)
        self.optimizer.zeroGradParams()
        self.net.backward(self.cost.grad, updGrad=False)
        self.optimizer.update()

    def train(self, data, target):
        """One pass over backend arrays in order; returns the mean training error of the pass."""
        _checkPair("Trainer", data, target)
        self.cost.resetAccumulator()
        n = data.shape[0]
        starts = range(0, n, self.batchsize)
        for i, start in enumerate(progress(starts, len(starts), "train")):
            self.trainStep(data[start:start + self.batchsize], target[start:start + self.batchsize])
            if self.onBatchFinish is not None:
                self.onBatchFinish(self)
        return self.cost.getMeanError()

    def trainFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None):
        """One shuffled pass over host data; returns the mean training error of the pass."""
        _checkPair("Trainer", data, target)
        order = self.rng.permutation(len(data))
        total, count = 0.0, 0
        for x, y in _hostBatches(data, target, macroBatchSize, order):
            total += self.train(x, y) * x.shape[0]
            count += x.shape[0]
            if onMacroBatchFinish is not None:
                onMacroBatchFinish(self)
        return total / count


class Validator:
    """Mean validation error over a dataset (the error rate for CrossEntropy).
    Put the net in eval mode first if it has BatchNorm or Dropout."""

    def __init__(self, net, cost, batchsize=128):
        self.net, self.cost, self.batchsize = net, cost, batchsize

    def validate(self, data, target):
        _checkPair("Validator", data, target)
        self.cost.resetAccumulator()
        for start in range(0, data.shape[0], self.batchsize):
            self.net(data[start:start + self.batchsize])
            self.cost.validate(self.net.data, target[start:start + self.batchsize])
        return self.cost.getMeanError()

    def validateFromHost(self, data, target, macroBatchSize=10000):
        _checkPair("Validator", data, target)
        total = 0.0
        for x, y in _hostBatches(data, target, macroBatchSize, np.arange(len(data))):
            total += self.validate(x, y) * x.shape[0]
        return total / len(data)


class Calculator:
    """The net's outputs over a dataset, gathered on the host."""

    def __init__(self, net, batchsize=128):
        self.net, self.batchsize = net, batchsize

    def calc(self, data):
        return np.concatenate([self.net(data[s:s + self.batchsize]).get()
                               for s in range(0, data.shape[0], self.batchsize)])

    def calcFromHost(self, data, macroBatchSize=10000):
        return np.concatenate([self.calc(gpuarray.to_gpu(np.asarray(data[s:s + macroBatchSize])))
                               for s in range(0, len(data), macroBatchSize)])
