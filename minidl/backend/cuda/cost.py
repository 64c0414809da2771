"""Losses on the CUDA backend. Kernels write each row's (or element's) share of
the batch mean; pycuda's device reduction sums it into a 0-d array, so no
value reaches the host until asked for."""

import numpy as np
import pycuda.gpuarray as pga

from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import f32, function, i32, i64, launch, ptr


def crossEntropy(scores, labels):
    n, c = scores.shape
    grad, part = empty(scores.shape, np.float32), empty((n,), np.float32)
    launch(function("softmax.cu", "crossEntropy"), n, ptr(scores), ptr(labels), ptr(grad), ptr(part), i32(n), i32(c))
    return pga.sum(part), grad


def classificationErrors(scores, labels):
    n, c = scores.shape
    part = empty((n,), np.float32)
    launch(function("softmax.cu", "classificationErrors"), n, ptr(scores), ptr(labels), ptr(part), i32(n), i32(c))
    return pga.sum(part)


def labelRange(labels):
    return None     # no check: reading the range back would force a host sync every step


def _elementLoss(pred, target, kind):
    grad, part = empty(pred.shape, np.float32), empty(pred.shape, np.float32)
    launch(function("softmax.cu", "elementLoss"), pred.size, ptr(pred), ptr(target), ptr(grad), ptr(part),
           i64(pred.size), f32(1.0 / pred.shape[0]), i32(kind))
    return pga.sum(part), grad


def mse(pred, target):
    return _elementLoss(pred, target, 0)


def bce(scores, target):
    return _elementLoss(scores, target, 1)


def smoothL1(pred, target):
    return _elementLoss(pred, target, 2)
