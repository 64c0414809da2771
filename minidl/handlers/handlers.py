"""Trainer, Validator and Calculator: loops over minibatches (PuzzleLib's handlers).

``train(data, target)`` takes arrays already on the backend and walks them in
order (``random=True``: batches in a shuffled order); ``trainFromHost(data,
target, macroBatchSize)`` takes host data (numpy arrays or h5py datasets),
shuffles samples with the trainer's seeded generator each call (``random=False``:
in order), and moves one macro-batch at a time to the backend.
Errors add up in the cost's on-device accumulator, read once per call. The one
value a step reads back is its loss, to stop at the first that is not finite
(``terminateOnNaN``, on by default; see minidl.anomaly): free on the NumPy
backend, one synchronisation per step on the GPU, and turned off with the flag.

As in PuzzleLib, the Trainer puts the net in train mode at the start of each
pass and the Validator and Calculator put it in eval mode; each handler counts
``currBatch`` (1-based) of ``totalBatches`` in the current call (of the current
macro-batch, from host) and ``currMacroBatch`` of ``totalMacroBatches``, and
calls ``onBatchFinish(handler)`` after every batch and ``onMacroBatchFinish(handler)``
after every macro-batch.
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


class Handler:
    """What the three handlers share: the net, the batch size, PuzzleLib's counters and callbacks."""

    def __init__(self, net, onBatchFinish=None, batchsize=128):
        kind = type(self).__name__
        if isinstance(batchsize, bool) or not isinstance(batchsize, (int, np.integer)) or batchsize < 1:
            raise ValueError("%s: batchsize must be >= 1, got %r" % (kind, batchsize))
        if onBatchFinish is not None and not callable(onBatchFinish):
            raise TypeError("%s: onBatchFinish must be callable, got %s" % (kind, type(onBatchFinish).__name__))
        self.module = self.net = net
        self.batchsize = int(batchsize)
        self.onBatchFinish = onBatchFinish
        self.currBatch = self.totalBatches = 0
        self.currMacroBatch = self.totalMacroBatches = 0

    def _batches(self, n):
        """The batch starts over n samples, counting currBatch/totalBatches as they are handed out."""
        starts = range(0, n, self.batchsize)
        self.totalBatches, self.currBatch = len(starts), 0
        return starts

    def _batchDone(self):
        if self.onBatchFinish is not None:
            self.onBatchFinish(self)

    def _macroBatches(self, n, macroBatchSize):
        if isinstance(macroBatchSize, bool) or not isinstance(macroBatchSize, (int, np.integer)) \
                or macroBatchSize < 1:
            raise ValueError("%s: macroBatchSize must be >= 1, got %r" % (type(self).__name__, macroBatchSize))
        self.totalMacroBatches, self.currMacroBatch = -(-n // macroBatchSize), 0


class Trainer(Handler):
    """Minibatch training. terminateOnNaN (default True): stop at the first batch whose loss is not
    finite, before its update, with a NonFiniteLossError naming the batch and its samples. The first
    arguments are PuzzleLib's, in its order."""

    def __init__(self, net, cost, optimizer, onBatchFinish=None, batchsize=128, seed=0, terminateOnNaN=True):
        super().__init__(net, onBatchFinish, batchsize)
        if not isinstance(terminateOnNaN, bool):
            raise ValueError("Trainer: terminateOnNaN must be True or False, got %r" % (terminateOnNaN,))
        self.cost, self.optimizer = cost, optimizer
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

    def train(self, data, target, random=False):
        """One pass over backend arrays (in order; random=True: the batches in a shuffled order);
        returns the mean training error of the pass."""
        _checkPair("Trainer", data, target)
        self.net.trainMode()
        return self._train(data, target, np.arange(data.shape[0]), 0, random)

    def _train(self, data, target, sampleIds, firstBatch, random=False):
        """train() over data whose rows are samples sampleIds of the caller's data, the first batch
        counted as firstBatch (for trainFromHost's messages)."""
        self.cost.resetAccumulator()
        n = data.shape[0]
        starts = self._batches(n)
        order = self.rng.permutation(len(starts)) if random else range(len(starts))
        for i in progress(order, len(starts), "train"):
            start = starts[i]
            stop = min(start + self.batchsize, n)
            self.currBatch += 1
            self._step(data[start:stop], target[start:stop], firstBatch + self.currBatch - 1,
                       sampleIds[start:stop])
            self._batchDone()
        return self.cost.getMeanError()

    def trainFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None, random=True):
        """One pass over host data, its samples shuffled (random=False: in order); returns the mean
        training error of the pass."""
        _checkPair("Trainer", data, target)
        self._macroBatches(len(data), macroBatchSize)
        self.net.trainMode()
        order = self.rng.permutation(len(data)) if random else np.arange(len(data))
        total, count, batches = 0.0, 0, 0
        for x, y, idx in _hostBatches(data, target, macroBatchSize, order):
            self.currMacroBatch += 1
            total += self._train(x, y, idx, batches) * x.shape[0]
            count += x.shape[0]
            batches += self.totalBatches
            if onMacroBatchFinish is not None:
                onMacroBatchFinish(self)
        return total / count


class Validator(Handler):
    """Mean validation error over a dataset (the error rate for CrossEntropy), in eval mode."""

    def __init__(self, net, cost, onBatchFinish=None, batchsize=128):
        super().__init__(net, onBatchFinish, batchsize)
        self.cost = cost
        self.error = 0.0

    def validate(self, data, target):
        _checkPair("Validator", data, target)
        self.net.evalMode()
        self.cost.resetAccumulator()
        for start in self._batches(data.shape[0]):
            self.currBatch += 1
            self.net(data[start:start + self.batchsize])
            self.cost.validate(self.net.data, target[start:start + self.batchsize])
            self._batchDone()
        self.error = self.cost.getMeanError()
        return self.error

    def validateFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None):
        _checkPair("Validator", data, target)
        self._macroBatches(len(data), macroBatchSize)
        total = 0.0
        for x, y, _ in _hostBatches(data, target, macroBatchSize, np.arange(len(data))):
            self.currMacroBatch += 1
            total += self.validate(x, y) * x.shape[0]
            if onMacroBatchFinish is not None:
                onMacroBatchFinish(self)
        self.error = total / len(data)
        return self.error


class Calculator(Handler):
    """The net's outputs over a dataset, gathered on the host, in eval mode."""

    def calc(self, data):
        self.net.evalMode()
        out = []
        for start in self._batches(data.shape[0]):
            self.currBatch += 1
            out.append(self.net(data[start:start + self.batchsize]).get())
            self._batchDone()
        return np.concatenate(out)

    def calcFromHost(self, data, macroBatchSize=10000, onMacroBatchFinish=None):
        self._macroBatches(len(data), macroBatchSize)
        out = []
        for start in range(0, len(data), macroBatchSize):
            self.currMacroBatch += 1
            out.append(self.calc(gpuarray.to_gpu(np.asarray(data[start:start + macroBatchSize]))))
            if onMacroBatchFinish is not None:
                onMacroBatchFinish(self)
        return np.concatenate(out)
