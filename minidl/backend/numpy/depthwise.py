"""Depthwise 2-D convolution on the NumPy backend: a direct path.

No im2col and no loop over channels in Python. With numba (see accel.py)
each (image, channel) plane is convolved directly while it sits in cache;
without it each of the kh*kw kernel taps is one vectorised multiply-add over
the whole (N, C, M, Ho, Wo) tensor, reading the strided tap view of the
padded input. Weight layout (C*M, 1, kh, kw), output channel c*M + m from
input channel c (channel multiplier M).

Non-finite values: the NumPy formulas (over the zero-padded input) are the definition. The numba
kernels compute every term of it, and some products of zeros with pixels outside a window besides
(depthwiseflat.py; the tall blocks' weight gradient runs over seams and padding columns too), which
a NaN or an infinity turns NaN. So a kernel's result is kept only when it is finite (the flat
kernels return a checksum, the weight gradients are small enough to check whole); otherwise the
call goes to a path that reads only what the formula reads.
"""

import numpy as np

from minidl.backend.numpy import accel, depthwiseflat
from minidl.backend.numpy.array import allFinite, host, new
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


def _gradScratch(wgrad, bgrad):
    """Zeroed arrays a kernel accumulates this call's weight and bias gradients into (the bias one
    empty when bgrad is None), so that they are checked before they reach wgrad and bgrad."""
    return np.zeros(wgrad.shape, np.float32), np.zeros(0 if bgrad is None else bgrad.size, np.float32)


def _addFinite(wgrad, bgrad, wpart, bpart):
    """wgrad += wpart and bgrad += bpart when both parts are finite; returns whether they were."""
    if not (allFinite(wpart) and allFinite(bpart)):
        return False
    wgrad += wpart
    if bgrad is not None:
        bgrad += bpart.reshape(bgrad.shape)
    return True


def depthwiseConv2d(x, W, b, stride, pad, dilation):
    n = x.shape[0]
    c, m, kh, kw = _geometry(x.shape, W)
    ho, wo = outSize(x.shape, (kh, kw), stride, pad, dilation)
    if depthwiseflat.applies(x.shape, W, stride, pad, dilation):
        y = new((n, c, ho, wo))
        total = depthwiseflat.flatTaps(dense(x), dense(W), flatOrEmpty(b), y, False,
                                       *_flatArgs(x.shape, (ho, wo), W, stride, pad, dilation))
        if np.isfinite(total):
            return host(y)
        # non-finite: the flat runs read pixels outside the windows too; the tall blocks read only
        # each window and zero padding (outputs over seams are never copied out)
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
            total = depthwiseflat.flatTaps(dense(dy), dense(W), flatOrEmpty(None), dx, True,
                                           *_flatArgs(inshape, (ho, wo), W, stride, pad, dilation))
        else:   # dx stands in for x, which only the weight gradient reads
            total = depthwiseflat.flatBackward(dx, dense(dy), dense(W), dx, np.asarray(W), flatOrEmpty(None), True,
                                               False, *_flatArgs(inshape, (ho, wo), W, stride, pad, dilation))
        if np.isfinite(total):
            return host(dx)
    if accel.enabled and allFinite(W):
        # the tall blocks gather dy laid on a zero grid: each pixel also reads zeros times every
        # tap, which only a non-finite kernel value turns into NaN
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
    if accel.enabled:
        wpart, bpart = _gradScratch(wgrad, bgrad)
        if depthwiseflat.applies(x.shape, wgrad, stride, pad, dilation):
            # no input gradient wanted: x stands in for dx, which is never written
            depthwiseflat.flatBackward(dense(x), dense(dy), wpart, dense(x), wpart, bpart, False, True,
                                       *_flatArgs(x.shape, (ho, wo), wgrad, stride, pad, dilation))
        else:
            accel.depthwiseBackwardParams(dense(x), dense(dy), wpart, bpart, *_hyper(stride, pad, dilation))
        if _addFinite(wgrad, bgrad, wpart, bpart):
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
    flat = depthwiseflat.applies(x.shape, W, stride, pad, dilation)
    if flat or (accel.enabled and same and allFinite(W)):
        dx = new(tuple(x.shape))
        wpart, bpart = _gradScratch(wgrad, bgrad)
        if flat:
            total = depthwiseflat.flatBackward(dense(x), dense(dy), dense(W), dx, wpart, bpart, True, True,
                                               *_flatArgs(x.shape, dy.shape[2:], W, stride, pad, dilation))
        else:   # the tall gather's dx is exact with a finite kernel (see depthwiseConv2dBackwardData)
            accel.depthwiseBackward(dense(x), dense(dy), dense(W), dx, wpart, bpart, *_hyper(stride, pad, dilation))
            total = 0.0
        if np.isfinite(total) and _addFinite(wgrad, bgrad, wpart, bpart):
            return host(dx)
        # non-finite: the separate passes below take each gradient to an exact path
    dx = depthwiseConv2dBackwardData(dy, W, x.shape, stride, pad, dilation)
    depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation)
    return dx
