"""Shape arithmetic, in one place.

Every module, both backends and the tests compute convolution and pooling
geometry through these helpers, so a formula is never written twice.
"""


def pair(value, what="value"):
    """Normalise an int or an (h, w) pair to a tuple of two ints."""
    if isinstance(value, bool):
        raise ValueError("%s must be an int or an (h, w) pair, got %r" % (what, value))
    if isinstance(value, int):
        return value, value
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError("%s must be an int or an (h, w) pair, got %r" % (what, value)) from None
    if not (isinstance(h, int) and isinstance(w, int)) or isinstance(h, bool) or isinstance(w, bool):
        raise ValueError("%s must be an int or an (h, w) pair, got %r" % (what, value))
    return h, w


def windowOutSize(insize, size, stride, pad, dilation):
    """Output length of one spatial axis of a sliding window (conv or pool).

    out = (in + 2*pad - dilation*(size - 1) - 1) // stride + 1
    """
    return (insize + 2 * pad - dilation * (size - 1) - 1) // stride + 1


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
    n, _, h, w = inshape
    ho = windowOutSize(h, size[0], stride[0], pad[0], dilation[0])
    wo = windowOutSize(w, size[1], stride[1], pad[1], dilation[1])
    return n, outmaps, ho, wo


def positiveSize(name, value, minimum):
    """Check every element of an (h, w) pair is >= minimum; raise ValueError otherwise."""
    if any(v < minimum for v in value):
        raise ValueError("%s must be >= %d, got %s" % (name, minimum, value))
    return value
