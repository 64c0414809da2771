"""Depthwise convolution on the CUDA backend: direct kernels compiled per
(kernel size, stride, dilation, multiplier); the weight reduction runs one
block per output channel with no atomics, through a shared buffer of fixed
size (a few taps at a time), so any kernel size builds."""

import numpy as np

from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import function, i32, launch, launchBlocks, ptr
from minidl.shapes import windowOutSize2d

_PARAM_BLOCK = 128   # threads per channel in the weight reduction: a power of two (the kernel's tree sum)


def _kernel(name, W, channels, stride, dilation):
    kh, kw = W.shape[2:]
    return function("depthwise.cu", name, KH=kh, KW=kw, SH=stride[0], SW=stride[1], DH=dilation[0],
                    DW=dilation[1], M=W.shape[0] // channels, PARAM_BLOCK=_PARAM_BLOCK)


def depthwiseConv2d(x, W, b, stride, pad, dilation):
    n, c, h, w = x.shape
    ho, wo = windowOutSize2d(x.shape, W.shape[2:], stride, pad, dilation)
    y = empty((n, W.shape[0], ho, wo), np.float32)
    launch(_kernel("depthwiseForward", W, c, stride, dilation), y.size, ptr(x), ptr(W), ptr(b), ptr(y), i32(n),
           i32(c), i32(h), i32(w), i32(pad[0]), i32(pad[1]), i32(ho), i32(wo), i32(b is not None))
    return y


def depthwiseConv2dBackwardData(dy, W, inshape, stride, pad, dilation):
    n, c, h, w = inshape
    ho, wo = dy.shape[2:]
    dx = empty(tuple(inshape), np.float32)
    launch(_kernel("depthwiseBackwardData", W, c, stride, dilation), dx.size, ptr(dy), ptr(W), ptr(dx), i32(n),
           i32(c), i32(h), i32(w), i32(pad[0]), i32(pad[1]), i32(ho), i32(wo))
    return dx


def depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation):
    n, c, h, w = x.shape
    ho, wo = dy.shape[2:]
    launchBlocks(_kernel("depthwiseBackwardParams", wgrad, c, stride, dilation), wgrad.shape[0], _PARAM_BLOCK,
                 ptr(x), ptr(dy), ptr(wgrad), ptr(bgrad), i32(n), i32(c), i32(h), i32(w), i32(pad[0]), i32(pad[1]),
                 i32(ho), i32(wo))


def depthwiseConv2dBackward(x, dy, W, wgrad, bgrad, stride, pad, dilation):
    # the two kernels already read dy from device memory at full bandwidth: no fused kernel here
    dx = depthwiseConv2dBackwardData(dy, W, x.shape, stride, pad, dilation)
    depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation)
    return dx
