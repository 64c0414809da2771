"""Gradient-norm ops on the CUDA backend (for gradient clipping, minidl/optimizers/clipping.py).

``sumOfSquares`` runs pycuda's two-stage reduction once per array, each square
taken and summed in float64, and adds the partial results on the device: the
sum stays there until the caller asks with ``.get()``. ``scale`` is one
elementwise kernel (kernels/norm.cu).
"""

import numpy as np

from minidl.backend.cuda import context
from minidl.backend.cuda.array import zeros
from minidl.backend.cuda.compiler import f32, function, i64, launch, ptr

_squares = []   # the reduction kernel, built at first use (compiling needs the context)


def _squaresKernel():
    if not _squares:
        from pycuda.reduction import ReductionKernel
        _squares.append(ReductionKernel(np.float64, neutral="0", reduce_expr="a + b",
                                        map_expr="(double)x[i] * (double)x[i]", arguments="const float* x"))
    return _squares[0]


def sumOfSquares(xs):
    context.activate()
    total = None
    for x in xs:
        if x.size == 0:
            continue
        ptr(x)                           # refuses a strided view, naming this op
        part = _squaresKernel()(x)       # 0-d float64, from x's allocator (the backend's pool)
        if total is None:
            total = part
        else:
            total += part
    return zeros((), np.float64) if total is None else total


def scale(x, alpha):
    launch(function("norm.cu", "scaleArray"), x.size, ptr(x), f32(alpha), i64(x.size))
