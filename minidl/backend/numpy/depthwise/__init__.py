"""Depthwise 2-D convolution on the NumPy backend: the four ops of the backend contract.

x (N, C, H, W), W (C*M, 1, kh, kw) with channel multiplier M, output channel c*M + m from input
channel c; b and bgrad (1, C*M, 1, 1) or None. Each op asks plan.py which implementation to run
(flat.py, tall.py, or reference.py without numba) and follows it; ``routing.plan("depthwise", ...)``
prints that choice.

Non-finite values: the NumPy formulas (reference.py, over the zero-padded input) are the
definition. The kernels compute every term of it, and some products of zeros with pixels outside a
window besides (the flat runs' padding reads; the tall blocks' weight gradient over seams and
padding columns; the tall gather's zeros times every tap), which a NaN or an infinity turns NaN.
So a kernel's result is kept only when it is finite (the flat kernels return a checksum, the
weight gradients are small enough to check whole); otherwise the call takes the route's fallback,
which reads only what the formula reads.
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.array import allFinite, contiguous, host, new, vectorOrEmpty
from minidl.backend.numpy.depthwise import flat, reference, tall
from minidl.backend.numpy.depthwise.plan import depthwise as _plan


def _planFor(inshape, wshape, stride, pad, dilation):
    return _plan(tuple(inshape), tuple(wshape), tuple(stride), tuple(pad), tuple(dilation))


def _flatArgs(plan):
    """The flat kernels' trailing arguments: the taps' valid ranges, padding, dilation, chunks."""
    sh, sw, ph, pw, dh, dw = plan.hyper
    return plan.valid, ph, pw, dh, dw, jit.parallelChunks()


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
    plan = _planFor(x.shape, W.shape, stride, pad, dilation)
    if plan["forward"] == "numpy":
        return host(reference.forward(x, W, b, stride, pad, dilation, plan.outsize))
    y = new((x.shape[0], W.shape[0]) + plan.outsize)
    if y.size == 0:     # an empty batch, or a map too small for one output (the modules refuse the latter)
        return host(y)
    if plan["forward"] == "flat":
        total = flat.taps(contiguous(x), contiguous(W), vectorOrEmpty(b), y, False, *_flatArgs(plan))
        if np.isfinite(total):
            return host(y)
        # non-finite: the flat runs read pixels outside the windows too; the tall blocks read only
        # each window and zero padding (outputs over seams are never copied out)
    if plan["forward"] == "tall-phases":
        sh, sw, ph, pw, dh, dw = plan.hyper
        tall.forwardStride2(contiguous(x), contiguous(W), vectorOrEmpty(b), y, ph, pw, dh, dw, jit.parallelChunks())
    else:
        tall.forward(contiguous(x), contiguous(W), vectorOrEmpty(b), y, *plan.hyper, jit.parallelChunks())
    return host(y)


def depthwiseConv2dBackwardData(dy, W, inshape, stride, pad, dilation):
    plan = _planFor(inshape, W.shape, stride, pad, dilation)
    route = plan["backwardData"]
    if route == "flat":
        dx = new(tuple(inshape))
        if plan.hyper[:2] == (1, 1):
            total = flat.taps(contiguous(dy), contiguous(W), vectorOrEmpty(None), dx, True, *_flatArgs(plan))
        else:   # dx stands in for x, which only the weight gradient reads
            total = flat.backward(dx, contiguous(dy), contiguous(W), dx, np.asarray(W), vectorOrEmpty(None), True,
                                  False, *_flatArgs(plan))
        if np.isfinite(total):
            return host(dx)
        route = "tall-gather"     # the flat geometry pads within the kernel's reach
    if route != "numpy" and allFinite(W):
        # the gather lays dy on a zero grid: each pixel also reads zeros times every tap, which only
        # a non-finite kernel value turns into NaN (the scatter is exact, but keeps the same rule)
        dx = new(tuple(inshape))
        kernel = tall.backwardDataGather if route == "tall-gather" else tall.backwardDataScatter
        kernel(contiguous(dy), contiguous(W), dx, *plan.hyper, jit.parallelChunks())
        return host(dx)
    return host(reference.backwardData(dy, W, inshape, stride, pad, dilation))


def depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation):
    plan = _planFor(x.shape, wgrad.shape, stride, pad, dilation)
    if plan["backwardParams"] != "numpy":
        wpart, bpart = _gradScratch(wgrad, bgrad)
        if plan["backwardParams"] == "flat":
            # no input gradient wanted: x stands in for dx, which is never written
            flat.backward(contiguous(x), contiguous(dy), wpart, contiguous(x), wpart, bpart, False, True,
                          *_flatArgs(plan))
        else:
            tall.backwardParams(contiguous(x), contiguous(dy), wpart, bpart, *plan.hyper)
        if _addFinite(wgrad, bgrad, wpart, bpart):
            return
    reference.backwardParams(x, dy, wgrad, bgrad, stride, pad, dilation)


def depthwiseConv2dBackward(x, dy, W, wgrad, bgrad, stride, pad, dilation):
    plan = _planFor(x.shape, W.shape, stride, pad, dilation)
    route = plan["backward"]
    if route == "flat" or (route == "tall-fused" and allFinite(W)):
        dx = new(tuple(x.shape))
        wpart, bpart = _gradScratch(wgrad, bgrad)
        if route == "flat":
            total = flat.backward(contiguous(x), contiguous(dy), contiguous(W), dx, wpart, bpart, True, True,
                                  *_flatArgs(plan))
        else:   # the tall gather's dx is exact with a finite kernel (see depthwiseConv2dBackwardData)
            tall.backward(contiguous(x), contiguous(dy), contiguous(W), dx, wpart, bpart, *plan.hyper)
            total = 0.0
        if np.isfinite(total) and _addFinite(wgrad, bgrad, wpart, bpart):
            return host(dx)
        # non-finite: the separate passes below take each gradient to an exact path
    dx = depthwiseConv2dBackwardData(dy, W, x.shape, stride, pad, dilation)
    depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation)
    return dx
