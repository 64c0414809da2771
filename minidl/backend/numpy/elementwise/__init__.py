"""Activations, dropout and softmax on the NumPy backend.

The NumPy formulas here are the reference; clip, ReLU, hardSigmoid and hardSwish also have numba
kernels (kernels.py) equal to them bit for bit, which ``plan(kind)`` takes while numba is on.
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.array import host, new
from minidl.backend.numpy.elementwise import kernels
from minidl.backend.numpy.routing import Plan, Route, planner

ACTIVATIONS = ("relu", "clip", "leakyRelu", "elu", "sigmoid", "tanh", "softPlus", "hardSigmoid", "hardSwish")
# kind -> (forward kernel (x, y, ...), backward kernel (x, dy, dx, ...)); relu is clip to [0, inf)
_KERNELS = {
    "relu": (kernels.clipForward, kernels.clipBackward),
    "clip": (kernels.clipForward, kernels.clipBackward),
    "hardSigmoid": (kernels.hardSigmoidForward, kernels.hardSigmoidBackward),
    "hardSwish": (kernels.hardSwishForward, kernels.hardSwishBackward),
}


@planner("activation")
def plan(kind):
    """The Plan of an activation kind: routes forward and backward ("kernel" or "numpy"), and
    kernels, the (forward, backward) pair of kernels.py or None."""
    if not jit.enabled:
        route, pair = Route("numpy", "numba is off (%s)" % jit.disabledBy), None
    elif kind in _KERNELS:
        route, pair = Route("kernel", "one exact parallel pass (kernels.py)"), _KERNELS[kind]
    else:
        route, pair = Route("numpy", "no kernel for %s: the NumPy formula" % kind), None
    return Plan("activation", kind, [("forward", route), ("backward", route)], kernels=pair)


def _sigmoid(x):
    # split by sign so exp never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _clipArgs(kind, alpha, beta):
    """The clip kernels' bounds (ReLU's: 0 and inf); nothing for the other kernels."""
    if kind == "relu":
        return np.float32(0), np.float32(np.inf)
    return (np.float32(alpha), np.float32(beta)) if kind == "clip" else ()


def _target(out, shape):
    """Where an op writes: out when it is given and contiguous (in place if it is an input), else a
    new workspace array."""
    if out is not None and np.asarray(out).flags.c_contiguous and np.asarray(out).flags.writeable:
        return np.asarray(out)
    return new(shape)


def _deliver(result, out):
    """A computed result as the op's output: itself, or copied to out's target when out is given."""
    if out is None:
        return host(result)
    target = _target(out, result.shape)
    np.copyto(target, result)
    return host(target)


def activation(x, kind, alpha, beta, out=None):
    x = np.asarray(x)
    pair = plan(kind).kernels
    if pair is not None:
        y = _target(out, x.shape)
        pair[0](np.ascontiguousarray(x).reshape(-1), y.reshape(-1), *_clipArgs(kind, alpha, beta))
        return host(y)
    return _deliver(_activation(x, kind, alpha, beta), out)


def _activation(x, kind, alpha, beta):
    if kind == "relu":
        y = np.maximum(x, 0)
    elif kind == "clip":
        y = np.clip(x, np.float32(alpha), np.float32(beta))
    elif kind == "leakyRelu":
        y = np.where(x > 0, x, x * np.float32(alpha))
    elif kind == "elu":
        y = np.where(x > 0, x, np.float32(alpha) * np.expm1(np.minimum(x, 0)))
    elif kind == "sigmoid":
        y = _sigmoid(x)
    elif kind == "tanh":
        y = np.tanh(x)
    elif kind == "softPlus":
        y = np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)
    elif kind == "hardSigmoid":
        # PyTorch's relu6(x + 3) / 6, in its order of operations; NaN fails both tests and stays NaN
        t = x + np.float32(3)
        y = np.where(t < 0, np.float32(0), np.where(t > 6, np.float32(1), t / np.float32(6)))
    elif kind == "hardSwish":
        # x * relu6(x + 3) / 6 by pieces: 0 below -3 (also at -inf, where the product would be NaN) and
        # x itself above 3 (PyTorch's x * 6 / 6 can differ from x in the last bit); NaN stays NaN
        m = np.clip(x, np.float32(-3), np.float32(3))     # (clipped: no overflow in the discarded pieces)
        y = np.where(x > 3, x, np.where(x < -3, np.float32(0), m * (m + np.float32(3)) / np.float32(6)))
    else:
        raise ValueError("unknown activation %r, expected one of %s" % (kind, ", ".join(ACTIVATIONS)))
    return y.astype(np.float32, copy=False)


def activationBackward(x, y, dy, kind, alpha, beta, out=None):
    x, y, dy = np.asarray(x), np.asarray(y), np.asarray(dy)
    pair = plan(kind).kernels
    if pair is not None:
        dx = _target(out, x.shape)
        extra = _clipArgs(kind, alpha, beta) + ((kind == "clip",) if kind in ("relu", "clip") else ())
        pair[1](np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(dy).reshape(-1), dx.reshape(-1), *extra)
        return host(dx)
    return _deliver(_activationBackward(x, y, dy, kind, alpha, beta), out)


def _activationBackward(x, y, dy, kind, alpha, beta):
    if kind == "relu":
        dx = dy * (x > 0)
    elif kind == "clip":
        dx = dy * ((x > alpha) & (x < beta))
    elif kind == "leakyRelu":
        dx = np.where(x > 0, dy, dy * np.float32(alpha))
    elif kind == "elu":
        dx = np.where(x > 0, dy, dy * (y + np.float32(alpha)))
    elif kind == "sigmoid":
        dx = dy * y * (1 - y)
    elif kind == "tanh":
        dx = dy * (1 - y * y)
    elif kind == "softPlus":
        dx = dy * _sigmoid(x)
    elif kind == "hardSigmoid":
        # 1/6 strictly between the kinks, 0 at and beyond them (PyTorch's choice at x = +-3), as clip's mask
        dx = dy * np.where((x > -3) & (x < 3), np.float32(1 / 6), np.float32(0))
    elif kind == "hardSwish":
        # the outer piece's derivative at each kink, as PyTorch: 0 at x = -3, 1 at x = 3; NaN x gives NaN
        dx = dy * np.where(x <= -3, np.float32(0), np.where(x >= 3, np.float32(1), x / np.float32(3) + np.float32(0.5)))
    else:
        raise ValueError("unknown activation %r, expected one of %s" % (kind, ", ".join(ACTIVATIONS)))
    return dx.astype(np.float32, copy=False)


def dropout(x, p, seed):
    rng = np.random.default_rng(seed)
    mask = (rng.random(x.shape, dtype=np.float32) >= p).astype(np.float32)
    mask *= np.float32(1.0 / (1.0 - p))
    return host(np.asarray(x) * mask), host(mask)


def dropoutBackward(dy, mask):
    return host(np.asarray(dy) * np.asarray(mask))


def softmax(x):
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return host(e)


def softmaxBackward(y, dy):
    y, dy = np.asarray(y), np.asarray(dy)
    return host(y * (dy - (dy * y).sum(axis=1, keepdims=True)))
