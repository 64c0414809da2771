"""Depthwise convolution kernels on "tall" blocks of images (numba; see jit.py).

These take every depthwise geometry the flat kernels (flat.py) do not: channel multipliers, any
padding, stride and dilation, large maps, and small batches (plan.py says which). Weights
(C*M, 1, kh, kw), output channel c*M + m from input channel c.

How: the kernels work on a block of B images of one channel at a time, stacked into a private
zero-padded "tall" scratch plane: the padding rows of each image separate it from the next, so one
kernel tap is a single contiguous loop over the whole block with no bounds checks. Outputs
computed across a seam between images, or in the padding columns, are garbage that is never copied
out. B is chosen so a block holds ~BLOCK floats: small maps (4x4, 8x8) get long vector loops
instead of a per-image overhead. Two numba details matter: an index like q + off could be negative
as far as numba knows, and its wraparound check on every element stops vectorisation (so each
tap's run is sliced first and indexed with the bare loop variable); and a step-sliced view is
typed "any layout", so its loops and copies go element by element (strided passes reuse the
stride-1 loops instead, and only their copies in and out take steps; the forward at stride 2
splits the block by row parity first, forwardStride2, so it computes only the rows it keeps).

Non-finite values: the weight gradients run over seams and padding columns too, and the gather
reads zeros times every tap, so a non-finite value can give NaN where the formula does not; the
ops in __init__.py check and fall back (see there).
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.jit import chunk, prange

BLOCK = 4096


@jit.inline
def _blockImages(n, planeSize):
    """Images per block of one channel (at least 1, at most n)."""
    return max(1, min(n, BLOCK // planeSize))


@jit.inline
def _blockOf(item, nb, bi, n):
    """(channel, first image, images) of work item `item`: channel item // nb, block item % nb of
    its nb blocks of at most bi images out of n."""
    ci = item // nb
    n0 = (item - ci * nb) * bi
    return ci, n0, min(bi, n - n0)


@jit.inline
def _tallScratch(bi, rows, width):
    """A zeroed flat store and its (bi, rows, width) view: one spare row at the end, since a
    tap's contiguous run over the block reads up to (kw - 1) * dw past it."""
    store = np.zeros((bi * rows + 1) * width, dtype=np.float32)
    return store, store[:bi * rows * width].reshape(bi, rows, width)


@jit.inline
def _place(tall, k, top, left, sh, sw, src):
    """tall[k, top + y*sh, left + x*sw] = src[y, x]; a step-less slice when both steps are 1, since
    that copies as vectors."""
    ho, wo = src.shape
    if sh == 1 and sw == 1:
        tall[k, top:top + ho, left:left + wo] = src
    else:
        # element by element, as a step-sliced copy goes anyway; written out, it spares every
        # cold compile numba's 2-D shape-mismatch message (~2 s; the step-less copy above is
        # converted to a loop without one)
        for y in range(ho):
            row = tall[k, top + y * sh]
            for q in range(wo):
                row[left + q * sw] = src[y, q]


@jit.inlineMath
def _taps(acc, store, w, co, span, width, dh, dw, flip, init, add, plane):
    """acc[q] (+)= sum over taps (i, j) of w[co, 0, i, j] * store[q + offset of (i, j)], q < span, the
    offset being (i*dh*width + j*dw), or that of the flipped tap (kh-1-i, kw-1-j) when flip.
    Without add, acc starts at init. A kernel row of three taps goes in one pass, so acc is
    loaded and stored once per row rather than once per tap (measured 15-25% off the depthwise
    forward on MobileNet's shapes). plane > 0: store holds two row-parity planes `plane` floats
    apart (forwardStride2), and the r-th row of tap offsets (r*dh rows down the padded block)
    starts in plane (r*dh) & 1 at its row (r*dh) >> 1."""
    kh, kw = w.shape[2], w.shape[3]
    for r in range(kh):
        i = kh - 1 - r if flip else r
        d = r * dh
        base = (d & 1) * plane + (d >> 1) * width if plane > 0 else d * width
        if kw == 3:
            w0, w1, w2 = w[co, 0, i, 0], w[co, 0, i, 1], w[co, 0, i, 2]
            if flip:
                w0, w2 = w2, w0
            t0 = store[base:base + span]
            t1 = store[base + dw:base + dw + span]
            t2 = store[base + 2 * dw:base + 2 * dw + span]
            if r == 0 and not add:
                for q in range(span):
                    acc[q] = init + w0 * t0[q] + w1 * t1[q] + w2 * t2[q]
            else:
                for q in range(span):
                    acc[q] += w0 * t0[q] + w1 * t1[q] + w2 * t2[q]
        else:
            if r == 0 and not add:
                acc[:span] = init
            for c in range(kw):
                wv = w[co, 0, i, kw - 1 - c if flip else c]
                tap = store[base + c * dw:base + c * dw + span]
                for q in range(span):
                    acc[q] += wv * tap[q]


