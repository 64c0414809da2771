"""Shape arithmetic, in one place.

Every module, both backends and the tests compute convolution and pooling
geometry through these helpers, so a formula is never written twice. The
checks of hyperparameters live here too (``isInt``, ``positiveInt``,
``intAtLeast``, ``realInRange``): an int is a Python int or a numpy integer, never a bool; a
real number is finite and not a bool.
"""

import math
import numbers


def isInt(value):
    """True for a Python int or any numpy integer; False for bool (True as a size is a bug, not 1)."""
    # numbers.Integral covers int and every numpy integer type; numpy.bool_ is not Integral
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checkedInt(owner, name, value, minimum, wanted):
    if not isInt(value) or value < minimum:
        raise ValueError("%s: %s must be %s, got %r" % (owner, name, wanted, value))
    return int(value)


def positiveInt(owner, name, value):
    """int(value) when value is an int >= 1 (Python or numpy integer, not bool).

    Raises ValueError "<owner>: <name> must be a positive int, got <value>" otherwise.
    """
    return _checkedInt(owner, name, value, 1, "a positive int")


def intAtLeast(owner, name, value, minimum):
    """int(value) when value is an int >= minimum (Python or numpy integer, not bool): a count,
    a step or a seed.

    Raises ValueError "<owner>: <name> must be an int >= <minimum>, got <value>" otherwise.
    """
    return _checkedInt(owner, name, value, minimum, "an int >= %d" % minimum)


def realInRange(owner, name, value, low=None, high=None, lowOpen=False, highOpen=False):
    """float(value) when value is a finite real number (int, float or numpy scalar; not bool, not
    complex) in the interval from low to high (None: unbounded; closed ends unless lowOpen/highOpen).

    Raises ValueError naming owner and name otherwise: "SGD: learnRate must be >= 0, got -1",
    "Dropout: p must be in [0, 1), got 1.0", "Adam: beta1 must be a finite number in [0, 1), got nan".
    """
    if low is not None and high is not None:
        condition = "in %s%r, %r%s" % ("(" if lowOpen else "[", low, high, ")" if highOpen else "]")
    elif low is not None:
        condition = "%s %r" % (">" if lowOpen else ">=", low)
    elif high is not None:
        condition = "%s %r" % ("<" if highOpen else "<=", high)
    else:
        condition = ""
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)):
        raise ValueError("%s: %s must be a finite number%s, got %r"
                         % (owner, name, " " + condition if condition else "", value))
    inside = (low is None or (value > low if lowOpen else value >= low)) and \
        (high is None or (value < high if highOpen else value <= high))
    if not inside:
        raise ValueError("%s: %s must be %s, got %r" % (owner, name, condition, value))
    return float(value)


