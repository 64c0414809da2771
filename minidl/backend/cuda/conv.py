"""General and pointwise convolution on the CUDA backend.

General: im2col kernel into a (N, C*kh*kw, L) workspace, then per group one
strided-batched sgemm over the batch; backward-data is the transposed GEMM and
a gather col2im; backward-params accumulates dy @ cols^T with beta = 1.
Pointwise: one strided-batched sgemm straight on NCHW (W shared, stride 0),
no copies.
"""

import numpy as np

from minidl.backend.cuda import cublas
from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import BLOCK, f32, function, i32, launch, launchBlocks, planes, ptr
from minidl.shapes import windowOutSize2d


def _sizes(inshape, wshape, stride, pad, dilation):
    n, c, h, w = inshape
    o, cg, kh, kw = wshape
    ho, wo = windowOutSize2d(inshape, wshape[2:], stride, pad, dilation)
    return n, c, h, w, o, cg, kh, kw, ho, wo


def _im2col(x, kh, kw, stride, pad, dilation, ho, wo):
    n, c, h, w = x.shape
    cols = empty((n, c * kh * kw, ho * wo), np.float32)
    launch(function("conv.cu", "im2col"), cols.size, ptr(x), ptr(cols), i32(n), i32(c), i32(h), i32(w), i32(kh),
           i32(kw), i32(stride[0]), i32(stride[1]), i32(pad[0]), i32(pad[1]), i32(dilation[0]), i32(dilation[1]),
           i32(ho), i32(wo))
    return cols


def addChannelBias(y, b):
    if b is not None:
        _, c, l = planes(y.shape)
        launch(function("elementwise.cu", "addChannelBias"), y.size, ptr(y), ptr(b), i32(c), i32(l), np.int64(y.size))


def accChannelSum(out, dy):
    """out (C elements) += sum of dy (N, C, ...) over everything but the channel axis."""
    if out is not None:
        n, c, l = planes(dy.shape)
        launchBlocks(function("elementwise.cu", "channelSum"), c, BLOCK, ptr(dy), ptr(out), i32(n), i32(c), i32(l),
                     f32(1.0))


def conv2d(x, W, b, stride, pad, dilation, groups):
    n, c, h, w, o, cg, kh, kw, ho, wo = _sizes(x.shape, W.shape, stride, pad, dilation)
    og, k, l = o // groups, cg * kh * kw, ho * wo
    cols = _im2col(x, kh, kw, stride, pad, dilation, ho, wo)          # (N, G, K, L)
    y = empty((n, o, ho, wo), np.float32)
    for g in range(groups):
        # y[n, g] (O/G x L) = W[g] (O/G x K) @ cols[n, g] (K x L), batched over n
        cublas.gemmStridedBatched(False, False, og, l, k, 1.0, ptr(W, g * og * k), k, 0, ptr(cols, g * k * l), l,
                                  c * kh * kw * l, 0.0, ptr(y, g * og * l), l, o * l, n)
    addChannelBias(y, b)
    return y


def conv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    n, c, h, w, o, cg, kh, kw, ho, wo = _sizes(inshape, W.shape, stride, pad, dilation)
    og, k, l = o // groups, cg * kh * kw, ho * wo
    dcols = empty((n, c * kh * kw, l), np.float32)
    for g in range(groups):
        # dcols[n, g] (K x L) = W[g]^T (K x O/G) @ dy[n, g] (O/G x L)
        cublas.gemmStridedBatched(True, False, k, l, og, 1.0, ptr(W, g * og * k), k, 0, ptr(dy, g * og * l), l,
                                  o * l, 0.0, ptr(dcols, g * k * l), l, c * kh * kw * l, n)
    dx = empty(tuple(inshape), np.float32)
    launch(function("conv.cu", "col2im"), dx.size, ptr(dcols), ptr(dx), i32(n), i32(c), i32(h), i32(w), i32(kh),
           i32(kw), i32(stride[0]), i32(stride[1]), i32(pad[0]), i32(pad[1]), i32(dilation[0]), i32(dilation[1]),
           i32(ho), i32(wo))
    return dx


def conv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    n, c, h, w, o, cg, kh, kw, ho, wo = _sizes(x.shape, wgrad.shape, stride, pad, dilation)
    og, k, l = o // groups, cg * kh * kw, ho * wo
    cols = _im2col(x, kh, kw, stride, pad, dilation, ho, wo)
    for g in range(groups):
        for i in range(n):
            # wgrad[g] (O/G x K) += dy[i, g] (O/G x L) @ cols[i, g]^T (L x K)
            cublas.gemm(False, True, og, k, l, 1.0, ptr(dy, (i * o + g * og) * l), l,
                        ptr(cols, (i * c * kh * kw + g * k) * l), l, 1.0, ptr(wgrad, g * og * k), k)
    accChannelSum(bgrad, dy)


def pointwiseConv2d(x, W, b):
    n, c, h, w = x.shape
    o, l = W.shape[0], h * w
    y = empty((n, o, h, w), np.float32)
    # y[i] (O x L) = W (O x C) @ x[i] (C x L), W shared (stride 0)
    cublas.gemmStridedBatched(False, False, o, l, c, 1.0, ptr(W), c, 0, ptr(x), l, c * l, 0.0, ptr(y), l, o * l, n)
    addChannelBias(y, b)
    return y


def pointwiseConv2dBackwardData(dy, W):
    n, o, h, w = dy.shape
    c, l = W.shape[1], h * w
    dx = empty((n, c, h, w), np.float32)
    cublas.gemmStridedBatched(True, False, c, l, o, 1.0, ptr(W), c, 0, ptr(dy), l, o * l, 0.0, ptr(dx), l, c * l, n)
    return dx


def pointwiseConv2dBackwardParams(x, dy, wgrad, bgrad):
    n, c, h, w = x.shape
    o, l = dy.shape[1], h * w
    for i in range(n):
        # wgrad (O x C) += dy[i] (O x L) @ x[i]^T (L x C)
        cublas.gemm(False, True, o, c, l, 1.0, ptr(dy, i * o * l), l, ptr(x, i * c * l), l, 1.0, ptr(wgrad), c)
    accChannelSum(bgrad, dy)