@jit.parallel
def forward(x, w, b, y, sh, sw, ph, pw, dh, dw, chunks):
    """The stride-1 correlation over a tall block, read out at the strided positions: a strided
    conv does sh*sw times the arithmetic it needs, but in long vector loops rather than
    step-sliced ones. At stride (2, 2) forwardStride2 runs instead (only the rows kept); this one
    remains the flat kernels' fallback there, and takes every other stride."""
    n, c, h, wd = x.shape
    cm, _, kh, kw = w.shape
    m = cm // c
    ho, wo = y.shape[2], y.shape[3]
    hp, wp = h + 2 * ph, wd + 2 * pw
    bi = _blockImages(n, hp * wp)
    nb = (n + bi - 1) // bi
    chunks = min(c * nb, chunks)
    for t in prange(chunks):
        store, tall = _tallScratch(bi, hp, wp)      # padding stays zero
        acc = np.empty(bi * hp * wp, dtype=np.float32)
        lo, hi = chunk(t, chunks, c * nb)
        for item in range(lo, hi):
            ci, n0, nbi = _blockOf(item, nb, bi, n)
            for k in range(nbi):
                tall[k, ph:ph + h, pw:pw + wd] = x[n0 + k, ci]
            span = ((nbi - 1) * hp + sh * (ho - 1) + 1) * wp
            for mm in range(m):
                co = ci * m + mm
                _taps(acc, store, w, co, span, wp, dh, dw, False, b[co] if b.shape[0] > 0 else np.float32(0.0),
                      False, 0)
                for k in range(nbi):
                    out = y[n0 + k, co]
                    for oy in range(ho):
                        base = (k * hp + oy * sh) * wp
                        if sw == 1:
                            out[oy, :] = acc[base:base + wo]
                        else:
                            out[oy, :] = acc[base:base + sw * (wo - 1) + 1:sw]


@jit.inline
def _placePhases(store, rows, k, hq, wp, ph, pw, src):
    """Padded row r = y + ph of src to row k*hq + (r >> 1) of phase plane r & 1 of the flat store (two
    planes of `rows` rows of wp), at column pw: whole rows, so the copies go as vectors."""
    h, wd = src.shape
    for yy in range(h):
        r = yy + ph
        start = (r & 1) * rows * wp + (k * hq + (r >> 1)) * wp + pw
        store[start:start + wd] = src[yy]


@jit.parallel
def forwardStride2(x, w, b, y, ph, pw, dh, dw, chunks):
    """forward at stride (2, 2), computing only the rows kept. The padded block is split into two
    phase planes by row parity (hq rows of wp pixels per image): tap (i, j) of output row oy reads
    plane (i*dh) & 1 at row oy + (i*dh >> 1), so each tap is again one contiguous run over the block,
    half as long as forward's (which computes every row of the stride-1 correlation and keeps every
    other one). The columns are still computed at stride 1 and read out at stride 2: splitting them
    by parity too took more in the copies than it saved (measured: plan.py). The arithmetic of each
    output is forward's, term for term."""
    n, c, h, wd = x.shape
    cm, _, kh, kw = w.shape
    m = cm // c
    ho, wo = y.shape[2], y.shape[3]
    hq, wp = (h + 2 * ph + 1) >> 1, wd + 2 * pw
    bi = _blockImages(n, 2 * hq * wp)
    nb = (n + bi - 1) // bi
    rows = bi * hq + 1                          # one spare row: a run at the largest offset passes the block
    chunks = min(c * nb, chunks)
    for t in prange(chunks):
        store = np.zeros(2 * rows * wp, dtype=np.float32)       # padding stays zero
        acc = np.empty(bi * hq * wp, dtype=np.float32)
        lo, hi = chunk(t, chunks, c * nb)
        for item in range(lo, hi):
            ci, n0, nbi = _blockOf(item, nb, bi, n)
            for k in range(nbi):
                _placePhases(store, rows, k, hq, wp, ph, pw, x[n0 + k, ci])
            span = ((nbi - 1) * hq + ho) * wp
            for mm in range(m):
                co = ci * m + mm
                init = b[co] if b.shape[0] > 0 else np.float32(0.0)
                _taps(acc, store, w, co, span, wp, dh, dw, False, init, False, rows * wp)
                for k in range(nbi):
                    out = y[n0 + k, co]
                    for oy in range(ho):
                        base = (k * hq + oy) * wp
                        out[oy, :] = acc[base:base + 2 * (wo - 1) + 1:2]


