"""Windows and padding of NCHW maps, shared by the convolutions (conv/, depthwise/, deconv.py) and
pool.py: how a kernel or pooling window of size (kh, kw) with stride, padding and dilation (all
(h, w) pairs) reads a map, as NumPy views and slices.

The output size is shapes.windowOutSize2d; which output rows and columns a tap reads inside the
map (not in the padding) is shapes.tapRanges, cached here as an array for the kernels.
"""

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minidl.shapes import tapRanges


def padded(x, pad, value=0.0):
    """x (N, C, H, W) padded with value by pad=(ph, pw) on each side; x itself when pad is 0."""
    ph, pw = pad
    if ph == 0 and pw == 0:
        return np.asarray(x)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def unpadded(xp, pad, inshape):
    """The (H, W) interior of a padded (N, C, H + 2ph, W + 2pw) gradient, contiguous."""
    ph, pw = pad
    if ph == 0 and pw == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, ph:ph + inshape[2], pw:pw + inshape[3]])


def windows(xp, size, stride, dilation, outsize):
    """Strided view (N, C, kh, kw, Ho, Wo) of padded input xp: element [n, c, i, j, y, x] is
    xp[n, c, y*sh + i*dh, x*sw + j*dw]. No copy."""
    n, c = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = size, stride, dilation, outsize
    return as_strided(xp, (n, c, kh, kw, ho, wo), (sN, sC, sH * dh, sW * dw, sH * sh, sW * sw), writeable=False)


def tapSlice(i, j, stride, dilation, outsize):
    """Index of padded-input pixels that kernel tap (i, j) touches, as (H, W) slices."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, outsize
    return (slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


@functools.lru_cache(maxsize=256)
def tapRangeArray(insize, outsize, size, stride, pad, dilation):
    """shapes.tapRanges as a read-only int64 (kh*kw, 4) array for the kernels (arguments: tuples),
    cached per geometry: a training loop asks for the same few every step (~15 us to build)."""
    ranges = np.array(tapRanges(insize, outsize, size, stride, pad, dilation), dtype=np.int64)
    ranges.flags.writeable = False
    return ranges
