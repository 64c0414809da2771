"""numba kernels for the optimizer rules (optional; see jit.py).

Each rule is one parallel pass over the parameter, gradient and state, with no
temporaries: the NumPy formulas in optim.py make five to eight whole-array
temporaries, which for one flat buffer of a whole model (setupOn(net,
useGlobalState=True), millions of floats) leave the cache for every
operation. Arithmetic is float32 throughout, step by step as NumPy's (no
fast-math, and constants such as 1 - beta rounded by the caller as optim.py
rounds them), so a kernel gives NumPy's results bit for bit, NaN and infinity
included. A zero wc drops the decay term rather than adding 0 * param,
so an infinite weight stays infinite, not NaN, exactly as optim.py does.
Arguments: 1-D contiguous float32 arrays and np.float32 scalars.

Each rule is compiled twice: parallel for arrays of PARALLEL_MIN elements or
more, serial below. A parallel launch costs ~55 us on a 2-core machine (its
threads wake from a passive wait), more than the whole NumPy update of an
array under ~50K floats, while the serial kernel costs ~1-2 us plus the loop;
measured per call, momentum at 1M floats: 0.28 ms parallel against 0.98 ms
for the NumPy formulas (Adam: 0.36 against 2.9).
"""

import types

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.jit import prange

enabled = jit.enabled

PARALLEL_MIN = 1 << 16


def _twice(fn):
    """fn compiled serial (prange runs as range) and parallel; the size picks one per call."""
    # a copy under its own name: numba's disk cache is keyed by the function's qualified name,
    # so the two builds of one function would load each other's code
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "Serial")
    copy.__qualname__ = fn.__qualname__ + "Serial"
    # no fast-math: these loops are memory-bound, and exact IEEE steps make each kernel round
    # exactly as optim.py's NumPy formulas do (tested bit for bit)
    serial = jit.serialExact(copy)
    wide = jit.parallelExact(fn)

    def launch(param, *args):
        return (wide if param.size >= PARALLEL_MIN else serial)(param, *args)
    launch.__name__, launch.__doc__ = fn.__name__, fn.__doc__
    return launch


@_twice
def sgd(param, grad, lr, wc):
    decay = wc != 0
    for k in prange(param.size):
        g = grad[k] + wc * param[k] if decay else grad[k]
        param[k] -= lr * g


@_twice
def momentum(param, grad, mom, lr, momRate, wc):
    decay = wc != 0
    for k in prange(param.size):
        g = grad[k] + wc * param[k] if decay else grad[k]
        m = mom[k] * momRate - lr * g
        mom[k] = m
        param[k] += m


@_twice
def nesterov(param, grad, mom, lr, momRate, ahead, wc):
    decay = wc != 0
    for k in prange(param.size):
        g = grad[k] + wc * param[k] if decay else grad[k]
        old = mom[k]
        m = old * momRate - lr * g
        mom[k] = m
        param[k] += ahead * m - momRate * old


@_twice
def adam(param, grad, mg, ms, lr, beta1, beta2, c1, c2, epsilon, wc):
    decay = wc != 0
    for k in prange(param.size):
        g = grad[k] + wc * param[k] if decay else grad[k]
        m = mg[k] * beta1 + c1 * g
        v = ms[k] * beta2 + c2 * g * g
        mg[k] = m
        ms[k] = v
        param[k] -= lr * m / (np.sqrt(v) + epsilon)


@_twice
def rmsprop(param, grad, ms, lr, factor, c, epsilon, wc):
    decay = wc != 0
    for k in prange(param.size):
        g = grad[k] + wc * param[k] if decay else grad[k]
        v = ms[k] * factor + c * g * g
        ms[k] = v
        param[k] -= lr * g / (np.sqrt(v) + epsilon)


@_twice
def adagrad(param, grad, h, lr, epsilon, wc):
    decay = wc != 0
    for k in prange(param.size):
        g = grad[k] + wc * param[k] if decay else grad[k]
        v = h[k] + g * g
        h[k] = v
        param[k] -= lr * g / (np.sqrt(v) + epsilon)


def flat(op, arrays):
    """The arrays as 1-D float32 views for the kernels, or None when numba is off or one is not
    contiguous float32 (then optim.py's NumPy formulas run). ValueError naming op when their sizes
    differ: the kernels index every array by the parameter's size."""
    size = arrays[0].size
    if any(a.size != size for a in arrays):
        raise ValueError("%s: the parameter, its gradient and its state must have one size, got %s"
                         % (op, ", ".join(str(tuple(a.shape)) for a in arrays)))
    if not enabled:
        return None
    out = []
    for a in arrays:
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            return None
        out.append(np.asarray(a).reshape(-1))
    return out
