"""Batch normalisation over (N, H, W) per channel on the NumPy backend.

x is (N, C, H, W) (1-D batch norm reshapes (N, C) to (N, C, 1, 1)); scale,
bias and the statistics are (1, C, 1, 1).
"""

import numpy as np

from minidl.backend.numpy.array import host

_AXES = (0, 2, 3)


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor):
    x = np.asarray(x)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=_AXES, keepdims=True, dtype=np.float32)
    xc = x - mean
    var = np.square(xc).mean(axis=_AXES, keepdims=True, dtype=np.float32)
    y = xc * (np.asarray(scale) / np.sqrt(var + np.float32(epsilon))) + np.asarray(bias)
    unbiased = var * np.float32(count / max(count - 1, 1))
    runMean *= np.float32(1.0 - factor)
    runMean += np.float32(factor) * mean
    runVar *= np.float32(1.0 - factor)
    runVar += np.float32(factor) * unbiased
    return host(y), host(mean), host(var)


def batchNormEval(x, scale, bias, mean, var, epsilon):
    a = np.asarray(scale) / np.sqrt(np.asarray(var) + np.float32(epsilon))
    return host((np.asarray(x) - np.asarray(mean)) * a + np.asarray(bias))


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats):
    x, dy = np.asarray(x), np.asarray(dy)
    invStd = 1.0 / np.sqrt(np.asarray(var) + np.float32(epsilon))
    xhat = (x - np.asarray(mean)) * invStd
    dbias = dy.sum(axis=_AXES, keepdims=True, dtype=np.float32)
    dscale = (dy * xhat).sum(axis=_AXES, keepdims=True, dtype=np.float32)
    a = np.asarray(scale) * invStd
    if useBatchStats:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        dx = a * (dy - (dbias + xhat * dscale) / np.float32(count))
    else:
        dx = dy * a
    return host(dx), host(dscale), host(dbias)