@jit.parallel
def backwardDataGather(dy, w, dx, sh, sw, ph, pw, dh, dw, chunks):
    """dx (overwritten) for dy when the padding lies within the kernel's reach ((kh-1)*dh >= ph and
    (kw-1)*dw >= pw, the usual case): the output gradient, laid on a zero grid (zero-stuffed
    between its pixels when strided), correlated with the flipped kernel."""
    n, c, h, wd = dx.shape
    cm, _, kh, kw = w.shape
    m = cm // c
    top, left = (kh - 1) * dh - ph, (kw - 1) * dw - pw
    hg, wg = h + (kh - 1) * dh, wd + (kw - 1) * dw
    bi = _blockImages(n, hg * wg)
    nb = (n + bi - 1) // bi
    chunks = min(c * nb, chunks)
    for t in prange(chunks):
        store, tall = _tallScratch(bi, hg, wg)      # zero but where dy is placed
        acc = np.empty(bi * hg * wg, dtype=np.float32)
        lo, hi = chunk(t, chunks, c * nb)
        for item in range(lo, hi):
            ci, n0, nbi = _blockOf(item, nb, bi, n)
            span = ((nbi - 1) * hg + h) * wg
            for mm in range(m):
                co = ci * m + mm
                for k in range(nbi):
                    _place(tall, k, top, left, sh, sw, dy[n0 + k, co])
                _taps(acc, store, w, co, span, wg, dh, dw, True, np.float32(0.0), mm > 0, 0)
            for k in range(nbi):
                out = dx[n0 + k, ci]
                for iy in range(h):
                    base = (k * hg + iy) * wg
                    out[iy, :] = acc[base:base + wd]


