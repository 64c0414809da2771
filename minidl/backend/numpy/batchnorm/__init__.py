"""Batch normalisation over (N, H, W) per channel on the NumPy backend.

x is (N, C, H, W) (1-D batch norm reshapes (N, C) to (N, C, 1, 1)); scale,
bias and the statistics are (1, C, 1, 1). ``plan`` below picks, per shape, the
kernels of kernels.py (channel-major or image-major) or the NumPy formulas here.

Non-finite values: the NumPy formulas below (the textbook ones, x - mean first) are the definition.
The numba kernels fold each channel into y = x * a + b and dx = dy * a + x * k2 + k3, the same
numbers for finite values but not the same NaN and infinities for infinite ones (inf - inf where
the textbook form has inf). So they run only while the per-channel parameters are finite, and
their results are kept only while the per-channel sums are: a sum over a channel is finite exactly
when every value summed is. Both checks are over C values.
"""

import math

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.array import allFinite, host, new
from minidl.backend.numpy.batchnorm import kernels
from minidl.backend.numpy.elementwise import _activation, _activationBackward, _clipArgs
from minidl.backend.numpy.routing import Plan, Route, planner
from minidl.shapes import checkOut, fusedActivation

_AXES = (0, 2, 3)
# planes shorter than this (in floats) are walked image by image, not channel by channel (kernels.py)
IMAGE_MAJOR_MAX_L = 1024
_FALLBACK = "numpy when the per-channel parameters or sums are not finite"


@planner("batchnorm")
def plan(inshape):
    """The Plan of batch norm on x of inshape (N, C, H, W): routes train and backward (image-major
    or channel-major kernels, or numpy), and eval, moments, backwardSums, backwardData (one kernel
    each, or numpy)."""
    l = int(np.prod(inshape[2:], dtype=np.int64))
    passes = ("train", "backward", "eval", "moments", "backwardSums", "backwardData")
    if not jit.enabled or not np.prod(inshape):
        why = "numba is off (%s)" % jit.disabledBy if not jit.enabled else "empty input"
        return Plan("batchnorm", str(inshape), [(p, Route("numpy", why)) for p in passes])
    if l < IMAGE_MAJOR_MAX_L:
        major = Route("image-major", "planes of %d < %d floats: sums image by image, then one affine pass"
                      % (l, IMAGE_MAJOR_MAX_L), _FALLBACK)
    else:
        major = Route("channel-major", "planes of %d >= %d floats: each channel's statistics and affine pass "
                      "while it sits in cache" % (l, IMAGE_MAJOR_MAX_L), _FALLBACK)
    sums = Route("channel-sums", "float64 sums image by image", _FALLBACK)
    affine = Route("affine", "one pass of y = x * a[c] + b[c]", _FALLBACK)
    return Plan("batchnorm", str(inshape), [("train", major), ("backward", major), ("eval", affine),
                                            ("moments", sums), ("backwardSums", sums),
                                            ("backwardData", Route("affine", "one pass of dx = dy * a[c] + x * k2[c]"
                                                                   " + k3[c]", _FALLBACK))])


def _planFor(x):
    return plan(tuple(x.shape))


def _planes(x):
    """x as (N, C, H*W) for the per-channel kernels."""
    n, c = x.shape[:2]
    # the plane size spelled out: -1 cannot be inferred for an empty batch
    return np.ascontiguousarray(np.asarray(x)).reshape(n, c, math.prod(x.shape[2:]))


def _moments(x):
    """Per-channel mean and biased variance, each (1, C, 1, 1) float32 (the NumPy path)."""
    mean = np.asarray(x).mean(axis=_AXES, keepdims=True, dtype=np.float32)
    return mean, np.square(np.asarray(x) - mean).mean(axis=_AXES, keepdims=True, dtype=np.float32)


def _updateRunning(runMean, runVar, mean, var, count, factor):
    unbiased = var * np.float32(count / max(count - 1, 1))
    runMean *= np.float32(1.0 - factor)
    runMean += np.float32(factor) * mean
    runVar *= np.float32(1.0 - factor)
    runVar += np.float32(factor) * unbiased


def _vec(a):
    """A per-channel (1, C, 1, 1) array as a flat float32 vector for the kernels."""
    return np.ascontiguousarray(np.asarray(a), dtype=np.float32).reshape(-1)


# the kernels' clip arguments (lo, hi, bounded, on) when no activation is fused: on is False
_NOACT = (np.float32(0), np.float32(0), False, False)


def _clip(op, act, inshape=None, y=None):
    """The kernels' (lo, hi, bounded, on) for a fused activation act, checked (shapes.fusedActivation;
    op, inshape and y as there); _NOACT for none."""
    fusedActivation(op, act, inshape, y)
    if act is None:
        return _NOACT
    kind, alpha, beta = act
    return _clipArgs(kind, alpha, beta) + (kind == "clip", True)


def _actNumpy(y, act):
    """y through the fused activation, by the activation's own NumPy formula."""
    return y if act is None else _activation(y, *act)


