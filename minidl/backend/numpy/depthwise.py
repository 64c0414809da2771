"""Depthwise 2-D convolution on the NumPy backend: a direct path.

No im2col and no loop over channels in Python. With numba (see accel.py)
each (image, channel) plane is convolved directly while it sits in cache;
without it each of the kh*kw kernel taps is one vectorised multiply-add over
the whole (N, C, M, Ho, Wo) tensor, reading the strided tap view of the
padded input. Weight layout (C*M, 1, kh, kw), output channel c*M + m from
input channel c (channel multiplier M).
"""

import numpy as np

from minidl.backend.numpy import accel, depthwiseflat
from minidl.backend.numpy.array import host, new
from minidl.backend.numpy.conv import (
    accBiasGrad, addBias, dense, flatOrEmpty, outSize, padded, tapRangeArray, tapSlice, unpadded,
)


def _geometry(inshape, W):
    c = inshape[1]
    m = W.shape[0] // c
    kh, kw = W.shape[2:]
    return c, m, kh, kw


def _hyper(stride, pad, dilation):
    return stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1]


def _flatArgs(inshape, outsize, W, stride, pad, dilation):
    """The flat kernels' trailing arguments: the taps' valid ranges, padding, dilation, chunks."""
    valid = tapRangeArray(tuple(inshape[2:]), tuple(outsize), tuple(W.shape[2:]), tuple(stride), tuple(pad),
                          tuple(dilation))
    return valid, pad[0], pad[1], dilation[0], dilation[1], accel.parallelChunks()


def depthwiseConv2d(x, W, b, stride, pad, dilation):
    n = x.shape[0]
    c, m, kh, kw = _geometry(x.shape, W)
    ho, wo = outSize(x.shape, (kh, kw), stride, pad, dilation)
    if depthwiseflat.applies(x.shape, W, stride, pad, dilation):
        y = new((n, c, ho, wo))
        depthwiseflat.flatTaps(dense(x), dense(W), flatOrEmpty(b), y, False,
                               *_flatArgs(x.shape, (ho, wo), W, stride, pad, dilation))
        return host(y)
    if accel.enabled:
        y = new((n, c * m, ho, wo))
        accel.depthwiseForward(dense(x), dense(W), flatOrEmpty(b), y, *_hyper(stride, pad, dilation),
                               accel.parallelChunks())
        return host(y)
    xp = padded(x, pad)
    w = np.asarray(W).reshape(c, m, kh, kw)
    y = np.zeros((n, c, m, ho, wo), dtype=np.float32)
    tmp = np.empty_like(y)
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, (ho, wo))
            xs = xp[:, :, None, sy, sx]                           # (N, C, 1, Ho, Wo)
            np.multiply(xs, w[:, :, i, j, None, None], out=tmp)   # broadcast over M
            y += tmp
    y = y.reshape(n, c * m, ho, wo)
    addBias(y, b)
    return host(y)


def depthwiseConv2dBackwardData(dy, W, inshape, stride, pad, dilation):
    n, _, h, wd = inshape
    c, m, kh, kw = _geometry(inshape, W)
    ho, wo = dy.shape[2:]
    if depthwiseflat.applies(inshape, W, stride, pad, dilation):
        dx = new(tuple(inshape))
        if tuple(stride) == (1, 1):
            depthwiseflat.flatTaps(dense(dy), dense(W), flatOrEmpty(None), dx, True,
                                   *_flatArgs(inshape, (ho, wo), W, stride, pad, dilation))
        else:   # dx stands in for x, which only the weight gradient reads
            depthwiseflat.flatBackward(dx, dense(dy), dense(W), dx, np.asarray(W), flatOrEmpty(None), True, False,
                                       *_flatArgs(inshape, (ho, wo), W, stride, pad, dilation))
        return host(dx)
    if accel.enabled:
        dx = new(tuple(inshape))
        accel.depthwiseBackwardData(dense(dy), dense(W), dx, *_hyper(stride, pad, dilation), accel.parallelChunks())
        return host(dx)
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
    return host(unpadded(dxp, pad, inshape))


def depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation):
    n = x.shape[0]
    c, m, kh, kw = _geometry(x.shape, wgrad)
    ho, wo = dy.shape[2:]
    if depthwiseflat.applies(x.shape, wgrad, stride, pad, dilation):
        # no input gradient wanted: x stands in for dx, which is never written
        depthwiseflat.flatBackward(dense(x), dense(dy), np.asarray(wgrad), dense(x), np.asarray(wgrad),
                                   flatOrEmpty(bgrad), False, True, *_flatArgs(x.shape, (ho, wo), wgrad, stride, pad,
                                                                               dilation))
        return
    if accel.enabled:
        accel.depthwiseBackwardParams(dense(x), dense(dy), np.asarray(wgrad), flatOrEmpty(bgrad),
                                      *_hyper(stride, pad, dilation))
        return
    xp = padded(x, pad)
    dy5 = np.asarray(dy).reshape(n, c, m, ho, wo)
    dw = np.asarray(wgrad).reshape(c, m, kh, kw)   # a view: accumulate straight into wgrad
    for i in range(kh):
        for j in range(kw):
            sy, sx = tapSlice(i, j, stride, dilation, (ho, wo))
            dw[:, :, i, j] += np.einsum("ncmyx,ncyx->cm", dy5, xp[:, :, sy, sx])
    accBiasGrad(bgrad, dy)


def depthwiseConv2dBackward(x, dy, W, wgrad, bgrad, stride, pad, dilation):
    c, m, kh, kw = _geometry(x.shape, W)
    # "same" padding lets one gather of dy serve both passes (accel.depthwiseBackward)
    same = (kh - 1) * dilation[0] == 2 * pad[0] and (kw - 1) * dilation[1] == 2 * pad[1]
    if depthwiseflat.applies(x.shape, W, stride, pad, dilation):
        dx = new(tuple(x.shape))
        depthwiseflat.flatBackward(dense(x), dense(dy), dense(W), dx, np.asarray(wgrad), flatOrEmpty(bgrad), True,
                                   True, *_flatArgs(x.shape, dy.shape[2:], W, stride, pad, dilation))
        return host(dx)
    if accel.enabled and same:
        dx = new(tuple(x.shape))
        accel.depthwiseBackward(dense(x), dense(dy), dense(W), dx, np.asarray(wgrad), flatOrEmpty(bgrad),
                                *_hyper(stride, pad, dilation))
        return host(dx)
    dx = depthwiseConv2dBackwardData(dy, W, x.shape, stride, pad, dilation)
    depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation)
    return dx
