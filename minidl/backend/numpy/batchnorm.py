"""Batch normalisation over (N, H, W) per channel on the NumPy backend.

x is (N, C, H, W) (1-D batch norm reshapes (N, C) to (N, C, 1, 1)); scale,
bias and the statistics are (1, C, 1, 1).
"""

import numpy as np

from minidl.backend.numpy import accel
from minidl.backend.numpy.array import host, new

_AXES = (0, 2, 3)


def _planes(x):
    """x as (N, C, H*W) for the per-channel kernels."""
    n, c = x.shape[:2]
    return np.ascontiguousarray(np.asarray(x)).reshape(n, c, -1)


def _affine(x, a, b):
    """y = x * a + b per channel, a and b of shape (1, C, 1, 1)."""
    if accel.enabled:
        y = new(x.shape)
        accel.channelAffine(_planes(x), a.reshape(-1).astype(np.float32), b.reshape(-1).astype(np.float32),
                            y.reshape(x.shape[0], x.shape[1], -1))
        return y
    return np.asarray(x) * a + b


def _moments(x):
    """Per-channel mean and biased variance, each (1, C, 1, 1) float32."""
    if accel.enabled:
        c = x.shape[1]
        mean, var = np.empty(c), np.empty(c)
        accel.channelMoments(_planes(x), mean, var)
        return mean.astype(np.float32).reshape(1, c, 1, 1), var.astype(np.float32).reshape(1, c, 1, 1)
    mean = np.asarray(x).mean(axis=_AXES, keepdims=True, dtype=np.float32)
    return mean, np.square(np.asarray(x) - mean).mean(axis=_AXES, keepdims=True, dtype=np.float32)


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor):
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean, var = _moments(x)
    a = np.asarray(scale) / np.sqrt(var + np.float32(epsilon))
    y = _affine(x, a, np.asarray(bias) - mean * a)
    unbiased = var * np.float32(count / max(count - 1, 1))
    runMean *= np.float32(1.0 - factor)
    runMean += np.float32(factor) * mean
    runVar *= np.float32(1.0 - factor)
    runVar += np.float32(factor) * unbiased
    return host(y), host(mean), host(var)


def batchNormEval(x, scale, bias, mean, var, epsilon):
    a = np.asarray(scale) / np.sqrt(np.asarray(var) + np.float32(epsilon))
    return host(_affine(x, a, np.asarray(bias) - np.asarray(mean) * a))


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats):
    invStd = 1.0 / np.sqrt(np.asarray(var) + np.float32(epsilon))
    a = np.asarray(scale) * invStd
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if accel.enabled:
        c = x.shape[1]
        sdy, sdyx = np.empty(c), np.empty(c)
        mean64 = np.asarray(mean, dtype=np.float64).reshape(-1)
        accel.channelDyMoments(_planes(x), _planes(dy), mean64, sdy, sdyx)
        dbias = sdy.astype(np.float32).reshape(1, c, 1, 1)
        dscale = (sdyx.reshape(1, c, 1, 1) * invStd).astype(np.float32)
        # dx = a*dy + k2*x + k3, the batch-statistics terms folded into per-channel constants
        if useBatchStats:
            k2 = -a * invStd * dscale / count
            k3 = -a * dbias / count - k2 * np.asarray(mean)
        else:
            k2 = k3 = np.zeros_like(a)
        dx = new(x.shape)
        accel.channelAffine2(_planes(dy), _planes(x), a.reshape(-1).astype(np.float32),
                             k2.reshape(-1).astype(np.float32), k3.reshape(-1).astype(np.float32),
                             dx.reshape(x.shape[0], c, -1))
        return host(dx), host(dscale), host(dbias)
    x, dy = np.asarray(x), np.asarray(dy)
    xhat = (x - np.asarray(mean)) * invStd
    dbias = dy.sum(axis=_AXES, keepdims=True, dtype=np.float32)
    dscale = (dy * xhat).sum(axis=_AXES, keepdims=True, dtype=np.float32)
    if useBatchStats:
        dx = a * (dy - (dbias + xhat * dscale) / np.float32(count))
    else:
        dx = dy * a
    return host(dx), host(dscale), host(dbias)
