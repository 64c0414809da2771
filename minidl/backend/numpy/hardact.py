"""numba kernels for the hardSigmoid and hardSwish activations (MobileNetV3's) on the NumPy backend.

One pass over memory each way, in parallel, where the NumPy formulas in elementwise.py (the reference
and the fallback when numba is off) take several with temporaries: in NumPy expressions hard swish
took a fifth of a MobileNetV3-Small forward pass (190 of 830 ms at batch 64 on 2 cores; 45 ms with
these). Compiled without fast-math, in float32 throughout, so the results equal the NumPy formulas'
exactly and NaN goes through as they let it; launched through accel's launcher (its threading-layer
rule). ``forward(kind)`` and ``backward(kind)`` give the kernel for a kind, None without numba.
"""

import numpy as np

from minidl.backend.numpy import accel

_ZERO, _HALF, _ONE = np.float32(0), np.float32(0.5), np.float32(1)
_THREE, _SIX, _SIXTH = np.float32(3), np.float32(6), np.float32(1 / 6)

if accel.enabled:
    from numba import njit, prange

    _exact = dict(parallel=True, cache=accel.CACHE, fastmath=False, nogil=True)

    @accel._serialised
    @njit(**_exact)
    def hardSigmoidForward(x, y):
        for k in prange(x.size):
            t = x[k] + _THREE
            y[k] = _ZERO if t < _ZERO else (_ONE if t > _SIX else t / _SIX)

    @accel._serialised
    @njit(**_exact)
    def hardSigmoidBackward(x, dy, dx):
        for k in prange(x.size):
            v = x[k]
            dx[k] = dy[k] * (_SIXTH if (v > -_THREE and v < _THREE) else _ZERO)

    @accel._serialised
    @njit(**_exact)
    def hardSwishForward(x, y):
        for k in prange(x.size):
            v = x[k]
            y[k] = _ZERO if v < -_THREE else (v if v > _THREE else v * (v + _THREE) / _SIX)

    @accel._serialised
    @njit(**_exact)
    def hardSwishBackward(x, dy, dx):
        for k in prange(x.size):
            v = x[k]
            dx[k] = dy[k] * (_ZERO if v <= -_THREE else (_ONE if v >= _THREE else v / _THREE + _HALF))


def forward(kind):
    """The kernel (x, y) for kind's forward pass on flat float32 arrays, or None."""
    if not accel.enabled or kind not in ("hardSigmoid", "hardSwish"):
        return None
    return hardSigmoidForward if kind == "hardSigmoid" else hardSwishForward


def backward(kind):
    """The kernel (x, dy, dx) for kind's backward pass on flat float32 arrays, or None."""
    if not accel.enabled or kind not in ("hardSigmoid", "hardSwish"):
        return None
    return hardSigmoidBackward if kind == "hardSigmoid" else hardSwishBackward
