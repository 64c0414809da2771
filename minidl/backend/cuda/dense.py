"""Fully connected layer ops on the CUDA backend: sgemm plus bias kernels."""

import numpy as np

from minidl.backend.cuda import cublas
from minidl.backend.cuda.array import empty
from minidl.backend.cuda.compiler import function, i32, i64, launch, ptr


def linear(x, W, b):
    n, insize = x.shape
    outsize = W.shape[1]
    y = empty((n, outsize), np.float32)
    cublas.gemm(False, False, n, outsize, insize, 1.0, ptr(x), insize, ptr(W), outsize, 0.0, ptr(y), outsize)
    if b is not None:
        launch(function("elementwise.cu", "addRowBias"), y.size, ptr(y), ptr(b), i64(n), i32(outsize))
    return y


def linearBackwardData(dy, W):
    n, outsize = dy.shape
    insize = W.shape[0]
    dx = empty((n, insize), np.float32)
    cublas.gemm(False, True, n, insize, outsize, 1.0, ptr(dy), outsize, ptr(W), outsize, 0.0, ptr(dx), insize)
    return dx


def linearBackwardParams(x, dy, wgrad, bgrad):
    n, insize = x.shape
    outsize = dy.shape[1]
    cublas.gemm(True, False, insize, outsize, n, 1.0, ptr(x), insize, ptr(dy), outsize, 1.0, ptr(wgrad), outsize)
    if bgrad is not None:
        launch(function("elementwise.cu", "columnSum"), outsize, ptr(dy), ptr(bgrad), i32(n), i32(outsize))
