"""Pointwise (1x1) convolution on the NumPy backend: GEMMs over the batch, no im2col.

x (N, C, H, W), W (O, C, 1, 1), b and bgrad (1, O, 1, 1) or None; stride 1, no padding, one group
(Conv2D's "pointwise" algo). The forward is W (O, C) @ x[n] (C, L) per image, the input gradient
W^T @ dy[n], the weight gradient the sum over images of dy[n] @ x[n]^T. plan.py decides per
geometry whether the images go one GEMM each (long maps) or a few per GEMM through map-major copies
(short maps: a 4x4 map gives an image's GEMM an inner dimension of 16, far from a GEMM's peak).
"""

import numpy as np

from minidl.backend.numpy.array import host, new
from minidl.backend.numpy.bias import accBiasGrad
from minidl.backend.numpy.conv.plan import pointwise as _plan
from minidl.backend.numpy.gemm import matmul, overBatch


def _mapMajor(buf, images):
    """Copy images (k', R, L) into buf (R, k, L), k' <= k; returns the (R, k'*L) matrix they fill."""
    r, k, l = buf.shape
    count = images.shape[0]
    np.copyto(buf[:, :count], images.transpose(1, 0, 2))
    return buf.reshape(r, k * l)[:, :count * l]


def batchLeft(w, x, out, chunk, bias=None):
    """out[n] = w @ x[n] (+ bias) for w (M, C), x (N, C, L), out (N, M, L), bias (M, 1) or None;
    returns out. chunk: images per GEMM, through map-major copies ((C, k*L) in, (M, k*L) out,
    cache-sized); 1: one GEMM per image, straight from the operands. The bias is added to each
    image's (or chunk's) output right after its GEMM, while it is still in cache: as a pass of its
    own over the whole output it cost a third of the forward (2.46 -> 3.24 ms for 32x128x16x16 to
    256 maps)."""
    w, x = np.asarray(w), np.asarray(x)
    n, c, l = x.shape
    m = w.shape[0]
    if chunk == 1:
        if bias is None:
            return matmul(w, x, out)

        def image(t, lo, hi):
            for i in range(lo, hi):
                np.matmul(w, x[i], out=out[i])
                out[i] += bias
        overBatch(n, image)
        return out

    def piece(t, lo, hi):
        xbuf, ybuf = np.empty((c, chunk, l), np.float32), np.empty((m, chunk, l), np.float32)
        for s in range(lo, hi, chunk):
            e = min(hi, s + chunk)
            np.matmul(w, _mapMajor(xbuf, x[s:e]), out=ybuf.reshape(m, chunk * l)[:, :(e - s) * l])
            if bias is not None:
                ybuf[:, :e - s] += bias[:, :, None]
            np.copyto(out[s:e].transpose(1, 0, 2), ybuf[:, :e - s])

    overBatch(n, piece)
    return out


def batchGram(a, b, out, chunk):
    """out (M, P) = sum over n of a[n] @ b[n]^T, for a (N, M, L) and b (N, P, L); returns out.

    The batch is contracted inside the GEMM rather than summed afterwards: each thread takes a
    share of the images and adds into its own partial sum, one GEMM per image (chunk 1, read in
    place) or per `chunk` images copied map-major ((M, k*L) and (P, k*L)), so one GEMM contracts
    over k*L at once. This avoids both an (N, M, P) intermediate summed on one core and GEMMs with
    a short inner dimension."""
    a, b = np.asarray(a), np.asarray(b)
    n, m, l = a.shape
    p = b.shape[1]

    def direct(t, lo, hi):
        acc = np.zeros((m, p), np.float32)
        tmp = np.empty((m, p), np.float32)
        for i in range(lo, hi):
            np.matmul(a[i], b[i].T, out=tmp)
            acc += tmp
        return acc

    def chunked(t, lo, hi):
        abuf, bbuf = np.empty((m, chunk, l), np.float32), np.empty((p, chunk, l), np.float32)
        acc = np.zeros((m, p), np.float32)
        tmp = np.empty((m, p), np.float32)
        for s in range(lo, hi, chunk):
            e = min(hi, s + chunk)
            np.matmul(_mapMajor(abuf, a[s:e]), _mapMajor(bbuf, b[s:e]).T, out=tmp)
            acc += tmp
        return acc

    partials = overBatch(n, direct if chunk == 1 else chunked)
    np.copyto(out, partials[0])
    for part in partials[1:]:
        out += part
    return out


def _planFor(inshape, wshape):
    """plan.pointwise for x of inshape and W of wshape (tuples of ints, as its cache wants them)."""
    return _plan(tuple(int(v) for v in inshape), tuple(int(v) for v in wshape))


def pointwiseConv2d(x, W, b):
    n, c, h, w = x.shape
    o = W.shape[0]
    plan = _planFor(x.shape, W.shape)
    bias = None if b is None else np.asarray(b, np.float32).reshape(o, 1)
    y = batchLeft(np.asarray(W).reshape(o, c), np.asarray(x).reshape(n, c, h * w), new((n, o, h * w)), plan.chunk,
                  bias)
    return host(y.reshape(n, o, h, w))


def pointwiseConv2dBackwardData(dy, W):
    n, o, h, w = dy.shape
    c = W.shape[1]
    plan = _planFor((n, c, h, w), W.shape)
    dx = batchLeft(np.asarray(W).reshape(o, c).T, np.asarray(dy).reshape(n, o, h * w), new((n, c, h * w)), plan.chunk)
    return host(dx.reshape(n, c, h, w))


def pointwiseConv2dBackwardParams(x, dy, wgrad, bgrad):
    n, c, h, w = x.shape
    o = dy.shape[1]
    plan = _planFor(x.shape, wgrad.shape)
    dy, x = np.asarray(dy).reshape(n, o, h * w), np.asarray(x).reshape(n, c, h * w)
    if plan.transposed:     # dW^T (C, O) = sum of x[n] @ dy[n]^T, copied back
        dw = batchGram(x, dy, np.empty((c, o), np.float32), plan.chunk).T
    else:                   # dW (O, C) = sum of dy[n] @ x[n]^T
        dw = batchGram(dy, x, np.empty((o, c), np.float32), plan.chunk)
    wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy.reshape(n, o, h, w))
