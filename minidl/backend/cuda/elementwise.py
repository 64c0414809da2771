"""Activations, dropout and softmax on the CUDA backend."""

import numpy as np

from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import f32, function, i32, i64, launch, planes, ptr

_KINDS = {"relu": 0, "clip": 1, "leakyRelu": 2, "elu": 3, "sigmoid": 4, "tanh": 5, "softPlus": 6,
          "hardSigmoid": 7, "hardSwish": 8}


def _kind(kind):
    if kind not in _KINDS:
        raise ValueError("unknown activation %r, expected one of %s" % (kind, ", ".join(_KINDS)))
    return np.int32(_KINDS[kind])


def _target(out, shape):
    """out when given and contiguous (the kernels are elementwise, so out may be an input), else new."""
    return out if out is not None and out.flags.c_contiguous else empty(shape, np.float32)


def activation(x, kind, alpha, beta, out=None):
    y = _target(out, x.shape)
    launch(function("elementwise.cu", "activationForward"), x.size, ptr(x), ptr(y), i64(x.size), _kind(kind),
           f32(alpha), f32(beta))
    return y


def activationBackward(x, y, dy, kind, alpha, beta, out=None):
    dx = _target(out, x.shape)
    launch(function("elementwise.cu", "activationBackward"), x.size, ptr(x), ptr(y), ptr(dy), ptr(dx), i64(x.size),
           _kind(kind), f32(alpha), f32(beta))
    return dx


def dropout(x, p, seed):
    y, mask = empty(x.shape, np.float32), empty(x.shape, np.float32)
    launch(function("elementwise.cu", "dropoutForward"), x.size, ptr(x), ptr(y), ptr(mask), i64(x.size), f32(p),
           np.uint32(seed & 0xFFFFFFFF))
    return y, mask


def dropoutBackward(dy, mask):
    dx = empty(dy.shape, np.float32)
    launch(function("elementwise.cu", "mul"), dy.size, ptr(dy), ptr(mask), ptr(dx), i64(dy.size))
    return dx


def softmax(x):
    n, c, l = planes(x.shape)
    y = empty(x.shape, np.float32)
    launch(function("softmax.cu", "softmaxForward"), n * l, ptr(x), ptr(y), i32(n), i32(c), i32(l))
    return y


def softmaxBackward(y, dy):
    n, c, l = planes(y.shape)
    dx = empty(y.shape, np.float32)
    launch(function("softmax.cu", "softmaxBackward"), n * l, ptr(y), ptr(dy), ptr(dx), i32(n), i32(c), i32(l))
    return dx
