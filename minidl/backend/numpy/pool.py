"""Max and average 2-D pooling on the NumPy backend.

Both read the same strided window view as the convolution (no copies until
the reduction) and scatter gradients back with one vectorised add per window
tap.
"""

import numpy as np

from minidl.backend.numpy.array import host
from minidl.backend.numpy.windows import padded, tapSlice, unpadded, windows
from minidl.shapes import windowOutSize2d

_ONE = (1, 1)


def maxPool2d(x, size, stride, pad):
    n, c = x.shape[:2]
    ho, wo = windowOutSize2d(x.shape, size, stride, pad, _ONE)
    # -inf padding: a padded position never wins the max
    win = windows(padded(x, pad, -np.inf), size, stride, _ONE, (ho, wo))
    flat = win.reshape(n, c, size[0] * size[1], ho, wo)                 # (N, C, kh*kw, Ho, Wo)
    idx = flat.argmax(axis=2)
    y = np.take_along_axis(flat, idx[:, :, None], axis=2)[:, :, 0]
    return host(np.ascontiguousarray(y)), host(idx.astype(np.int32))


def maxPool2dBackward(dy, indices, inshape, size, stride, pad):
    n, c, h, w = inshape
    ho, wo = dy.shape[2:]
    dy, indices = np.asarray(dy), np.asarray(indices)
    dxp = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=np.float32)
    for i in range(size[0]):
        for j in range(size[1]):
            sy, sx = tapSlice(i, j, stride, _ONE, (ho, wo))
            dxp[:, :, sy, sx] += np.where(indices == i * size[1] + j, dy, 0)
    return host(unpadded(dxp, pad, inshape))


def _divisor(inshape, size, stride, pad, includePad, outsize):
    """Per-output-pixel divisor (Ho, Wo): the window area, or its in-image part."""
    if includePad:
        return np.float32(size[0] * size[1])
    ones = padded(np.ones((1, 1, inshape[2], inshape[3]), dtype=np.float32), pad)
    return windows(ones, size, stride, _ONE, outsize).sum(axis=(2, 3))[0, 0]


def avgPool2d(x, size, stride, pad, includePad):
    ho, wo = windowOutSize2d(x.shape, size, stride, pad, _ONE)
    win = windows(padded(x, pad), size, stride, _ONE, (ho, wo))
    y = win.sum(axis=(2, 3), dtype=np.float32)
    y /= _divisor(x.shape, size, stride, pad, includePad, (ho, wo))
    return host(y)


def avgPool2dBackward(dy, inshape, size, stride, pad, includePad):
    n, c, h, w = inshape
    ho, wo = dy.shape[2:]
    g = np.asarray(dy) / _divisor(inshape, size, stride, pad, includePad, (ho, wo))
    dxp = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=np.float32)
    for i in range(size[0]):
        for j in range(size[1]):
            sy, sx = tapSlice(i, j, stride, _ONE, (ho, wo))
            dxp[:, :, sy, sx] += g
    return host(unpadded(dxp, pad, inshape))
