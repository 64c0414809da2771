"""Max and average pooling on the CUDA backend."""

import numpy as np

from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import function, i32, launch, ptr
from minidl.shapes import windowOutSize2d


def _kernelArgs(inshape, size, stride, pad):
    n, c, h, w = inshape
    ho, wo = windowOutSize2d(inshape, size, stride, pad, (1, 1))
    return [i32(v) for v in (n, c, h, w, size[0], size[1], stride[0], stride[1], pad[0], pad[1], ho, wo)], ho, wo


def maxPool2d(x, size, stride, pad):
    args, ho, wo = _kernelArgs(x.shape, size, stride, pad)
    y = empty((x.shape[0], x.shape[1], ho, wo), np.float32)
    indices = empty(y.shape, np.int32)
    launch(function("pool.cu", "maxPoolForward"), y.size, ptr(x), ptr(y), ptr(indices), *args)
    return y, indices


def maxPool2dBackward(dy, indices, inshape, size, stride, pad):
    args, _, _ = _kernelArgs(inshape, size, stride, pad)
    dx = empty(tuple(inshape), np.float32)
    launch(function("pool.cu", "maxPoolBackward"), dx.size, ptr(dy), ptr(indices), ptr(dx), *args)
    return dx


def avgPool2d(x, size, stride, pad, includePad):
    args, ho, wo = _kernelArgs(x.shape, size, stride, pad)
    y = empty((x.shape[0], x.shape[1], ho, wo), np.float32)
    launch(function("pool.cu", "avgPoolForward"), y.size, ptr(x), ptr(y), *args, i32(bool(includePad)))
    return y


def avgPool2dBackward(dy, inshape, size, stride, pad, includePad):
    args, _, _ = _kernelArgs(inshape, size, stride, pad)
    dx = empty(tuple(inshape), np.float32)
    launch(function("pool.cu", "avgPoolBackward"), dx.size, ptr(dy), ptr(dx), *args, i32(bool(includePad)))
    return dx