def _maskNumpy(dy, z, act):
    """dy through the fused activation whose output is z, by the activation's own NumPy formula."""
    return np.asarray(dy) if act is None else _activationBackward(np.asarray(z), np.asarray(z), np.asarray(dy), *act)


def _maskArgs(clip, y, dy):
    """The kernels' trailing (z, lo, hi, bounded, masked) for a fused activation's mask (none: z is dy,
    unread)."""
    return (_planes(y if clip[3] else dy),) + clip


def _finite(*perChannel):
    """Whether every per-channel array is finite: the kernels may run on them."""
    return all(allFinite(a) for a in perChannel)


def _divisible(var, epsilon):
    """Whether every sqrt(var + epsilon) is above zero, in float32 as the NumPy formulas take it. Where
    one is zero (a variance of exactly -epsilon, or of 0 with an epsilon that rounds to zero), the
    formulas' x - mean times an infinite 1/std gives infinities and NaN the backward kernels' folded
    constants do not reproduce: the formulas run instead."""
    return bool((np.sqrt(np.asarray(var) + np.float32(epsilon)) > 0).all())


def _trainKernels(route, x, scale, bias, epsilon, clip):
    """(y, mean, var) through the kernels, or None when a channel's statistics are not finite."""
    lo, hi, _, on = clip
    c = x.shape[1]
    count = x.size // c
    y, mean64, var64 = new(x.shape), np.empty(c), np.empty(c)
    if route == "image-major":
        sums = kernels.channelSums(_planes(x), None, None, jit.parallelChunks())
        a, b = np.empty(c, np.float32), np.empty(c, np.float32)
        kernels.trainCoefficients(sums, count, _vec(scale), _vec(bias), np.float32(epsilon), mean64, var64, a, b)
        if not (allFinite(mean64) and allFinite(var64)):
            return None
        kernels.channelAffine(_planes(x), a, b, _planes(y), lo, hi, on)
    else:
        kernels.channelMajorTrain(_planes(x), _vec(scale), _vec(bias), _planes(y), mean64, var64,
                                  np.float32(epsilon), lo, hi, on)
        if not (allFinite(mean64) and allFinite(var64)):
            return None
    return y, mean64.astype(np.float32).reshape(1, c, 1, 1), var64.astype(np.float32).reshape(1, c, 1, 1)


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor, act=None):
    clip = _clip("batchNormTrain", act)
    if x.size == 0:
        # no statistics to normalise by, nor to move the running ones with (they would become NaN)
        raise ValueError("batchNormTrain: expected a batch with at least one value per channel, got shape %s"
                         % (tuple(x.shape),))
    count = x.size // x.shape[1]
    route = _planFor(x)["train"]
    result = _trainKernels(route, x, scale, bias, epsilon, clip) if route != "numpy" and _finite(scale, bias) \
        else None
    if result is not None:
        y, mean, var = result
    else:
        mean, var = _moments(x)
        a = np.asarray(scale) / np.sqrt(var + np.float32(epsilon))
        y = _actNumpy((np.asarray(x) - mean) * a + np.asarray(bias), act)
    _updateRunning(runMean, runVar, mean, var, count, factor)
    return host(y), host(mean), host(var)


def batchNormEval(x, scale, bias, mean, var, epsilon, act=None, out=None):
    lo, hi, _, on = _clip("batchNormEval", act)
    checkOut("batchNormEval", x, out, np.may_share_memory)
    if _planFor(x)["eval"] != "numpy":
        params = (_vec(scale), _vec(bias), _vec(mean), _vec(var), np.float32(epsilon))
        if out is x:
            # its own kernel: with y aliasing x, evalAffine's loops lost their vectorisation (1.5x slower)
            if kernels.evalAffineInPlace(_planes(x), *params, lo, hi, on):
                return host(x)
        else:
            y = new(x.shape) if out is None else out
            if kernels.evalAffine(_planes(x), *params, _planes(y), lo, hi, on):
                return host(y)
    a = np.asarray(scale) / np.sqrt(np.asarray(var) + np.float32(epsilon))
    y = _actNumpy((np.asarray(x) - np.asarray(mean)) * a + np.asarray(bias), act)
    if out is not None:
        np.copyto(out, y)       # x is read in full above, so out may be x
        return host(out)
    return host(y)


