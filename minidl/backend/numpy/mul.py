"""Elementwise product with a per-map broadcast on the NumPy backend (the Mul module, squeeze-and-
excitation's gate). b is a's shape, or (N, C, 1, ..., 1) and multiplies every position of its map."""

import math

import numpy as np

from minidl.backend.numpy.array import host, new


def _span(a, b):
    """How many consecutive elements of a share one element of b: 1 for one shape, else H*W*..."""
    return 1 if tuple(b.shape) == tuple(a.shape) else math.prod(a.shape[2:])


def mul(a, b):
    a, b = np.asarray(a), np.asarray(b)
    y = new(a.shape)
    np.multiply(a, b, out=y)            # numpy broadcasts (N, C, 1, 1) over (N, C, H, W)
    return host(y)


def mulBackward(a, b, dy):
    a, b, dy = np.asarray(a), np.asarray(b), np.asarray(dy)
    da = new(a.shape)
    np.multiply(dy, b, out=da)
    db = new(a.shape)
    np.multiply(dy, a, out=db)
    if _span(a, b) != 1:
        n, c = a.shape[:2]
        # (N, C, L) summed over L, pairwise in float32 as every other reduction here
        db = db.reshape(n, c, _span(a, b)).sum(axis=2, dtype=np.float32).reshape(b.shape)
    return host(da), host(db)