def pair(value, what="value"):
    """Normalise an int or an (h, w) pair of ints (Python or numpy, not bool) to a tuple of two Python ints."""
    if isInt(value):
        return int(value), int(value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError("%s must be an int or an (h, w) pair, got %r" % (what, value)) from None
    if not (isInt(h) and isInt(w)):
        raise ValueError("%s must be an int or an (h, w) pair, got %r" % (what, value))
    return int(h), int(w)


def windowOutSize(insize, size, stride, pad, dilation):
    """Output length of one spatial axis of a sliding window (conv or pool).

    out = (in + 2*pad - dilation*(size - 1) - 1) // stride + 1
    """
    return (insize + 2 * pad - dilation * (size - 1) - 1) // stride + 1


def windowOutSize2d(inshape, size, stride, pad, dilation):
    """(Ho, Wo) of a sliding window (conv or pool) over an (N, C, H, W) inshape; size, stride, pad
    and dilation are (h, w) pairs, each axis as windowOutSize."""
    return tuple(windowOutSize(inshape[2 + a], size[a], stride[a], pad[a], dilation[a]) for a in (0, 1))


def ceilDiv(a, b):
    """ceil(a / b) for ints, b > 0."""
    return -(-a // b)


def tapRanges(insize, outsize, size, stride, pad, dilation):
    """Where each tap of a sliding window reads inside its input rather than the padding.

    For every tap (i, j), row-major, (first output row, end row, first output column, end
    column): output (oy, ox) reads input (oy*sh + i*dh - ph, ox*sw + j*dw - pw), and it lies inside
    the (H, W) input exactly for rows in [first, end) and columns in [first, end). Pairs are (h, w).
    """
    def axis(outExtent, extent, s, shift):
        lo = min(max(ceilDiv(-shift, s), 0), outExtent)
        return lo, max(lo, min(ceilDiv(extent - shift, s), outExtent))
    return [axis(outsize[0], insize[0], stride[0], i * dilation[0] - pad[0])
            + axis(outsize[1], insize[1], stride[1], j * dilation[1] - pad[1])
            for i in range(size[0]) for j in range(size[1])]


def conv2dOutShape(inshape, outmaps, size, stride, pad, dilation):
    """(N, C, H, W) in -> (N, outmaps, Ho, Wo) out; size..dilation are (h, w) pairs."""
    return (inshape[0], outmaps, *windowOutSize2d(inshape, size, stride, pad, dilation))


def deconvOutSize(insize, size, stride, pad, dilation, postpad):
    """Output length of one spatial axis of a transposed convolution: the length of the input of
    the conv it transposes, plus postpad rows that conv would not have read.

    out = (in - 1)*stride - 2*pad + dilation*(size - 1) + postpad + 1
    """
    return (insize - 1) * stride - 2 * pad + dilation * (size - 1) + postpad + 1


def deconv2dOutShape(inshape, outmaps, size, stride, pad, dilation, postpad):
    """(N, C, H, W) in -> (N, outmaps, Ho, Wo) out of a transposed conv; size..postpad are (h, w) pairs."""
    n, _, h, w = inshape
    ho = deconvOutSize(h, size[0], stride[0], pad[0], dilation[0], postpad[0])
    wo = deconvOutSize(w, size[1], stride[1], pad[1], dilation[1], postpad[1])
    return n, outmaps, ho, wo


def conformsToConv(inshape, outshape, size, stride, pad, dilation):
    """Whether the conv with these (h, w) pairs maps an image of outshape's (H, W) back to exactly
    inshape's: then a transposed conv from inshape to outshape is that conv's backward-data pass.
    False where postpad >= stride (allowed when dilation > stride): the conv would see more rows."""
    return windowOutSize2d(outshape, size, stride, pad, dilation) == tuple(inshape[2:4])


def upsample2dOutShape(inshape, scale):
    """(N, C, H, W) in -> (N, C, H*scale_h, W*scale_w) out; scale is an (h, w) pair."""
    n, c, h, w = inshape
    return n, c, h * scale[0], w * scale[1]


def borders(value, what="pad"):
    """Normalise padding of an image's four borders to (top, bottom, left, right), Python ints >= 0.

    value: an int (all four), an (h, w) pair (top = bottom = h, left = right = w) or a 4-tuple
    (top, bottom, left, right), of ints (Python or numpy, not bool). Raises ValueError
    "<what> must be ..." otherwise.
    """
    try:
        items = (value,) if isInt(value) else tuple(value)
    except TypeError:
        items = None
    if items is None or len(items) not in (1, 2, 4) or not all(isInt(v) for v in items):
        raise ValueError("%s must be an int, an (h, w) pair or (top, bottom, left, right), got %r" % (what, value))
    if any(v < 0 for v in items):
        raise ValueError("%s must be >= 0, got %r" % (what, value))
    items = tuple(int(v) for v in items)
    if len(items) == 1:
        return items * 4
    if len(items) == 2:
        return items[0], items[0], items[1], items[1]
    return items


def pad2dOutShape(inshape, pad):
    """(N, C, H, W) in -> (N, C, H + top + bottom, W + left + right) out; pad is (top, bottom, left, right)."""
    n, c, h, w = inshape
    top, bottom, left, right = pad
    return n, c, h + top + bottom, w + left + right


def positiveSize(name, value, minimum):
    """Check every element of an (h, w) pair is >= minimum; raise ValueError otherwise."""
    if any(v < minimum for v in value):
        raise ValueError("%s must be >= %d, got %s" % (name, minimum, value))
    return value


def convArgs(kind, inmaps, outmaps, groups, size, stride, pad, dilation):
    """The checked hyperparameters of a convolution layer named kind (Conv2D, Deconv2D, ...):
    (inmaps, outmaps, groups) positive ints with both maps divisible by groups, then size, stride,
    pad and dilation as (h, w) pairs (size, stride and dilation >= 1, pad >= 0); ValueError naming
    kind and the argument otherwise."""
    inmaps, outmaps = positiveInt(kind, "inmaps", inmaps), positiveInt(kind, "outmaps", outmaps)
    groups = positiveInt(kind, "groups", groups)
    if inmaps % groups or outmaps % groups:
        raise ValueError("%s: inmaps (%d) and outmaps (%d) must both be divisible by groups (%d)"
                         % (kind, inmaps, outmaps, groups))
    pairs = [positiveSize("%s: %s" % (kind, what), pair(value, "%s: %s" % (kind, what)), least)
             for what, value, least in (("size", size, 1), ("stride", stride, 1), ("pad", pad, 0),
                                        ("dilation", dilation, 1))]
    return (inmaps, outmaps, groups, *pairs)


def checkOut(op, x, out, mayShareMemory):
    """Check out, the array an op is asked to write its result into (None: a new one): C-contiguous
    float32 of x's shape, and x itself or an array that does not overlap x (mayShareMemory: the
    backend's test of two of its arrays). Both backends check here; ValueError naming op otherwise."""
    if out is None:
        return
    if not all(hasattr(out, attr) for attr in ("shape", "dtype", "flags")):
        raise ValueError("%s: out must be an array of this backend, got %s" % (op, type(out).__name__))
    if tuple(out.shape) != tuple(x.shape) or out.dtype != "float32" or not out.flags.c_contiguous:
        raise ValueError("%s: out must be a C-contiguous float32 array of shape %s, got %s %s%s"
                         % (op, tuple(x.shape), out.dtype, tuple(out.shape),
                            "" if out.flags.c_contiguous else " (not contiguous)"))
    if out is not x and mayShareMemory(out, x):
        raise ValueError("%s: out must be the input itself or not overlap it; it shares part of its memory"
                         % op)


def fusedActivation(op, act, inshape=None, y=None):
    """Check act, the activation a batch-norm op fuses into its output: None, or (kind, alpha, beta)
    with kind "relu" or "clip" (the backend contract's batchNormTrain). With inshape (the backward),
    y, the forward's output, must be given with that shape. Both backends check here, so they refuse
    alike; ValueError naming op otherwise."""
    if act is None:
        return
    if not isinstance(act, (tuple, list)) or len(act) != 3:
        raise ValueError("%s: act must be None or (kind, alpha, beta), kind \"relu\" or \"clip\", got %r" % (op, act))
    if act[0] not in ("relu", "clip"):
        raise ValueError("%s: a fused activation is relu or clip, got %r" % (op, act[0]))
    if inshape is not None and (y is None or tuple(y.shape) != tuple(inshape)):
        raise ValueError("%s: a fused activation needs the forward's output y of shape %s, got %s"
                         % (op, tuple(inshape), None if y is None else tuple(y.shape)))
