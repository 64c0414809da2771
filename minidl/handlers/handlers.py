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

The training recipe, all optional: ``Trainer(..., schedule=s)`` attaches a
learning-rate schedule (minidl/optimizers/schedules.py) to the optimizer and
steps it after every update (so its steps are batches); ``clipGradNorm=maxNorm``
clips the global gradient norm between the backward pass and each update
(minidl/optimizers/clipping.py; ``trainer.gradNorm`` holds the last norm, before
clipping); ``trainFromLoader(loader)`` trains one epoch from a background
Loader (minidl/datasets/loader.py: shuffled, augmented macro-batches prepared
in a thread). Every pass adds a row to ``trainer.history``
(minidl/handlers/history.py): loss, training accuracy for CrossEntropy,
learning rate, seconds.

    loader = Loader(trainX, trainY, macroBatchSize=256, augment=RandomCrop(8, pad=1))
    steps = loader.batchesPerEpoch(32)               # the updates of one epoch at batchsize 32
    trainer = Trainer(net, CrossEntropy(), optimizer, batchsize=32, clipGradNorm=20.0,
                      schedule=WarmupCosineLR(0.02, totalSteps=epochs * steps, warmupSteps=steps))
    for epoch in range(epochs):
        loss = trainer.trainFromLoader(loader)
        error = validator.validate(testX, testY)
        trainer.history.addValidation(error, accuracy=1 - error)
    trainer.history.writeCsv("curves.csv")
