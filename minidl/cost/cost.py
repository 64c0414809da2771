"""Cost base class.

``error, grad = cost(pred, target)``: error is the mean loss over the batch
(a Python float), grad the true gradient of that mean w.r.t. pred (positive
sign, as everywhere in minidl). With ``queryError=False`` the error stays on
the device (error is None) so a training step never waits for the host; the
losses still add up in an on-device accumulator read by ``getMeanError()``
(the mean over all samples since ``resetAccumulator()``).
"""

import numpy as np

from minidl.backend import gpuarray, ops
from minidl.errors import ModuleError


class Cost:
    """The base of the losses: ``error, grad = cost(pred, target, queryError=True)``. See the module
    docstring for the on-device accumulator; subclasses implement calcLoss.

    pred: float32 (N, ...) on the backend; target: pred's shape and the class's ``targetDtype``
    (float32; int32 labels (N,) for CrossEntropy), on the backend or a numpy array. error: the
    batch's mean loss, a float (None with queryError=False); grad: d(error)/d(pred), pred's shape.
    A wrong dtype or shape raises ModuleError naming the cost.
    """

    targetDtype = np.float32

    def __init__(self):
        self.accumErr = None
        self.numSamples = 0
        self.error, self.grad = None, None

    def inputError(self, detail):
        """A ModuleError naming this cost, with detail as its message; ``raise self.inputError(...)``."""
        return ModuleError(type(self).__name__, [], detail)

    def checkInputs(self, pred, target):
        """Raise inputError(...) unless pred and target have the dtypes and shapes this cost takes."""
        if pred.dtype != np.float32:
            raise self.inputError("expected pred of dtype float32, got %s" % pred.dtype)
        if target.dtype != self.targetDtype:
            raise self.inputError("expected target of dtype %s, got %s" % (np.dtype(self.targetDtype), target.dtype))
        if tuple(pred.shape) != tuple(target.shape):
            raise self.inputError("expected target of shape %s (as pred), got %s" % (tuple(pred.shape), tuple(target.shape)))

    def _accumulate(self, value, weight, count):
        """accumErr += weight * value (on the device); count samples more."""
        if self.accumErr is None:
            self.accumErr = gpuarray.zeros((), np.float32)
        ops.axpy(self.accumErr, value, float(weight))
        self.numSamples += count

    def __call__(self, pred, target, queryError=True):
        target = self._onDevice(target)
        self.checkInputs(pred, target)
        loss, self.grad = self.calcLoss(pred, target)
        self._accumulate(loss, pred.shape[0], pred.shape[0])
        self.error = float(loss.get()) if queryError else None
        return self.error, self.grad

    def validate(self, pred, target):
        """The validation error of pred against target (the mean loss; CrossEntropy gives the error
        rate), a float, accumulated too."""
        target = self._onDevice(target)
        self.checkInputs(pred, target)
        n = pred.shape[0]
        value, weight = self.calcValError(pred, target)
        self._accumulate(value, weight, n)
        return float(value.get()) * weight / n

    def calcValError(self, pred, target):
        """(0-d array value, weight) for pred against target: the batch total is weight * value.
        Default: the mean loss, weight N."""
        return self.calcLoss(pred, target)[0], pred.shape[0]

    def getMeanError(self):
        """The mean error per sample over every call since resetAccumulator() (0.0 before any); reads
        the device once."""
        if self.numSamples == 0:
            return 0.0
        return float(self.accumErr.get()) / self.numSamples

    def resetAccumulator(self):
        """Start the accumulated error and sample count again from zero."""
        self.accumErr, self.numSamples = None, 0

    @staticmethod
    def _onDevice(target):
        return target if gpuarray.isArray(target) else gpuarray.to_gpu(np.asarray(target))

    def calcLoss(self, pred, target):
        """(0-d array holding the mean loss, grad) for checked pred and target; subclasses implement it."""
        raise NotImplementedError("%s must implement calcLoss" % type(self).__name__)