@jit.parallel
def backwardDataScatter(dy, w, dx, sh, sw, ph, pw, dh, dw, chunks):
    """dx (overwritten) for dy when the padding is wider than the kernel's reach: each output
    gradient pixel scattered into a padded plane per (image, channel)."""
    n, c, h, wd = dx.shape
    cm, _, kh, kw = w.shape
    m = cm // c
    ho, wo = dy.shape[2], dy.shape[3]
    chunks = min(n * c, chunks)
    for t in prange(chunks):
        buf = np.empty((h + 2 * ph, wd + 2 * pw), dtype=np.float32)
        lo, hi = chunk(t, chunks, n * c)
        for p in range(lo, hi):
            i0 = p // c
            ci = p - i0 * c
            buf[:, :] = 0.0
            for mm in range(m):
                co = ci * m + mm
                g = dy[i0, co]
                for oy in range(ho):
                    grow = g[oy]
                    for i in range(kh):
                        row = buf[oy * sh + i * dh]
                        for j in range(kw):
                            wv = w[co, 0, i, j]
                            strided = row[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                            for ox in range(wo):
                                strided[ox] += wv * grow[ox]
            dx[i0, ci] = buf[ph:ph + h, pw:pw + wd]


@jit.inlineMath
def _tapDots(sums, g, store, span, width, kh, kw, dh, dw):
    """sums[i*kw + j] += dot(g[:span], store[i*dh*width + j*dw:][:span]) for every tap; a kernel
    row of three taps in one pass, so g is loaded once per row."""
    for i in range(kh):
        base = i * dh * width
        if kw == 3:
            t0 = store[base:base + span]
            t1 = store[base + dw:base + dw + span]
            t2 = store[base + 2 * dw:base + 2 * dw + span]
            p0 = p1 = p2 = np.float32(0.0)
            for q in range(span):
                gq = g[q]
                p0 += gq * t0[q]
                p1 += gq * t1[q]
                p2 += gq * t2[q]
            sums[i * 3] += p0
            sums[i * 3 + 1] += p1
            sums[i * 3 + 2] += p2
        else:
            for j in range(kw):
                tap = store[base + j * dw:base + j * dw + span]
                part = np.float32(0.0)
                for q in range(span):
                    part += g[q] * tap[q]
                sums[i * kw + j] += part


@jit.parallel
def backwardParams(x, dy, wgrad, bgrad, sh, sw, ph, pw, dh, dw):
    """wgrad[co, 0, i, j] += sum over images and outputs of dy * (the input tap (i, j) read);
    dy is laid on a grid aligned with the padded input (zero-stuffed when strided), so each tap
    is one dot product over the block."""
    n, c, h, wd = x.shape
    cm, _, kh, kw = wgrad.shape
    m = cm // c
    ho = dy.shape[2]
    hp, wp = h + 2 * ph, wd + 2 * pw
    bi = _blockImages(n, hp * wp)
    for co in prange(cm):
        ci = co // m
        store, tall = _tallScratch(bi, hp, wp)      # padding stays zero
        gstore = np.zeros(bi * hp * wp, dtype=np.float32)
        grid = gstore.reshape(bi, hp, wp)
        sums = np.zeros(kh * kw)
        bacc = 0.0
        for n0 in range(0, n, bi):
            nbi = min(bi, n - n0)
            for k in range(nbi):
                tall[k, ph:ph + h, pw:pw + wd] = x[n0 + k, ci]
                _place(grid, k, 0, 0, sh, sw, dy[n0 + k, co])
            span = ((nbi - 1) * hp + sh * (ho - 1) + 1) * wp
            g = gstore[:span]
            _tapDots(sums, g, store, span, wp, kh, kw, dh, dw)
            if bgrad.shape[0] > 0:
                bacc += g.sum()
        for t in range(kh * kw):
            wgrad[co, 0, t // kw, t % kw] += sums[t]
        if bgrad.shape[0] > 0:
            bgrad[co] += bacc


@jit.parallel
def backward(x, dy, w, dx, wgrad, bgrad, sh, sw, ph, pw, dh, dw):
    """backwardDataGather and backwardParams in one pass over dy, for "same"
    padding ((kh-1)*dh == 2*ph and (kw-1)*dw == 2*pw, MobileNet's 3x3 pad 1 at either stride;
    the caller checks). Then the backward-data grid (dy placed at (ph, pw)) has the padded
    input's pitch, and read from offset ph*wp + pw it is the weight gradient's grid (dy placed
    at (0, 0)): each image block of dy is gathered once for both. Parallel over input channels."""
    n, c, h, wd = x.shape
    cm, _, kh, kw = w.shape
    m = cm // c
    ho = dy.shape[2]
    hp, wp = h + 2 * ph, wd + 2 * pw
    bi = _blockImages(n, hp * wp)
    shift = ph * wp + pw
    for ci in prange(c):
        xstore, xtall = _tallScratch(bi, hp, wp)      # padding stays zero
        gstore, gtall = _tallScratch(bi, hp, wp)      # zero but where dy is placed
        acc = np.empty(bi * hp * wp, dtype=np.float32)
        sums = np.zeros((m, kh * kw))
        bacc = np.zeros(m)
        for n0 in range(0, n, bi):
            nbi = min(bi, n - n0)
            for k in range(nbi):
                xtall[k, ph:ph + h, pw:pw + wd] = x[n0 + k, ci]
            spanData = ((nbi - 1) * hp + h) * wp
            spanParams = ((nbi - 1) * hp + sh * (ho - 1) + 1) * wp
            for mm in range(m):
                co = ci * m + mm
                for k in range(nbi):
                    _place(gtall, k, ph, pw, sh, sw, dy[n0 + k, co])
                _taps(acc, gstore, w, co, spanData, wp, dh, dw, True, np.float32(0.0), mm > 0, 0)
                g = gstore[shift:shift + spanParams]
                _tapDots(sums[mm], g, xstore, spanParams, wp, kh, kw, dh, dw)
                if bgrad.shape[0] > 0:
                    bacc[mm] += g.sum()
            for k in range(nbi):
                out = dx[n0 + k, ci]
                for iy in range(h):
                    base = (k * hp + iy) * wp
                    out[iy, :] = acc[base:base + wd]
        for mm in range(m):
            co = ci * m + mm
            for t in range(kh * kw):
                wgrad[co, 0, t // kw, t % kw] += sums[mm, t]
            if bgrad.shape[0] > 0:
                bgrad[co] += bacc[mm]