"""

import math
import time

import numpy as np

from minidl.anomaly import NonFiniteLossError
from minidl.backend import gpuarray, ops
from minidl.cost import CrossEntropy
from minidl.datasets.loader import Loader
from minidl.handlers.history import History
from minidl.handlers.progress import progress
from minidl.nograd import noGrad
from minidl.optimizers import clipping
from minidl.optimizers.schedules import Schedule
from minidl.shapes import realInRange


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
    """What the three handlers share: the net (a Module), batchsize (an int >= 1, default 128),
    onBatchFinish (None or a callable f(handler), called after every batch) and PuzzleLib's counters
    currBatch, totalBatches, currMacroBatch, totalMacroBatches. Not used directly."""

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
    """Minibatch training of net on cost (a Cost) with optimizer (set up on net), in batches of
    batchsize (128), calling onBatchFinish(trainer) after each. These first arguments are
    PuzzleLib's, in its order.

    terminateOnNaN (default True): stop at the first batch whose loss (or, with clipGradNorm, whose
    gradient norm) is not finite, before its update, with a NonFiniteLossError (NonFiniteGradError)
    naming the batch and its samples; False trains on, the non-finite values reaching the weights.
    schedule: None or a Schedule, attached to the optimizer here (its rate is set now) and stepped
    after every update. clipGradNorm: None or a maximum global gradient norm (finite, > 0); the
    attribute can be changed between steps. seed: the generator of trainFromHost's shuffles.

    Example::

        >>> from minidl.cost import CrossEntropy
        >>> from minidl.modules import Linear
        >>> from minidl.optimizers import MomentumSGD, WarmupCosineLR
        >>> net = Linear(4, 3); opt = MomentumSGD(learnRate=0.1).setupOn(net)
        >>> trainer = Trainer(net, CrossEntropy(), opt, batchsize=8, clipGradNorm=5.0,
        ...                   schedule=WarmupCosineLR(0.1, totalSteps=8, warmupSteps=2))
        >>> x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
        >>> loss = trainer.trainFromHost(x, (x[:, 0] > 0).astype(np.int32))
        >>> trainer.currBatch, len(trainer.history), round(opt.learnRate, 4)    # lr(4) after 4 updates
        (4, 1, 0.075)
    """

    def __init__(self, net, cost, optimizer, onBatchFinish=None, batchsize=128, seed=0, terminateOnNaN=True,
                 schedule=None, clipGradNorm=None):
        super().__init__(net, onBatchFinish, batchsize)
        if not isinstance(terminateOnNaN, bool):
            raise ValueError("Trainer: terminateOnNaN must be True or False, got %r" % (terminateOnNaN,))
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError("Trainer: schedule must be None or a Schedule (minidl.optimizers.schedules), got %s"
                            % type(schedule).__name__)
        if clipGradNorm is not None:
            clipGradNorm = realInRange("Trainer", "clipGradNorm", clipGradNorm, 0, lowOpen=True)
        self.cost, self.optimizer = cost, optimizer
        self.terminateOnNaN = terminateOnNaN
        self.rng = np.random.default_rng(seed)
        self.schedule, self.clipGradNorm = schedule, clipGradNorm
        if schedule is not None:
            schedule.attach(optimizer)
        self.gradNorm = None            # the last step's gradient norm before clipping (with clipGradNorm)
        self.history = History()
        self.trainAccuracy = None       # the last pass's (CrossEntropy only)
        self._errors = None             # the pass's wrong-argmax count, on the device (CrossEntropy only)
        self._lastRate = None
        self._passStart = None

    def trainStep(self, data, target):
        """One optimizer step on one batch: data and target backend arrays (with terminateOnNaN, it
        reads the batch's loss back and raises NonFiniteLossError instead of updating when it is not
        finite). Clips and steps the schedule as a pass does; adds no history row. Puts the net in
        train mode first, as a pass does (a Validator between steps leaves it in eval mode)."""
        self.net.trainMode()
        self._step(data, target, None, np.arange(data.shape[0]))

    def _step(self, data, target, batch, samples):
        self.net(data)
        loss, _ = self.cost(self.net.data, target, queryError=self.terminateOnNaN)
        where = "this batch" if batch is None else "batch %d of this pass" % batch
        if self.terminateOnNaN and not math.isfinite(loss):
            raise NonFiniteLossError(
                "Trainer: the loss of %s (%s) is %s; stopped before its update, so the weights and the "
                "optimizer's state are those before it (batch norm's running statistics have taken it in). "
                "Trainer(..., terminateOnNaN=False) trains on regardless; minidl.detectAnomaly() finds the "
                "first module to produce a NaN or an infinity." % (where, _sampleText(samples), loss),
                batch, samples, loss)
        if self._errors is not None:
            labels = target if gpuarray.isArray(target) else gpuarray.to_gpu(np.asarray(target))
            ops.axpy(self._errors, ops.classificationErrors(self.net.data, labels), 1.0)
        self.optimizer.zeroGradParams()
        self.net.backward(self.cost.grad, updGrad=False)
        if self.clipGradNorm is not None:
            if hasattr(self.optimizer, "synchronize"):
                self.optimizer.synchronize()    # data-parallel (minidl.distributed): clip the averaged gradients
            self.gradNorm = clipping.clipGradNorm(self.optimizer, self.clipGradNorm)
            if self.terminateOnNaN and not math.isfinite(self.gradNorm):
                raise clipping.NonFiniteGradError(
                    "Trainer: the gradient norm of %s (%s) is %s although its loss is finite; stopped before its "
                    "update, the gradients left as they are. Trainer(..., terminateOnNaN=False) trains on "
                    "regardless; minidl.detectAnomaly() finds the first module to produce a NaN or an infinity."
                    % (where, _sampleText(samples), self.gradNorm), self.gradNorm, batch, samples)
        self._lastRate = getattr(self.optimizer, "learnRate", None)
        self.optimizer.update()
        if self.schedule is not None:
            self.schedule.step()

    def _beginPass(self):
        self.net.trainMode()
        self._passStart = time.perf_counter()
        self._errors = gpuarray.zeros((), np.float32) if isinstance(self.cost, CrossEntropy) else None

    def _endPass(self, loss, samples):
        """Record the pass in history (its mean loss given); returns loss."""
        if self._errors is not None:
            self.trainAccuracy = 1.0 - float(self._errors.get()) / samples
            self._errors = None
        self.history.addEpoch(loss, self.trainAccuracy, self._lastRate, time.perf_counter() - self._passStart)
        return loss

    def train(self, data, target, random=False):
        """One pass over backend arrays data and target (in order; random=True: the batches in a
        shuffled order); returns the mean training error of the pass and adds its history row."""
        _checkPair("Trainer", data, target)
        self._beginPass()
        return self._endPass(self._train(data, target, np.arange(data.shape[0]), 0, random), data.shape[0])

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
        """One pass over host data and target (numpy arrays or h5py datasets), its samples shuffled
        (random=False: in order) and moved to the backend macroBatchSize at a time, calling
        onMacroBatchFinish(trainer) after each; returns the mean training error of the pass and adds
        its history row."""
        _checkPair("Trainer", data, target)
        self._macroBatches(len(data), macroBatchSize)
        self._beginPass()
        order = self.rng.permutation(len(data)) if random else np.arange(len(data))
        return self._endPass(self._trainMacroBatches(_hostBatches(data, target, macroBatchSize, order),
                                                     onMacroBatchFinish), len(data))

    def trainFromLoader(self, loader, onMacroBatchFinish=None):
        """One epoch from a Loader (minidl.datasets.loader): its next epoch's macro-batches, prepared
        in its worker thread while the previous one trains, each copied to the backend and split
        into batches of this Trainer's batchsize, onMacroBatchFinish(trainer) called after each;
        returns the mean training error of the epoch and adds its history row. The
        worker is stopped before this returns or raises (an exception of the worker is raised here).
        totalMacroBatches is len(loader); a NonFiniteLossError's samples are indices into the
        loader's data."""
        if not isinstance(loader, Loader):
            raise TypeError("Trainer.trainFromLoader: expected a minidl.datasets.Loader, got %s"
                            % type(loader).__name__)
        self.totalMacroBatches, self.currMacroBatch = len(loader), 0
        self._beginPass()
        with iter(loader) as batches:
            onDevice = ((gpuarray.to_gpu(b.data), gpuarray.to_gpu(b.labels), b.indices) for b in batches)
            loss = self._trainMacroBatches(onDevice, onMacroBatchFinish)
        return self._endPass(loss, loader.numSamples)

    def _trainMacroBatches(self, macroBatches, onMacroBatchFinish):
        """Train on (data, target, sample indices) backend macro-batches; the mean error over them."""
        total, count, batches = 0.0, 0, 0
        for x, y, idx in macroBatches:
            self.currMacroBatch += 1
            total += self._train(x, y, idx, batches) * x.shape[0]
            count += x.shape[0]
            batches += self.totalBatches
            if onMacroBatchFinish is not None:
                onMacroBatchFinish(self)
        return total / count


