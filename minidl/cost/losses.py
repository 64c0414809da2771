"""The losses: CrossEntropy, MSE, BCE, SmoothL1. Each is a mean over the batch
of a per-sample sum; grads are the true gradients of that mean."""

import numpy as np

from minidl.backend import ops
from minidl.cost.cost import Cost


class CrossEntropy(Cost):
    """Softmax cross-entropy on raw scores (N, C) with int32 labels (N,);
    the softmax is fused and shifted by the row max, so large logits are safe.
    ``validate`` returns the error rate (fraction of wrong argmaxes).
    Per-pixel (N, C, H, W) scores are not supported. maxlabels (None: C):
    labels must be below it (checked on the NumPy backend).

    Example::

        >>> pred = gpuarray.zeros((4, 10))
        >>> error, grad = CrossEntropy()(pred, np.array([1, 2, 3, 4], np.int32))
        >>> round(error, 4), grad.shape        # log(10) for uniform scores
        (2.3026, (4, 10))
    """

    targetDtype = np.int32

    def __init__(self, maxlabels=None):
        super().__init__()
        self.maxlabels = maxlabels

    def checkInputs(self, pred, target):
        if pred.dtype != np.float32:
            raise self.inputError("expected scores of dtype float32, got %s" % pred.dtype)
        if len(pred.shape) != 2:
            raise self.inputError("expected scores of shape (N, C), got %s" % (tuple(pred.shape),))
        if target.dtype != np.int32:
            raise self.inputError("expected int32 labels, got %s" % target.dtype)
        if tuple(target.shape) != (pred.shape[0],):
            raise self.inputError("expected labels of shape (%d,), got %s" % (pred.shape[0], tuple(target.shape)))
        limit = pred.shape[1] if self.maxlabels is None else min(self.maxlabels, pred.shape[1])
        found = ops.labelRange(target)    # None on the CUDA backend: a check there would force a host sync
        if found is not None and (found[0] < 0 or found[1] >= limit):
            raise self.inputError("expected labels in [0, %d), got values in [%d, %d]" % (limit, *found))

    def calcLoss(self, pred, target):
        return ops.crossEntropy(pred, target)

    def calcValError(self, pred, target):
        return ops.classificationErrors(pred, target), 1   # a count of wrong rows


class MSE(Cost):
    """loss = sum((pred - target)^2) / (2N); grad = (pred - target) / N. float32 target of pred's shape.

    Example::

        >>> error, grad = MSE()(gpuarray.zeros((2, 3)), np.ones((2, 3), np.float32))
        >>> error, grad.get()[0]
        (1.5, array([-0.5, -0.5, -0.5], dtype=float32))
    """

    def calcLoss(self, pred, target):
        return ops.mse(pred, target)


class BCE(Cost):
    """Binary cross-entropy on raw scores (sigmoid fused and stable); targets in [0, 1]
    of pred's shape: loss = sum(softplus(s) - t*s) / N.

    Example::

        >>> error, grad = BCE()(gpuarray.zeros((2, 3)), np.ones((2, 3), np.float32))
        >>> round(error, 4), grad.get()[0]       # 3 * log(2); (sigmoid(s) - t) / N
        (2.0794, array([-0.25, -0.25, -0.25], dtype=float32))
    """

    def calcLoss(self, pred, target):
        return ops.bce(pred, target)


class SmoothL1(Cost):
    """Huber loss with beta 1: sum(0.5 d^2 if |d| < 1 else |d| - 0.5) / N, d = pred - target; float32
    target of pred's shape.

    Example::

        >>> error, grad = SmoothL1()(gpuarray.zeros((2, 3)), np.full((2, 3), 0.5, np.float32))
        >>> error, grad.get()[0]
        (0.375, array([-0.25, -0.25, -0.25], dtype=float32))
    """

    def calcLoss(self, pred, target):
        return ops.smoothL1(pred, target)
