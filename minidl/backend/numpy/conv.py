"""General and pointwise 2-D convolution on the NumPy backend.

General conv is im2col + GEMM: the im2col matrix is a strided *view* of the
(padded) input, materialised once by the reshape that feeds matmul; the
backward-data pass scatters columns back with one vectorised add per kernel
tap (kh*kw adds, never a loop over pixels or channels). Groups are a batch
dimension of the GEMM. Pointwise (1x1, stride 1, pad 0, groups 1) is one
matmul over the whole batch with no im2col at all.
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minidl.backend.numpy import accel
from minidl.backend.numpy.array import host, new
from minidl.backend.numpy.gemm import batchGram, batchLeft, matmul
from minidl.shapes import windowOutSize

_EMPTY = np.empty(0, dtype=np.float32)


def dense(a):
    """A C-contiguous plain ndarray view of a (copied only when it is not contiguous)."""
    return np.ascontiguousarray(np.asarray(a))


def flatOrEmpty(a):
    """A bias or its gradient as a flat array the kernels can test for size 0 (None -> empty)."""
    return _EMPTY if a is None else np.asarray(a).reshape(-1)


def padded(x, pad, value=0.0):
    """x (N, C, H, W) padded with value by pad=(ph, pw) on each side; x itself when pad is 0."""
    ph, pw = pad
    if ph == 0 and pw == 0:
        return np.asarray(x)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def outSize(inshape, size, stride, pad, dilation):
    return (windowOutSize(inshape[2], size[0], stride[0], pad[0], dilation[0]),
            windowOutSize(inshape[3], size[1], stride[1], pad[1], dilation[1]))


def windows(xp, size, stride, dilation, outsize):
    """Strided view (N, C, kh, kw, Ho, Wo) of padded input xp: element [n, c, i, j, y, x] is
    xp[n, c, y*sh + i*dh, x*sw + j*dw]. No copy."""
    n, c = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = size, stride, dilation, outsize
    return as_strided(xp, (n, c, kh, kw, ho, wo), (sN, sC, sH * dh, sW * dw, sH * sh, sW * sw), writeable=False)


def tapSlice(i, j, stride, dilation, outsize):
    """Index of padded-input pixels that kernel tap (i, j) touches, as (H, W) slices."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, outsize
    return (slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


def unpadded(xp, pad, inshape):
    ph, pw = pad
    if ph == 0 and pw == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, ph:ph + inshape[2], pw:pw + inshape[3]])


def addBias(y, b):
    if b is not None:
        y += np.asarray(b).reshape(1, -1, *([1] * (y.ndim - 2)))


def accBiasGrad(bgrad, dy):
    if bgrad is not None:
        axes = (0,) + tuple(range(2, dy.ndim))
        bgrad += np.asarray(dy).sum(axis=axes, dtype=np.float32).reshape(bgrad.shape)


def im2col(x, size, stride, pad, dilation, outsize):
    """(N, C*kh*kw, Ho*Wo) columns of x, row (c, i, j) holding what tap (i, j) of channel c reads."""
    n, c = x.shape[:2]
    (kh, kw), (ho, wo) = size, outsize
    if accel.enabled:
        cols = new((n, c * kh * kw, ho * wo))
        accel.im2col(dense(x), cols, kh, kw, stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1], ho, wo,
                     accel.parallelChunks())
        return cols
    return windows(padded(x, pad), size, stride, dilation, outsize).reshape(n, c * kh * kw, ho * wo)  # one copy


def conv2d(x, W, b, stride, pad, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = W.shape
    ho, wo = outSize(x.shape, (kh, kw), stride, pad, dilation)
    k = cg * kh * kw
    cols = im2col(x, (kh, kw), stride, pad, dilation, (ho, wo)).reshape(n, groups, k, ho * wo)  # (N, G, K, L)
    y = matmul(np.asarray(W).reshape(groups, o // groups, k), cols, new((n, groups, o // groups, ho * wo)))
    y = y.reshape(n, o, ho, wo)
    addBias(y, b)
    return host(y)


def conv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    n, c, h, w = inshape
    o, cg, kh, kw = W.shape
    ho, wo = dy.shape[2:]
    k = cg * kh * kw
    wt = np.asarray(W).reshape(groups, o // groups, k).transpose(0, 2, 1)   # (G, K, O/G)
    dcols = matmul(wt, np.asarray(dy).reshape(n, groups, o // groups, ho * wo), new((n, groups, k, ho * wo)))
    if accel.enabled:
        dx = new(tuple(inshape))
        accel.col2im(dcols.reshape(n, c * kh * kw, ho * wo), dx, kh, kw, stride[0], stride[1], pad[0], pad[1],
                     dilation[0], dilation[1], ho, wo, accel.parallelChunks())
        return host(dx)
    dcols = dcols.reshape(n, c, kh, kw, ho, wo)
    dxp = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, (ho, wo))
            dxp[:, :, sy, sx] += dcols[:, :, i, j]
    return host(unpadded(dxp, pad, inshape))


def conv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = wgrad.shape
    ho, wo = dy.shape[2:]
    og, k, l = o // groups, cg * kh * kw, ho * wo
    cols = im2col(x, (kh, kw), stride, pad, dilation, (ho, wo)).reshape(n, groups, k, l)        # (N, G, K, L)
    # per image dy (O/G x L) @ cols^T (L x K), summed over the batch: (N, G, O/G, K) is small
    dw = matmul(np.asarray(dy).reshape(n, groups, og, l), cols.transpose(0, 1, 3, 2), new((n, groups, og, k))).sum(axis=0)
    wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy)


def pointwiseConv2d(x, W, b):
    n, c, h, w = x.shape
    o = W.shape[0]
    y = batchLeft(np.asarray(W).reshape(o, c), np.asarray(x).reshape(n, c, h * w), new((n, o, h * w))).reshape(n, o, h, w)
    addBias(y, b)
    return host(y)


def pointwiseConv2dBackwardData(dy, W):
    n, o, h, w = dy.shape
    c = W.shape[1]
    dx = batchLeft(np.asarray(W).reshape(o, c).T, np.asarray(dy).reshape(n, o, h * w), new((n, c, h * w)))
    return host(dx.reshape(n, c, h, w))


def pointwiseConv2dBackwardParams(x, dy, wgrad, bgrad):
    n, c, h, w = x.shape
    o = dy.shape[1]
    # dW (O, C) = sum over images of dy (O x L) @ x^T (L x C), the batch contracted in the GEMM
    dw = batchGram(np.asarray(dy).reshape(n, o, h * w), np.asarray(x).reshape(n, c, h * w),
                   np.empty((o, c), dtype=np.float32))
    wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy)