class Validator(Handler):
    """Mean validation error of net over a dataset under cost (the error rate for CrossEntropy, the
    mean loss otherwise), in eval mode, in batches of batchsize (128), onBatchFinish(validator)
    called after each. ``error`` holds the last result. The forward passes run inside
    minidl.noGrad(): a container net keeps its own output, not its children's."""

    def __init__(self, net, cost, onBatchFinish=None, batchsize=128):
        super().__init__(net, onBatchFinish, batchsize)
        self.cost = cost
        self.error = 0.0

    def validate(self, data, target):
        """The mean validation error over backend arrays data and target."""
        _checkPair("Validator", data, target)
        self.net.evalMode()
        self.cost.resetAccumulator()
        for start in self._batches(data.shape[0]):
            self.currBatch += 1
            with noGrad():
                self.net(data[start:start + self.batchsize])
            self.cost.validate(self.net.data, target[start:start + self.batchsize])
            self._batchDone()
        self.error = self.cost.getMeanError()
        return self.error

    def validateFromHost(self, data, target, macroBatchSize=10000, onMacroBatchFinish=None):
        """The mean validation error over host data and target, moved to the backend macroBatchSize
        samples at a time, onMacroBatchFinish(validator) called after each."""
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
    """The outputs of net over a dataset, gathered on the host, in eval mode, in batches of batchsize
    (128), onBatchFinish(calculator) called after each. The forward passes run inside
    minidl.noGrad(), as Validator's."""

    def calc(self, data):
        """net's outputs for backend array data, concatenated into one host array."""
        self.net.evalMode()
        out = []
        for start in self._batches(data.shape[0]):
            self.currBatch += 1
            with noGrad():
                out.append(self.net(data[start:start + self.batchsize]).get())
            self._batchDone()
        return np.concatenate(out)

    def calcFromHost(self, data, macroBatchSize=10000, onMacroBatchFinish=None):
        """net's outputs for host data, moved to the backend macroBatchSize samples at a time
        (onMacroBatchFinish(calculator) after each), as one host array."""
        self._macroBatches(len(data), macroBatchSize)
        out = []
        for start in range(0, len(data), macroBatchSize):
            self.currMacroBatch += 1
            out.append(self.calc(gpuarray.to_gpu(np.asarray(data[start:start + macroBatchSize]))))
            if onMacroBatchFinish is not None:
                onMacroBatchFinish(self)
        return np.concatenate(out)
