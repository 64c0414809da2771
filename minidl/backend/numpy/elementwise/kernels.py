"""numba kernels for the activations that have one (clip, ReLU, hardSigmoid, hardSwish).

One pass over memory each way, in parallel, where the NumPy formulas in __init__.py (the reference
and the path without numba) take several with temporaries: in NumPy expressions hard swish took a
fifth of a MobileNetV3-Small forward pass (190 of 830 ms at batch 64 on 2 cores; 45 ms with these).
Compiled without fast-math (jit.parallelExact), in float32 throughout, so the results equal the
NumPy formulas' exactly and NaN goes through as they let it. Arguments: flat float32 arrays.
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.jit import prange

_ZERO, _HALF, _ONE = np.float32(0), np.float32(0.5), np.float32(1)
_THREE, _SIX, _SIXTH = np.float32(3), np.float32(6), np.float32(1 / 6)


# Clip and ReLU (clip to [0, inf)): the same rule, without fast-math (its no-NaN assumption let the
# compiler fold the comparisons into min/max, which turned NaN into 0 or the upper bound). Written
# so a NaN input falls through both comparisons, and a NaN gradient stays NaN through the 0/1 mask,
# as the NumPy formulas give.


@jit.inline
def clipValue(v, lo, hi):
    """v clipped to [lo, hi]; a NaN falls through both comparisons and stays NaN."""
    return lo if v < lo else (hi if v > hi else v)


@jit.inline
def clipGradient(g, v, lo, hi, bounded):
    """g where the clip at v lets it through (lo < v, and v < hi when bounded), else g * 0 (NaN for
    a non-finite g). Without bounded, ReLU's v = +inf passes its gradient, as the NumPy formula
    dy * (x > 0) has it, where v < inf would stop it. Shared with the batch norm fused with its
    activation (batchnorm/kernels.py), so both apply one rule."""
    return g if (v > lo and (v < hi or not bounded)) else g * _ZERO


@jit.parallelExact
def clipForward(x, y, lo, hi):
    for k in prange(x.size):
        y[k] = clipValue(x[k], lo, hi)


@jit.parallelExact
def clipBackward(x, dy, dx, lo, hi, bounded):
    """dx = dy * (lo < x < hi); without bounded, dy * (lo < x) (clipGradient)."""
    for k in prange(x.size):
        dx[k] = clipGradient(dy[k], x[k], lo, hi, bounded)


# MobileNetV3's hard sigmoid and hard swish.


@jit.parallelExact
def hardSigmoidForward(x, y):
    for k in prange(x.size):
        t = x[k] + _THREE
        y[k] = _ZERO if t < _ZERO else (_ONE if t > _SIX else t / _SIX)


@jit.parallelExact
def hardSigmoidBackward(x, dy, dx):
    for k in prange(x.size):
        v = x[k]
        dx[k] = dy[k] * (_SIXTH if (v > -_THREE and v < _THREE) else _ZERO)


@jit.parallelExact
def hardSwishForward(x, y):
    for k in prange(x.size):
        v = x[k]
        y[k] = _ZERO if v < -_THREE else (v if v > _THREE else v * (v + _THREE) / _SIX)


@jit.parallelExact
def hardSwishBackward(x, dy, dx):
    for k in prange(x.size):
        v = x[k]
        dx[k] = dy[k] * (_ZERO if v <= -_THREE else (_ONE if v >= _THREE else v / _THREE + _HALF))
