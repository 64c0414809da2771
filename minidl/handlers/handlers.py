"""Trainer, Validator and Calculator: loops over minibatches.

``train(data, target)`` takes arrays already on the backend and walks them in
order; ``trainFromHost(data, target, macroBatchSize)`` takes host data (numpy
arrays or h5py datasets), shuffles samples with the trainer's seeded
generator each call, and moves one macro-batch at a time to the backend.
Errors add up in the cost's on-device accumulator, read once per call. The one
value a step reads back is its loss, to stop at the first that is not finite
(``terminateOnNaN``, on by default; see minidl.anomaly): free on the NumPy
backend, one synchronisation per step on the GPU, and turned off with the flag.
"""

import math

import numpy as np

from minidl.anomaly import NonFiniteLossError
from minidl.backend import gpuarray
from minidl.handlers.progress import progress


def _checkPair(owner, data, target):
    if len(data) != len(target):
        raise ValueError("%s: data has %d samples but target has %d" % (owner, len(data), len(target)))
    if len(data) == 0:
        raise ValueError("%s: no samples given" % owner)


def _hostBatches(data, target, macroBatchSize, order):
    """Yield (data, target, indices) macro-batches on the backend, samples in the given order
    (indices: theirs in data)."""
    for start in range(0, len(order), macroBatchSize):
        idx = order[start:start + macroBatchSize]
        sortedIdx = np.sort(idx)                  # h5py reads increasing indices only
        x, y = np.asarray(data[sortedIdx]), np.asarray(target[sortedIdx])
        back = np.argsort(np.argsort(idx))        # restore the shuffled order inside the batch
        yield gpuarray.to_gpu(x[back]), gpuarray.to_gpu(y[back]), idx


def _sampleText(samples):
    if len(samples) > 1 and np.all(np.diff(samples) == 1):
        return "samples %d to %d" % (samples[0], samples[-1])
    shown = ", ".join(str(int(i)) for i in samples[:8])
    return "samples %s%s" % (shown, ", ... (%d in all: error.samples)" % len(samples) if len(samples) > 8 else "")


class Trainer:
    """Minibatch training. terminateOnNaN (default True): stop at the first batch whose loss is not
    finite, before its update, with a NonFiniteLossError naming the batch and its samples."""

    def __init__(self, net, cost, optimizer, batchsize=128, onBatchFinish=None, seed=0, terminateOnNaN=True):
        if batchsize < 1:
            raise ValueError("Trainer: batchsize must be >= 1, got %r" % (batchsize,))
        if not isinstance(terminateOnNaN, bool):
            raise ValueError("Trainer: terminateOnNaN must be True or False, got %r" % (terminateOnNaN,))
        self.net, self.cost, self.optimizer = net, cost, optimizer
        self.batchsize = batchsize
        self.onBatchFinish = onBatchFinish
        self.terminateOnNaN = terminateOnNaN
        self.rng = np.random.default_rng(seed)

    def trainStep(self, data, target):
        """One optimizer step on one batch (with terminateOnNaN, it reads the batch's loss back and
        raises NonFiniteLossError instead of updating when it is not finite)."""
        self._step(data, target, None, np.arange(data.shape[0]))

    def _step(self, data, target, batch, samples):
        self.net(data)
        loss, _ = self.cost(self.net.data, target, queryError=self.terminateOnNaN)
        if self.terminateOnNaN and not math.isfinite(loss):
            where = "this batch" if batch is None else "batch %d of this pass" % batch
            raise NonFiniteLossError(
                "Trainer: the loss of %s (%s) is %s; stopped before its update, so the weights and the "
                "optimizer's state are those before it (batch norm's running statistics have taken it in). "
                "Trainer(..., terminateOnNaN=False) trains on regardless; minidl.detectAnomaly() finds the "
                "first module to produce a NaN or an infinity." % (where, _sampleText(samples), loss),
                batch, samples, loss)
        self.optimizer.zeroGradParams()
        self.net.backward(self.cost.grad, updGrad=False)
        self.optimizer.update()

    def train(self, data, target):
        """One pass over backend arrays in order; returns the mean training error of the pass."""
        _checkPair("Trainer", data, target)
        return self._train(data, target, np.arange(data.shape[0]), 0)

    def _train(self, data, target, sampleIds, firstBatch):
        """train() over data whose rows are samples sampleIds of the caller's data, the first batch
        counted as firstBatch (for trainFromHost's messages)."""
        self.cost.resetAccumulator()
        n = data.shape[0]
        starts = range(0, n, self.batchsize)
        for i, start in enumerate(progress(starts, len(starts), "train")):
            stop = min(start + self.batchsize, n)
            self._step(data[start:stop], target[start:stop], firstBatch + i, sampleIds[start:stop])
            if self.onBatchFinish is not None:
                self.onBatchFinish(self)
        return self.cost.getMeanError()

    def trainFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None):
        """One shuffled pass over host data; returns the mean training error of the pass."""
        _checkPair("Trainer", data, target)
        order = self.rng.permutation(len(data))
        total, count, batches = 0.0, 0, 0
        for x, y, idx in _hostBatches(data, target, macroBatchSize, order):
            total += self._train(x, y, idx, batches) * x.shape[0]
            count += x.shape[0]
            batches += -(-x.shape[0] // self.batchsize)
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
        for x, y, _ in _hostBatches(data, target, macroBatchSize, np.arange(len(data))):
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
