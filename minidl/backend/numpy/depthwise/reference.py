"""Depthwise convolution in whole-array NumPy: the definition the kernels are held to, and the
path without numba or for values the kernels cannot take exactly (see __init__.py).

Each of the kh*kw kernel taps is one vectorised multiply-add over the whole (N, C, M, Ho, Wo)
tensor, reading the strided tap view of the zero-padded input. Weights (C*M, 1, kh, kw), output
channel c*M + m from input channel c (channel multiplier M).
"""

import numpy as np

from minidl.backend.numpy.bias import accBiasGrad, addBias
from minidl.backend.numpy.windows import padded, tapSlice, unpadded


def _split(inshape, wshape):
    """(C, M, kh, kw): input channels, channel multiplier and kernel size."""
    c = inshape[1]
    return c, wshape[0] // c, wshape[2], wshape[3]


def forward(x, W, b, stride, pad, dilation, outsize):
    n = x.shape[0]
    c, m, kh, kw = _split(x.shape, W.shape)
    xp = padded(x, pad)
    w = np.asarray(W).reshape(c, m, kh, kw)
    y = np.zeros((n, c, m) + tuple(outsize), dtype=np.float32)
    tmp = np.empty_like(y)
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, outsize)
            xs = xp[:, :, None, sy, sx]                           # (N, C, 1, Ho, Wo)
            np.multiply(xs, w[:, :, i, j, None, None], out=tmp)   # broadcast over M
            y += tmp
    y = y.reshape((n, c * m) + tuple(outsize))
    addBias(y, b)
    return y


def backwardData(dy, W, inshape, stride, pad, dilation):
    n, _, h, wd = inshape
    c, m, kh, kw = _split(inshape, W.shape)
    ho, wo = dy.shape[2:]
    w = np.asarray(W).reshape(c, m, kh, kw)
    dy5 = np.asarray(dy).reshape(n, c, m, ho, wo)
    dxp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, (ho, wo))
            if m == 1:
                dxp[:, :, sy, sx] += dy5[:, :, 0] * w[:, 0, i, j, None, None]
            else:
                dxp[:, :, sy, sx] += np.einsum("ncmyx,cm->ncyx", dy5, w[:, :, i, j])
    return unpadded(dxp, pad, inshape)


def backwardParams(x, dy, wgrad, bgrad, stride, pad, dilation):
    """Accumulates into wgrad (C*M, 1, kh, kw) and bgrad (1, C*M, 1, 1) or None."""
    n = x.shape[0]
    c, m, kh, kw = _split(x.shape, wgrad.shape)
    ho, wo = dy.shape[2:]
    xp = padded(x, pad)
    dy5 = np.asarray(dy).reshape(n, c, m, ho, wo)
    dw = np.asarray(wgrad).reshape(c, m, kh, kw)   # a view: accumulate straight into wgrad
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, (ho, wo))
            dw[:, :, i, j] += np.einsum("ncmyx,ncyx->cm", dy5, xp[:, :, sy, sx])
    accBiasGrad(bgrad, dy)