def _backwardKernels(route, x, dy, scale, mean, var, epsilon, useBatchStats, clip, y):
    """(dx, dscale, dbias) through the kernels, or None when a channel's sums are not finite."""
    c = x.shape[1]
    count = x.size // c
    dx, dscale, dbias = new(x.shape), np.empty(c, np.float32), np.empty(c, np.float32)
    mask = _maskArgs(clip, y, dy)
    if route == "image-major":
        sums = kernels.channelSums(_planes(x), _planes(dy), _vec(mean), jit.parallelChunks(),
                                   mask[:4] if clip[3] else None)
        if not allFinite(sums):
            return None
        a, k2, k3 = (np.empty(c, np.float32) for _ in range(3))
        kernels.backwardCoefficients(sums, count, _vec(scale), _vec(mean), _vec(var), float(epsilon),
                                   bool(useBatchStats), a, k2, k3, dscale, dbias)
        kernels.backwardApply(_planes(x), _planes(dy), a, k2, k3, _planes(dx), *mask)
    else:
        kernels.channelMajorBackward(_planes(x), _planes(dy), _vec(scale), _vec(mean), _vec(var), float(epsilon),
                                bool(useBatchStats), _planes(dx), dscale, dbias, *mask)
        if not (allFinite(dscale) and allFinite(dbias)):
            return None
    return dx, dscale.reshape(1, c, 1, 1), dbias.reshape(1, c, 1, 1)


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats, act=None, y=None):
    clip = _clip("batchNormBackward", act, x.shape, y)
    result = None
    route = _planFor(x)["backward"]
    if route != "numpy" and _finite(scale, mean, var) and _divisible(var, epsilon):
        result = _backwardKernels(route, x, dy, scale, mean, var, epsilon, useBatchStats, clip, y)
    if result is not None:
        return tuple(host(r) for r in result)
    count = x.size // x.shape[1]
    invStd = 1.0 / np.sqrt(np.asarray(var) + np.float32(epsilon))
    a = np.asarray(scale) * invStd
    x, dy = np.asarray(x), _maskNumpy(dy, y, act)
    xhat = (x - np.asarray(mean)) * invStd
    dbias = dy.sum(axis=_AXES, keepdims=True, dtype=np.float32)
    dscale = (dy * xhat).sum(axis=_AXES, keepdims=True, dtype=np.float32)
    if useBatchStats:
        dx = a * (dy - (dbias + xhat * dscale) / np.float32(count))
    else:
        dx = dy * a
    return host(dx), host(dscale), host(dbias)


# ---- synchronised batch norm: the per-channel sums on their own (minidl.distributed) -----------------

def batchNormMoments(x):
    n, c = x.shape[:2]
    count = x.size // c
    if _planFor(x)["moments"] != "numpy":
        sums = kernels.channelSums(_planes(x), None, None, jit.parallelChunks())      # (2, C) float64
        mean = sums[0] / count
        var = np.maximum(sums[1] / count - mean * mean, 0.0)   # rounding below zero; NaN stays NaN
        if allFinite(mean) and allFinite(var):
            return host(mean.astype(np.float32).reshape(1, c, 1, 1)), host(var.astype(np.float32).reshape(1, c, 1, 1))
    mean, var = _moments(x)
    return host(mean), host(var)


def batchNormUpdateRunning(runMean, runVar, mean, var, count, factor):
    _updateRunning(runMean, runVar, np.asarray(mean), np.asarray(var), count, factor)


def batchNormBackwardSums(x, dy, mean, var, epsilon):
    c = x.shape[1]
    invStd = 1.0 / np.sqrt(np.asarray(var, np.float64).reshape(-1) + epsilon)
    if _planFor(x)["backwardSums"] != "numpy" and _finite(mean, var) and _divisible(var, epsilon):
        sums = kernels.channelSums(_planes(x), _planes(dy), _vec(mean), jit.parallelChunks())
        if allFinite(sums):
            dscale = (sums[1] * invStd).astype(np.float32).reshape(1, c, 1, 1)
            return host(dscale), host(sums[0].astype(np.float32).reshape(1, c, 1, 1))
    x, dy = np.asarray(x), np.asarray(dy)
    xhat = (x - np.asarray(mean)) * (1.0 / np.sqrt(np.asarray(var) + np.float32(epsilon)))
    dbias = dy.sum(axis=_AXES, keepdims=True, dtype=np.float32)
    return host((dy * xhat).sum(axis=_AXES, keepdims=True, dtype=np.float32)), host(dbias)


def batchNormBackwardData(x, dy, scale, mean, var, dscale, dbias, count, epsilon):
    if _planFor(x)["backwardData"] != "numpy" and _finite(scale, mean, var, dscale, dbias) and \
            _divisible(var, epsilon):
        # dx = a * dy + k2 * x + k3 per channel, the batch statistics' terms folded into constants
        invStd = 1.0 / np.sqrt(np.asarray(var, np.float64).reshape(-1) + epsilon)
        a = np.asarray(scale, np.float64).reshape(-1) * invStd
        k2 = -a * invStd * np.asarray(dscale, np.float64).reshape(-1) / count
        k3 = -a * np.asarray(dbias, np.float64).reshape(-1) / count - k2 * np.asarray(mean, np.float64).reshape(-1)
        dx = new(x.shape)
        kernels.backwardApply(_planes(x), _planes(dy), a.astype(np.float32), k2.astype(np.float32),
                              k3.astype(np.float32), _planes(dx), *_maskArgs(_NOACT, None, dy))
        return host(dx)
    invStd = 1.0 / np.sqrt(np.asarray(var) + np.float32(epsilon))
    xhat = (np.asarray(x) - np.asarray(mean)) * invStd
    dx = np.asarray(scale) * invStd * (np.asarray(dy) - (np.asarray(dbias) + xhat * np.asarray(dscale))
                                       / np.float32(count))
    return host(dx.astype(np.float32, copy=False))
