"""Upsampling and padding on the NumPy backend.

Every forward here is a gather: each output pixel reads its source pixel(s) through one index map
per axis (nearest: oy // s; bilinear: two taps and their weights; pad: the mirrored or clamped
position). Every backward is the exact transpose of that gather, done one axis at a time: the
gradient of each output row is added into the row it was read from (``_foldRows``), so a pixel's
gradient sums exactly the outputs that read it, NaN and infinities included, and nothing else.
The column axis goes through the same row loop on a transposed copy, as adding single strided
columns measured 20x slower than whole rows.
"""

import numpy as np

from minidl.backend.numpy.array import host, new
from minidl.shapes import pad2dOutShape, upsample2dOutShape


def _transposed(a):
    """(N, C, A, B) -> a C-contiguous (N, C, B, A) copy (in a workspace buffer)."""
    n, c, rows, cols = a.shape
    out = new((n, c, cols, rows))
    np.copyto(out, np.swapaxes(a, 2, 3))
    return out


def _take(a, index, axis):
    """a's slices index[0], index[1], ... along axis, into a workspace buffer. np.take, as indexing
    a[:, :, :, index] measured 7x slower; mode "clip" (the indices are always valid) as "raise"
    copies through a buffer; a workspace buffer, as a fresh array page-faults again every call."""
    shape = list(a.shape)
    shape[axis] = len(index)
    return np.take(a, index, axis=axis, out=new(tuple(shape)), mode="clip")


def _foldRows(g, taps, size, step=1):
    """The transpose of a row gather along axis 2: (N, C, R, L) -> (N, C, size, L), where each tap
    (index, weight) sends row j of g, times weight[j] (weight None: 1), into row index[j].

    Rows go in runs: the rows j = p, p + step, p + 2*step, ... of each phase p in turn, cut where
    index stops rising by exactly 1, so each run is one slice add onto distinct rows (an upsampling
    by `step` has one long run per phase, padding one run for the inner rows and one per border
    row). With step 1 each output row is added to in increasing j, as a row-by-row loop would."""
    n, c, rows, l = g.shape
    out = new((n, c, size, l))
    out.fill(0.0)
    for index, weight in taps:
        for p in range(min(step, rows)):
            js = np.arange(p, rows, step)
            ks = index[js]
            cuts = np.flatnonzero(np.diff(ks) != 1) + 1
            for first, end in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(js)]))):
                j0, k0, count = js[first], ks[first], end - first
                part = g[:, :, j0:j0 + (count - 1) * step + 1:step]
                out[:, :, k0:k0 + count] += part if weight is None else part * weight[js[first:end], None]
    return out


def _foldBothAxes(dy, tapsH, tapsW, inshape, step=(1, 1)):
    """dx (inshape) for a separable gather given per axis as taps (see _foldRows)."""
    rows = _foldRows(np.asarray(dy), tapsH, inshape[2], step[0])                        # (N, C, H, Wo)
    return _transposed(_foldRows(_transposed(rows), tapsW, inshape[3], step[1]))     # (N, C, H, W)


# ---- upsampling -------------------------------------------------------------------------------------

def linearTaps(insize, outsize, scale):
    """PyTorch's align_corners=False taps along one axis: for each output position o, the rows
    (i0, i1) and weights (l0, l1), float32, with y[o] = l0*x[i0] + l1*x[i1]. The source coordinate
    (o + 0.5)/scale - 0.5 is clamped at 0; twice scale times it is the integer 2*o + 1 - scale, so
    i0 and l1 come from integers exactly (l1 = remainder / (2*scale), rounded once to float32, as
    the CUDA kernel computes it)."""
    num = np.maximum(2 * np.arange(outsize, dtype=np.int64) + 1 - scale, 0)
    i0 = num // (2 * scale)
    l1 = (num - i0 * 2 * scale).astype(np.float32) / np.float32(2 * scale)
    return i0, np.minimum(i0 + 1, insize - 1), np.float32(1) - l1, l1


def upsample2d(x, scale, mode):
    x = np.asarray(x)
    n, c, h, w = x.shape
    sh, sw = scale
    _, _, ho, wo = upsample2dOutShape(x.shape, scale)
    if mode == "nearest":
        wide = _take(x, np.arange(wo) // sw, 3)                                   # (N, C, H, Wo)
        y = new((n, c, h, sh, wo))
        y[...] = wide[:, :, :, None, :]           # each row sh times: y[.., i, r, :] = wide[.., i, :]
        return host(y.reshape(n, c, ho, wo))
    h0, h1, hl0, hl1 = linearTaps(h, ho, sh)
    w0, w1, wl0, wl1 = linearTaps(w, wo, sw)
    # PyTorch's order of operations: l0h * (l0w*x00 + l1w*x01) + l1h * (l0w*x10 + l1w*x11)
    cols, tap = _take(x, w0, 3), _take(x, w1, 3)
    cols *= wl0
    tap *= wl1
    cols += tap                                                                 # (N, C, H, Wo)
    y, tap = _take(cols, h0, 2), _take(cols, h1, 2)
    y *= hl0[:, None]
    tap *= hl1[:, None]
    y += tap
    return host(y)


def upsample2dBackward(dy, inshape, scale, mode):
    n, c, h, w = inshape
    sh, sw = scale
    dy = np.asarray(dy)
    if mode == "nearest":
        # the sum of each (sh, sw) block, phase by phase (strided adds; numpy's sum over two short
        # axes measured ~10x slower)
        blocks = dy.reshape(n, c, h, sh, w, sw)
        dx = new((n, c, h, w))
        dx[...] = blocks[:, :, :, 0, :, 0]
        for r in range(sh):
            for t in range(sw):
                if r or t:
                    dx += blocks[:, :, :, r, :, t]
        return host(dx)
    h0, h1, hl0, hl1 = linearTaps(h, dy.shape[2], sh)
    w0, w1, wl0, wl1 = linearTaps(w, dy.shape[3], sw)
    return host(_foldBothAxes(dy, [(h0, hl0), (h1, hl1)], [(w0, wl0), (w1, wl1)], inshape, scale))


# ---- padding ----------------------------------------------------------------------------------------

def padSources(size, before, after, mode):
    """For each position of a padded axis, the input position it copies (reflect or replicate)."""
    i = np.arange(-before, size + after, dtype=np.int64)
    if mode == "reflect":   # mirrored about the edge pixel (pad < size, so one reflection suffices)
        return np.where(i < 0, -i, np.where(i >= size, 2 * (size - 1) - i, i))
    return np.clip(i, 0, size - 1)


def pad2d(x, pad, mode, value):
    x = np.asarray(x)
    n, c, h, w = x.shape
    top, bottom, left, right = pad
    outshape = pad2dOutShape(x.shape, pad)
    if mode == "constant":
        y = new(outshape)
        y.fill(value)
        y[:, :, top:top + h, left:left + w] = x
        return host(y)
    rows, cols = padSources(h, top, bottom, mode), padSources(w, left, right, mode)
    return host(_take(_take(x, rows, 2), cols, 3))


def pad2dBackward(dy, inshape, pad, mode):
    n, c, h, w = inshape
    top, bottom, left, right = pad
    dy = np.asarray(dy)
    if mode == "constant":
        return host(np.ascontiguousarray(dy[:, :, top:top + h, left:left + w]))
    rows, cols = padSources(h, top, bottom, mode), padSources(w, left, right, mode)
    return host(_foldBothAxes(dy, [(rows, None)], [(cols, None)], inshape))
