"""Transposed 2-D convolution on the CUDA backend, from the convolution's kernels and GEMMs.

With W (C, O/G, kh, kw), the transposed conv from x (N, C, H, W) to y (N, O, Ho, Wo) is the
backward-data pass of the conv from y's shape to x's (see conv.py), with K = O/G*kh*kw, L = H*W:
- forward: cols[n, g] (K x L) = W[g]^T (K x C/G) @ x[n, g] (C/G x L), one strided-batched sgemm
  per group, then conv.cu's col2im gathers the columns into y; then the bias;
- backward-data: conv.cu's im2col of dy at x's size, then dx[n, g] = W[g] (C/G x K) @ cols[n, g];
- backward-params: wgrad[g] (C/G x K) += x[i, g] (C/G x L) @ cols[i, g]^T (L x K); bgrad sums dy.
The two kernels take both images' sizes as arguments, so postpad >= stride (allowed where dilation
> stride: the conv from (Ho, Wo) alone would compute more than H x W outputs) needs nothing special.
"""

import numpy as np

from minidl.backend.cuda import cublas
from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import function, i32, launch, ptr
from minidl.backend.cuda.conv import _im2col, accChannelSum, addChannelBias
from minidl.shapes import deconv2dOutShape


def _sizes(inshape, wshape, groups):
    """(N, C, H, W, C/G, O/G, O, kh, kw, K, L) of a transposed conv from inshape with weights wshape."""
    n, c, h, w = inshape
    _, og, kh, kw = wshape
    return n, c, h, w, c // groups, og, og * groups, kh, kw, og * kh * kw, h * w


def deconv2d(x, W, b, stride, pad, dilation, postpad, groups):
    n, c, h, w, cg, og, o, kh, kw, k, l = _sizes(x.shape, W.shape, groups)
    _, _, ho, wo = deconv2dOutShape(x.shape, o, (kh, kw), stride, pad, dilation, postpad)
    cols = empty((n, o * kh * kw, l), np.float32)                     # (N, G, K, L)
    for g in range(groups):
        # cols[n, g] (K x L) = W[g]^T (K x C/G) @ x[n, g] (C/G x L), batched over n
        cublas.gemmStridedBatched(True, False, k, l, cg, 1.0, ptr(W, g * cg * k), k, 0, ptr(x, g * cg * l), l, c * l,
                                  0.0, ptr(cols, g * k * l), l, o * kh * kw * l, n)
    y = empty((n, o, ho, wo), np.float32)
    # col2im's "image" is y (Ho, Wo) and its "output" x's grid (H, W)
    launch(function("conv.cu", "col2im"), y.size, ptr(cols), ptr(y), i32(n), i32(o), i32(ho), i32(wo), i32(kh),
           i32(kw), i32(stride[0]), i32(stride[1]), i32(pad[0]), i32(pad[1]), i32(dilation[0]), i32(dilation[1]),
           i32(h), i32(w))
    addChannelBias(y, b)
    return y


def deconv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    n, c, h, w, cg, og, o, kh, kw, k, l = _sizes(inshape, W.shape, groups)
    cols = _im2col(dy, kh, kw, stride, pad, dilation, h, w)           # (N, G, K, L)
    dx = empty(tuple(inshape), np.float32)
    for g in range(groups):
        # dx[n, g] (C/G x L) = W[g] (C/G x K) @ cols[n, g] (K x L), batched over n
        cublas.gemmStridedBatched(False, False, cg, l, k, 1.0, ptr(W, g * cg * k), k, 0, ptr(cols, g * k * l), l,
                                  o * kh * kw * l, 0.0, ptr(dx, g * cg * l), l, c * l, n)
    return dx


def deconv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    n, c, h, w, cg, og, o, kh, kw, k, l = _sizes(x.shape, wgrad.shape, groups)
    cols = _im2col(dy, kh, kw, stride, pad, dilation, h, w)
    for g in range(groups):
        for i in range(n):
            # wgrad[g] (C/G x K) += x[i, g] (C/G x L) @ cols[i, g]^T (L x K)
            cublas.gemm(False, True, cg, k, l, 1.0, ptr(x, (i * c + g * cg) * l), l,
                        ptr(cols, (i * o * kh * kw + g * k) * l), l, 1.0, ptr(wgrad, g * cg * k), k)
    accChannelSum(bgrad, dy)
