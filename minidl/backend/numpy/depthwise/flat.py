"""Depthwise convolution kernels in the "flat" form (numba; see jit.py).

For multiplier 1 and "same" padding ((kh-1)*dh == 2*ph, (kw-1)*dw == 2*pw), at stride 1 on
small maps and at stride 2 on maps of even height, for batches large enough to pay for the
expanded weights below; plan.py picks it, and the tall-block kernels (tall.py) take every other
case.

Why: the tall-block kernels copy every image row into a padded scratch and back out. On 8x8
maps those are 8-float copies, and their per-copy overhead (~10 ns in numba) was most of the
time: MobileNetV1's 64x256x8x8 backward took 3.0 ms inside a training step, PyTorch 1.6.

The flat form copies no rows. A block of B channels of one image is one contiguous run of
L = B*H*W floats in NCHW. At stride 1 with "same" padding, output pixel P reads input P + off for
tap (i, j), off = (i*dh - ph)*W + (j*dw - pw): one constant offset for the whole run. At stride 2
the outputs are laid out "wide" (H/2 rows of W, the columns past Wo unused), so that wide output P
reads input 2P + off; splitting the run once into its even and odd positions (the "phases") turns
that into a constant offset into one phase. Reads that fall in the zero padding (off the side of
a row, or above or below the plane, which in the run is the neighbouring channel) are cancelled by
zeros in "expanded" weights: per tap, an array over the outputs holding the channel's weight
where the read is valid and 0 where it is not. The phases carry zero margins, so no read needs a
bounds check. Each tap is one long vector loop, and the expanded weights are built once per block
and reused for every image.

Not supported here: multipliers, other padding, other strides, odd heights at stride 2, small
batches (the expanded weights are built per call: below 8 images forward, 16 for the gradients,
the tall blocks are as fast or faster), and stride 1 on large maps, where the tall blocks'
backward wins (24x24 ran 20% slower flat: the weight gradient's per-pixel products are written per
image where the tall blocks' dot products stay in registers).

Non-finite values: a read that falls in the padding takes a real pixel of the run (a neighbouring
row or channel) times a zero weight, and 0 * NaN or 0 * inf is NaN, so a non-finite pixel can also
turn outputs outside its windows NaN; and the weight gradient leaves out the padding reads, whose
product with a non-finite output gradient the formula has. Either way the results are non-finite
somewhere, since every output reads its own window at nonzero expanded weights: the kernels return
the sum of the outputs they wrote, and the ops (__init__.py) hand any call whose sum (or weight gradient)
is not finite to the exact paths.
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.jit import prange

# floats per channel block: its expanded weights (kh*kw*L) stay in the core's L2 cache
FLAT_BLOCK = 2048


@jit.inline
def _blocks(c, hw, chunks):
    """Channels per block: at most FLAT_BLOCK floats, and at least `chunks` blocks when there
    are that many channels, so every thread gets work."""
    per = max(1, min(c, FLAT_BLOCK // hw))
    return max(1, min(per, (c + chunks - 1) // chunks))

@jit.inline
def _expand(w, c0, nb, layout, valid, flip, wexp):
    """wexp[i*kw + j, P] = weight of tap (i, j) of wide output P's channel (of the flipped tap
    when flip), or 0 where that tap reads padding or P is not an output. layout = (rows,
    width, H, W, Ho, Wo): the block's wide layout (nb, rows, width) and the map's sizes;
    valid[t] = the outputs' row and column ranges where tap t reads inside (shapes.tapRanges)."""
    kh, kw = w.shape[2], w.shape[3]
    rows, width = layout[0], layout[1]
    wexp[:, :] = 0.0
    for i in range(kh):
        for j in range(kw):
            t = i * kw + j
            ylo, yhi, xlo, xhi = valid[t, 0], valid[t, 1], valid[t, 2], valid[t, 3]
            si, sj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
            plane = wexp[i * kw + j].reshape(nb, rows, width)
            for k in range(nb):
                plane[k, ylo:yhi, xlo:xhi] = w[c0 + k, 0, si, sj]

