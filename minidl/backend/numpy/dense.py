"""Fully connected layer ops on the NumPy backend: y = x @ W + b, W (insize, outsize)."""

import numpy as np

from minidl.backend.numpy.array import host


def linear(x, W, b):
    y = np.matmul(np.asarray(x), np.asarray(W))
    if b is not None:
        y += np.asarray(b)
    return host(y)


def linearBackwardData(dy, W):
    return host(np.matmul(np.asarray(dy), np.asarray(W).T))


def linearBackwardParams(x, dy, wgrad, bgrad):
    wgrad += np.matmul(np.asarray(x).T, np.asarray(dy))
    if bgrad is not None:
        bgrad += np.asarray(dy).sum(axis=0, dtype=np.float32)
