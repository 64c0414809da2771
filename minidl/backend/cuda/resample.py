"""Upsampling and padding on the CUDA backend (kernels/resample.cu): each op one launch."""

import numpy as np

from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import f32, function, i32, i64, launch, planes, ptr
from minidl.shapes import pad2dOutShape, upsample2dOutShape

_UPSAMPLE = {"nearest": "upsampleNearest", "bilinear": "upsampleBilinear"}
_PAD_MODES = {"constant": 0, "reflect": 1, "replicate": 2}      # PAD_* in resample.cu


def _planes(shape):
    """(P = N*C, H, W) kernel arguments of an (N, C, H, W) shape."""
    n, c, _ = planes(shape)
    return i64(n * c), i32(shape[2]), i32(shape[3])


def upsample2d(x, scale, mode):
    y = empty(upsample2dOutShape(x.shape, scale), np.float32)
    launch(function("resample.cu", _UPSAMPLE[mode]), y.size, ptr(x), ptr(y), *_planes(x.shape), i32(scale[0]),
           i32(scale[1]))
    return y


def upsample2dBackward(dy, inshape, scale, mode):
    dx = empty(tuple(inshape), np.float32)
    launch(function("resample.cu", _UPSAMPLE[mode] + "Backward"), dx.size, ptr(dy), ptr(dx), *_planes(inshape),
           i32(scale[0]), i32(scale[1]))
    return dx


def pad2d(x, pad, mode, value):
    y = empty(pad2dOutShape(x.shape, pad), np.float32)
    launch(function("resample.cu", "pad2d"), y.size, ptr(x), ptr(y), *_planes(x.shape), *[i32(p) for p in pad],
           i32(_PAD_MODES[mode]), f32(value))
    return y


def pad2dBackward(dy, inshape, pad, mode):
    dx = empty(tuple(inshape), np.float32)
    launch(function("resample.cu", "pad2dBackward"), dx.size, ptr(dy), ptr(dx), *_planes(inshape),
           *[i32(p) for p in pad], i32(_PAD_MODES[mode]))
    return dx
