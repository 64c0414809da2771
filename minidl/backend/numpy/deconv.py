"""Transposed 2-D convolution on the NumPy backend, through the convolution's own passes.

A transposed conv from x (N, C, H, W) to y (N, O, Ho, Wo) with W (C, O/G, kh, kw) is the
backward-data pass of the conv from y's shape to x's with the same W (conv/'s layout: C output
maps, O/G input maps per group). So:
- forward: conv2dBackwardData(x, W, y's shape) (GEMM, then col2im), plus the bias;
- backward-data: conv2d(dy, W) (im2col, then GEMM);
- backward-params: conv2dBackwardParams with input and output gradient swapped (dy the conv's
  input, x its output gradient): dW[c, o, i, j] = sum of x[n, c, iy, ix] * dy[n, o, iy*sh - ph +
  i*dh, ix*sw - pw + j*dw]; the bias gradient sums dy.
Each takes the conv's fast paths (numba im2col/col2im, Winograd) as conv/plan.py chooses them.

One geometry does not fit: postpad >= stride (PyTorch allows it where dilation > stride), where
the conv from (Ho, Wo) has more outputs than x has pixels (shapes.conformsToConv). There
backward-data drops conv2d's extra rows and columns, and forward and backward-params run the
im2col / col2im of the conv's NumPy reference path at the explicit sizes.
"""

import numpy as np

from minidl.backend.numpy.array import host, new
from minidl.backend.numpy.bias import accBiasGrad, addBias
from minidl.backend.numpy.conv import conv2d, conv2dBackwardData, conv2dBackwardParams
from minidl.backend.numpy.conv.columns import im2col
from minidl.backend.numpy.gemm import matmul
from minidl.backend.numpy.windows import tapSlice, unpadded
from minidl.shapes import conformsToConv, deconv2dOutShape


def deconv2d(x, W, b, stride, pad, dilation, postpad, groups):
    size = tuple(W.shape[2:])
    outshape = deconv2dOutShape(x.shape, W.shape[1] * groups, size, stride, pad, dilation, postpad)
    if conformsToConv(x.shape, outshape, size, stride, pad, dilation):
        y = np.asarray(conv2dBackwardData(x, W, outshape, stride, pad, dilation, groups))
    else:
        y = _scatter(np.asarray(x), np.asarray(W), outshape, stride, pad, dilation, groups)
    addBias(y, b)
    return host(y)


def _scatter(x, W, outshape, stride, pad, dilation, groups):
    """y of outshape = col2im(W^T @ x), the tap adds at x's explicit (H, W)."""
    n, c, h, w = x.shape
    o, (kh, kw) = outshape[1], W.shape[2:]
    k = o // groups * kh * kw
    wt = np.ascontiguousarray(W.reshape(groups, c // groups, k).transpose(0, 2, 1))    # (G, K, C/G)
    cols = matmul(wt, x.reshape(n, groups, c // groups, h * w), new((n, groups, k, h * w)))
    cols = cols.reshape(n, o, kh, kw, h, w)
    # tap (i, j) of x's pixel (iy, ix) lands on padded row iy*sh + i*dh <= Ho + 2*ph - 1 - postpad_h
    yp = np.zeros((n, o, outshape[2] + 2 * pad[0], outshape[3] + 2 * pad[1]), np.float32)
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, (h, w))
            yp[:, :, sy, sx] += cols[:, :, i, j]
    return unpadded(yp, pad, outshape)


def deconv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    dx = conv2d(dy, W, None, stride, pad, dilation, groups)
    if not conformsToConv(inshape, dy.shape, tuple(W.shape[2:]), stride, pad, dilation):
        # conv2d computed outputs past x's last row or column (none of them read by the forward)
        dx = host(np.ascontiguousarray(np.asarray(dx)[:, :, :inshape[2], :inshape[3]]))
    return dx


def deconv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    size = tuple(wgrad.shape[2:])
    if conformsToConv(x.shape, dy.shape, size, stride, pad, dilation):
        conv2dBackwardParams(dy, x, wgrad, None, stride, pad, dilation, groups)
    else:
        n, c, h, w = x.shape
        k = wgrad.shape[1] * size[0] * size[1]
        cols = im2col(np.asarray(dy), size, stride, pad, dilation, (h, w)).reshape(n, groups, k, h * w)
        # per image x (C/G x L) @ cols^T (L x K), summed over the batch
        dw = matmul(np.asarray(x).reshape(n, groups, c // groups, h * w), cols.transpose(0, 1, 3, 2),
                    new((n, groups, c // groups, k))).sum(axis=0)
        wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy)