@jit.inline
def _margins(s, wd, kh, kw, ph, pw, dh, dw):
    """(lead, length past the run): the zeros a phase needs on either side so that every tap
    read of every wide output falls inside it. Then no read needs a bounds check, and the
    reads that land in the margins get zero weights anyway."""
    lead = -((-ph * wd - pw) // s)
    tail = (((kh - 1) * dh - ph) * wd + (kw - 1) * dw - pw) // s
    return max(lead, 0), max(tail, 0)

@jit.inline
def _tapRun(phases, lead, o, n):
    """x[s*P + o] for P < n, as one unit-stride run: x split into phases (s, lead + ...) by
    position modulo s, from column lead on."""
    s = phases.shape[0]
    return phases[o % s, lead + o // s:lead + o // s + n]

@jit.inlineMath
def _rowTaps(out, phases, lead, wexp, r, kw, o0, dw, init, first):
    """out[P] (+)= sum over j of wexp[r*kw + j, P] * x[s*P + o0 + j*dw] for P < len(out) (x split
    into phases, see _tapRun), starting from init[P] when first."""
    n = out.shape[0]
    if kw == 3:
        # a kernel row of three taps in one pass: out is loaded and stored once per row
        a0, a1, a2 = wexp[r * 3], wexp[r * 3 + 1], wexp[r * 3 + 2]
        s0, s1, s2 = _tapRun(phases, lead, o0, n), _tapRun(phases, lead, o0 + dw, n), \
            _tapRun(phases, lead, o0 + 2 * dw, n)
        if first:
            for q in range(n):
                out[q] = init[q] + a0[q] * s0[q] + a1[q] * s1[q] + a2[q] * s2[q]
        else:
            for q in range(n):
                out[q] += a0[q] * s0[q] + a1[q] * s1[q] + a2[q] * s2[q]
    else:
        if first:
            for q in range(n):
                out[q] = init[q]
        for j in range(kw):
            a, t = wexp[r * kw + j], _tapRun(phases, lead, o0 + j * dw, n)
            for q in range(n):
                out[q] += a[q] * t[q]

@jit.inlineMath
def _rowProducts(prod, g, phases, lead, r, kw, o0, dw):
    """prod[r*kw + j, P] += g[P] * x[s*P + o0 + j*dw] (x split into phases as for _rowTaps).
    Summed over a pixel's valid taps later, these are the weight gradient's terms. One loop per
    tap: fused three to a loop, as _rowTaps does, the three stores kept numba from vectorising
    it (measured 4x slower)."""
    n = g.shape[0]
    for j in range(kw):
        pj, t = prod[r * kw + j], _tapRun(phases, lead, o0 + j * dw, n)
        for q in range(n):
            pj[q] += g[q] * t[q]

@jit.inlineMath
def _tapAdjoint(dphases, g, wexp, t, o):
    """The adjoint of one tap's reads: x[s*P + o] += wexp[t, P] * g[P] for every P, x being split
    into dphases as for _rowTaps. Written as a gather over the phase the tap lands in."""
    n, s, m = g.shape[0], dphases.shape[0], dphases.shape[1]
    sh = o // s
    lo = min(max(0, sh), m)
    hi = max(lo, min(m, n + sh))
    dst = dphases[o % s, lo:hi]
    a = wexp[t, lo - sh:hi - sh]
    gg = g[lo - sh:hi - sh]
    for q in range(hi - lo):
        dst[q] += a[q] * gg[q]

@jit.inlineMath
def _splitPhases(src, phases, lead):
    """phases[k, lead + q] = src[s*q + k]: a run split into its s phases by position modulo s, in
    one long loop (which vectorises), past the phases' zero lead."""
    s = phases.shape[0]
    n = src.shape[0] // s
    if s == 1:
        phases[0, lead:lead + n] = src
    else:
        e, o = phases[0, lead:lead + n], phases[1, lead:lead + n]
        for q in range(n):
            e[q] = src[2 * q]
            o[q] = src[2 * q + 1]

@jit.inlineMath
def _mergePhases(phases, dst):
    """dst[2q + k] = phases[k, q]: _splitPhases' inverse for two phases without margins."""
    e, o = phases[0], phases[1]
    for q in range(phases.shape[1]):
        dst[2 * q] = e[q]
        dst[2 * q + 1] = o[q]

@jit.inline
def _sizes(c, h, wd, ho, wo, kh, kw, ph, pw, dh, dw, chunks):
    """(s, H*W, lead, tail, channels per block, blocks) of a flat convolution of x (N, C, H, W)
    to outputs (Ho, Wo) with kernels (kh, kw)."""
    s = h // ho
    lead, tail = _margins(s, wd, kh, kw, ph, pw, dh, dw)
    per = _blocks(c, h * wd, chunks)
    return s, h * wd, lead, tail, per, (c + per - 1) // per

@jit.inline
def _block(blk, per, c, hw, s):
    """(first channel, channels, run length, wide outputs) of block blk of `per` channels."""
    c0 = blk * per
    nb = min(per, c - c0)
    return c0, nb, nb * hw, nb * hw // s

@jit.inline
def _wideCopy(wide, layout, planes, nb, toPlanes):
    """Between the real outputs of wide (nb*rows*width, laid out as layout says) and planes
    (nb, Ho, Wo): into planes when toPlanes, else into wide (the rest of wide untouched)."""
    rows, width, _, _, ho, wo = layout
    grid = wide.reshape(nb, rows, width)
    for k in range(nb):
        for oy in range(ho):
            for ox in range(wo):
                if toPlanes:
                    planes[k, oy, ox] = grid[k, oy, ox]
                else:
                    grid[k, oy, ox] = planes[k, oy, ox]

@jit.inlineMath
def _total(run):
    """The sum of run (non-finite when an element is; a vector loop over values still in cache)."""
    t = np.float32(0.0)
    for q in range(run.shape[0]):
        t += run[q]
    return t

@jit.parallel
def taps(x, w, b, y, flip, valid, ph, pw, dh, dw, chunks):
    """y (N, C, Ho, Wo) = the "same" depthwise correlation of x (N, C, H, W) with w (C, 1, kh, kw)
    at the stride H/Ho (1, or 2 with H even), plus b (C,) when not empty. With flip (stride 1
    only) the kernel is flipped: that is the input gradient, x being the output gradient.
    valid (kh*kw, 4): shapes.tapRanges of the convolution. Returns the sum of the outputs
    computed (see the module's docstring)."""
    n, c, h, wd = x.shape
    ho, wo = y.shape[2], y.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    s, hw, lead, tail, per, nblk = _sizes(c, h, wd, ho, wo, kh, kw, ph, pw, dh, dw, chunks)
    # the wide layout of one plane's outputs, (rows, width, H, W, Ho, Wo): wide output P reads
    # input s*P + offset, so a plane holds H/s rows of W (stride 1: the output itself; stride 2:
    # output rows padded to the input's width, the columns past Wo never used)
    layout = (h // s, wd, h, wd, ho, wo)
    xf = x.reshape(n, c * hw)
    yf = y.reshape(n, c * ho * wo)
    total = 0.0
    for blk in prange(nblk):
        c0, nb, run, nw = _block(blk, per, c, hw, s)
        wexp = np.empty((kh * kw, nw), dtype=np.float32)
        _expand(w, c0, nb, layout, valid, flip, wexp)
        init = np.zeros(nw, dtype=np.float32)
        if b.shape[0] > 0:
            for k in range(nb):
                init[k * nw // nb:(k + 1) * nw // nb] = b[c0 + k]
        phases = np.zeros((s, lead + nw + tail), dtype=np.float32)     # the margins stay zero
        wide = np.empty(nw, dtype=np.float32)
        part = 0.0
        for im in range(n):
            _splitPhases(xf[im, c0 * hw:c0 * hw + run], phases, lead)
            out = yf[im, c0 * ho * wo:c0 * ho * wo + run] if s == 1 else wide
            for r in range(kh):
                _rowTaps(out, phases, lead, wexp, r, kw, (r * dh - ph) * wd - pw, dw, init, r == 0)
            part += _total(out)
            if s > 1:
                _wideCopy(wide, layout, y[im, c0:c0 + nb], nb, True)
        total += part
    return total

@jit.parallel
def backward(x, dy, w, dx, wgrad, bgrad, wantData, wantParams, valid, ph, pw, dh, dw, chunks):
    """The input gradient dx (overwritten, when wantData) and the weight and bias gradients
    (accumulated into wgrad (C, 1, kh, kw) and bgrad (C,) when not empty, when wantParams) of
    taps, in one pass over dy. x is read only for wantParams. The weight gradient's
    products are summed per pixel over the batch first, in the block's prod arrays, and over
    each plane's valid pixels once at the end. valid as for taps. Returns the sum of dx's
    values (0 without wantData)."""
    n, c, h, wd = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    s, hw, lead, tail, per, nblk = _sizes(c, h, wd, ho, wo, kh, kw, ph, pw, dh, dw, chunks)
    layout = (h // s, wd, h, wd, ho, wo)      # as taps'
    xf = x.reshape(n, c * hw)
    gf = dy.reshape(n, c * ho * wo)
    dxf = dx.reshape(n, c * hw)
    dxSum = 0.0
    for blk in prange(nblk):
        c0, nb, run, nw = _block(blk, per, c, hw, s)
        wexp = np.empty((kh * kw, nw), dtype=np.float32)
        if wantData:
            # stride 1 gathers with the flipped kernel; stride 2 scatters each tap's reads back
            _expand(w, c0, nb, layout, valid, s == 1, wexp)
        zero = np.zeros(nw, dtype=np.float32)
        prod = np.zeros((kh * kw, nw), dtype=np.float32)
        gsum = np.zeros(nw, dtype=np.float32)
        phases = np.zeros((s, lead + nw + tail), dtype=np.float32)      # margins stay zero
        gphase = np.zeros((1, lead + nw + tail), dtype=np.float32)
        dphases = np.empty((s, nw), dtype=np.float32)
        wide = np.zeros(nw, dtype=np.float32)       # stride 2: the columns past Wo stay zero
        part = 0.0
        for im in range(n):
            if s == 1:
                g = gf[im, c0 * hw:c0 * hw + run]
            else:
                # dy laid out wide, as the forward's outputs were
                _wideCopy(wide, layout, dy[im, c0:c0 + nb], nb, False)
                g = wide
            if wantParams:
                _splitPhases(xf[im, c0 * hw:c0 * hw + run], phases, lead)
            if wantData and s == 1:
                _splitPhases(g, gphase, lead)
            for r in range(kh):
                o0 = (r * dh - ph) * wd - pw
                if wantData and s == 1:
                    _rowTaps(dxf[im, c0 * hw:c0 * hw + run], gphase, lead, wexp, r, kw, o0, dw, zero, r == 0)
                if wantParams:
                    _rowProducts(prod, g, phases, lead, r, kw, o0, dw)
            if wantData and s > 1:
                dphases[:, :] = 0.0
                for t in range(kh * kw):
                    _tapAdjoint(dphases, g, wexp, t, ((t // kw) * dh - ph) * wd + (t % kw) * dw - pw)
                _mergePhases(dphases, dxf[im, c0 * hw:c0 * hw + run])
            if wantData:
                part += _total(dxf[im, c0 * hw:c0 * hw + run])
            if wantParams:
                for p in range(nw):
                    gsum[p] += g[p]
        dxSum += part
        if not wantParams:
            continue
        rows = h // s
        for t in range(kh * kw):
            ylo, yhi, xlo, xhi = valid[t, 0], valid[t, 1], valid[t, 2], valid[t, 3]
            plane = prod[t].reshape(nb, rows, wd)
            for k in range(nb):
                total = 0.0
                for y in range(ylo, yhi):
                    for xx in range(xlo, xhi):
                        total += plane[k, y, xx]
                wgrad[c0 + k, 0, t // kw, t % kw] += total
        for k in range(nb):
            if bgrad.shape[0] > 0:
                total = 0.0
                for q in range(nw // nb):
                    total += gsum[k * nw // nb + q]
                bgrad[c0 + k] += total
    return dxSum
