"""Fully connected layer ops on the NumPy backend: y = x @ W + b, W (insize, outsize)."""

import numpy as np

from minidl.backend.numpy.array import host, new
from minidl.backend.numpy.gemm import matmul


def linear(x, W, b):
    y = matmul(x, W, new((x.shape[0], W.shape[1])))
    if b is not None:
        y += np.asarray(b)
    return host(y)


def linearBackwardData(dy, W):
    return host(matmul(dy, np.asarray(W).T, new((dy.shape[0], W.shape[0]))))


def linearBackwardParams(x, dy, wgrad, bgrad):
    wgrad += matmul(np.asarray(x).T, dy, np.empty(wgrad.shape, dtype=np.float32))
    if bgrad is not None:
        bgrad += np.asarray(dy).sum(axis=0, dtype=np.float32)
