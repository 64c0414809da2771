"""Weight initialisation schemes, as PuzzleLib's ``createTensorWithScheme``.

Schemes: ``none`` (zeros), ``xavier``/``xavier_normal`` N(0, 1/f),
``xavier_uniform`` U(+-sqrt(3/f)) (the default), ``he`` N(0, 2/f),
``gaussian`` N(0, wscale^2), ``uniform`` U(+-wscale). The factor f is the
fan-in by default; pass ``(scheme, "in"|"out"|"avg")`` to choose. Fans follow
PuzzleLib: for a weight (out, in, kh, kw) fan-in is in*kh*kw and fan-out
out*kh*kw; for a Linear weight (insize, outsize) they are insize and outsize.
Random numbers come from numpy's global generator, so ``np.random.seed``
makes construction reproducible, as in PuzzleLib.
"""

import math

import numpy as np

SCHEMES = ("none", "xavier", "xavier_uniform", "xavier_normal", "he", "gaussian", "uniform")
FACTORS = ("in", "out", "avg")


def parseScheme(initscheme):
    """Validate an initscheme argument; returns (scheme, factor). Raises ValueError."""
    if initscheme is None:
        return "xavier_uniform", "in"
    if isinstance(initscheme, (tuple, list)):
        if len(initscheme) != 2:
            raise ValueError("initscheme tuple must be (scheme, factor), got %r" % (initscheme,))
        scheme, factor = initscheme
    else:
        scheme, factor = initscheme, "in"
    if scheme not in SCHEMES:
        raise ValueError("unknown init scheme %r, expected one of %s" % (scheme, ", ".join(SCHEMES)))
    if factor not in FACTORS:
        raise ValueError("unknown init factor %r, expected one of %s" % (factor, ", ".join(FACTORS)))
    return scheme, factor


def fans(shape):
    """(fanIn, fanOut) of a weight shape (see module docstring)."""
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


def createTensorWithScheme(initscheme, shape, wscale=1.0):
    """A float32 host array of the given shape initialised by the scheme."""
    scheme, factor = parseScheme(initscheme)
    fanIn, fanOut = fans(shape)
    f = {"in": fanIn, "out": fanOut, "avg": (fanIn + fanOut) / 2}[factor]
    if scheme == "none":
        values = np.zeros(shape)
    elif scheme == "xavier_uniform":
        bound = math.sqrt(3.0 / f)
        values = np.random.uniform(-bound, bound, shape)
    elif scheme in ("xavier", "xavier_normal"):
        values = np.random.normal(0.0, math.sqrt(1.0 / f), shape)
    elif scheme == "he":
        values = np.random.normal(0.0, math.sqrt(2.0 / f), shape)
    elif scheme == "gaussian":
        values = np.random.normal(0.0, wscale, shape)
    else:  # uniform
        values = np.random.uniform(-wscale, wscale, shape)
    return values.astype(np.float32)


def initWeight(initscheme, shape, wscale, empty):
    """A backend weight array of shape: zeros when empty (the weights will be loaded; allocated on the
    backend first, so an allocation budget refuses it before any host array of its size exists),
    else createTensorWithScheme's values."""
    from minidl.backend import gpuarray   # the backend imports nothing of this module
    if empty:
        return gpuarray.zeros(shape)
    return gpuarray.to_gpu(createTensorWithScheme(initscheme, shape, wscale))
