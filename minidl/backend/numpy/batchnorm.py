"""Batch normalisation over (N, H, W) per channel on the NumPy backend.

x is (N, C, H, W) (1-D batch norm reshapes (N, C) to (N, C, 1, 1)); scale,
bias and the statistics are (1, C, 1, 1).
"""

import numpy as np

from minidl.backend.numpy import accel
from minidl.backend.numpy.array import host, new

_AXES = (0, 2, 3)
# planes shorter than this (in floats) are walked image by image, not channel by channel (accel.py)
IMAGE_MAJOR_MAX_L = 1024


def _planes(x):
    """x as (N, C, H*W) for the per-channel kernels."""
    n, c = x.shape[:2]
    return np.ascontiguousarray(np.asarray(x)).reshape(n, c, -1)


def _affine(x, a, b):
    """y = x * a + b per channel, a and b of shape (1, C, 1, 1)."""
    if accel.enabled:
        y = new(x.shape)
        accel.channelAffine(_planes(x), _vec(a), _vec(b), y.reshape(x.shape[0], x.shape[1], -1))
        return y
    return np.asarray(x) * a + b


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


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor):
    n, c = x.shape[:2]
    count = x.size // c
    if accel.enabled and count // n < IMAGE_MAJOR_MAX_L:
        s, q = accel.channelSums(_planes(x), None, None, accel.parallelChunks())
        mean64 = s / count
        var64 = np.maximum(q / count - mean64 * mean64, 0.0)
        a = (_vec(scale) / np.sqrt(var64.astype(np.float32) + np.float32(epsilon))).astype(np.float32)
        y = new(x.shape)
        accel.channelAffine(_planes(x), a, (_vec(bias) - mean64.astype(np.float32) * a).astype(np.float32),
                            y.reshape(n, c, -1))
        mean, var = mean64.astype(np.float32).reshape(1, c, 1, 1), var64.astype(np.float32).reshape(1, c, 1, 1)
    elif accel.enabled:
        y = new(x.shape)
        mean64, var64 = np.empty(c), np.empty(c)
        accel.batchNormTrain(_planes(x), _vec(scale), _vec(bias), y.reshape(n, c, -1), mean64, var64,
                             np.float32(epsilon))
        mean = mean64.astype(np.float32).reshape(1, c, 1, 1)
        var = var64.astype(np.float32).reshape(1, c, 1, 1)
    else:
        mean, var = _moments(x)
        a = np.asarray(scale) / np.sqrt(var + np.float32(epsilon))
        y = np.asarray(x) * a + (np.asarray(bias) - mean * a)
    _updateRunning(runMean, runVar, mean, var, count, factor)
    return host(y), host(mean), host(var)


def batchNormEval(x, scale, bias, mean, var, epsilon):
    a = np.asarray(scale) / np.sqrt(np.asarray(var) + np.float32(epsilon))
    return host(_affine(x, a, np.asarray(bias) - np.asarray(mean) * a))


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats):
    n, c = x.shape[:2]
    count = x.size // c
    if accel.enabled and count // n < IMAGE_MAJOR_MAX_L:
        mu = _vec(mean).astype(np.float64)
        s1, s2 = accel.channelSums(_planes(x), _planes(dy), _vec(mean), accel.parallelChunks())
        invStd = 1.0 / np.sqrt(_vec(var).astype(np.float64) + epsilon)
        a = _vec(scale) * invStd
        # dx = a*dy + k2*x + k3: the batch-statistics terms folded into per-channel constants
        k2 = -a * invStd * invStd * s2 / count if useBatchStats else np.zeros(c)
        k3 = -a * s1 / count - k2 * mu if useBatchStats else np.zeros(c)
        dx = new(x.shape)
        accel.batchNormBackwardApply(_planes(x), _planes(dy), a.astype(np.float32), k2.astype(np.float32),
                                     k3.astype(np.float32), dx.reshape(n, c, -1))
        return (host(dx), host((s2 * invStd).astype(np.float32).reshape(1, c, 1, 1)),
                host(s1.astype(np.float32).reshape(1, c, 1, 1)))
    if accel.enabled:
        dx = new(x.shape)
        dscale, dbias = np.empty(c, np.float32), np.empty(c, np.float32)
        accel.batchNormBackward(_planes(x), _planes(dy), _vec(scale), _vec(mean), _vec(var), float(epsilon),
                                bool(useBatchStats), dx.reshape(n, c, -1), dscale, dbias)
        return host(dx), host(dscale.reshape(1, c, 1, 1)), host(dbias.reshape(1, c, 1, 1))
    invStd = 1.0 / np.sqrt(np.asarray(var) + np.float32(epsilon))
    a = np.asarray(scale) * invStd
    x, dy = np.asarray(x), np.asarray(dy)
    xhat = (x - np.asarray(mean)) * invStd
    dbias = dy.sum(axis=_AXES, keepdims=True, dtype=np.float32)
    dscale = (dy * xhat).sum(axis=_AXES, keepdims=True, dtype=np.float32)
    if useBatchStats:
        dx = a * (dy - (dbias + xhat * dscale) / np.float32(count))
    else:
        dx = dy * a
    return host(dx), host(dscale), host(dbias)
