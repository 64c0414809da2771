"""Elementwise product with a per-map broadcast on the CUDA backend (kernels/mul.cu); the contract is
minidl.backend.interface's mul and mulBackward."""

import math

import numpy as np

from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import function, i64, launch, launchBlocks, ptr


def _span(a, b):
    """How many consecutive elements of a share one element of b: 1 for one shape, else H*W*..."""
    return 1 if tuple(b.shape) == tuple(a.shape) else math.prod(a.shape[2:])


def _reduceBlock(span):
    """Threads per plane for planeDot: a power of two from 32 to 256, no more than the span needs."""
    block = 32
    while block < min(span, 256):
        block *= 2
    return block


def mul(a, b):
    y = empty(a.shape, np.float32)
    launch(function("mul.cu", "mulSpan"), a.size, ptr(a), ptr(b), ptr(y), i64(a.size), i64(_span(a, b)))
    return y


def mulBackward(a, b, dy):
    span = _span(a, b)
    fn = function("mul.cu", "mulSpan")
    da = empty(a.shape, np.float32)
    launch(fn, a.size, ptr(dy), ptr(b), ptr(da), i64(a.size), i64(span))
    db = empty(b.shape, np.float32)
    if span == 1:
        launch(fn, a.size, ptr(dy), ptr(a), ptr(db), i64(a.size), i64(1))
    else:
        launchBlocks(function("mul.cu", "planeDot"), b.size, _reduceBlock(span), ptr(dy), ptr(a), ptr(db), i64(span))
    return da, db
