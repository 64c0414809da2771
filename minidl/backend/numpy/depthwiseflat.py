"""numba kernels for depthwise convolution on small maps: the "flat" form (optional, as accel.py).

Applies to stride 1, multiplier 1 and "same" padding ((kh-1)*dh == 2*ph, (kw-1)*dw == 2*pw), on
maps of at most FLAT_MAX_PLANE pixels; depthwise.py picks it, and accel.py's tall-block kernels
take every other case.

Why: the tall-block kernels copy every image row into a padded scratch and back out. On 8x8
maps those are 8-float copies, and their per-copy overhead (~10 ns in numba) was most of the
time: MobileNetV1's 64x256x8x8 backward took 3.0 ms inside a training step, PyTorch 1.6.

The flat form copies nothing. A block of B channels of one image is one contiguous run of
L = B*H*W floats in NCHW, and for "same" padding at stride 1 output pixel p reads input p + off
for tap t, off = (i*dh - ph)*W + (j*dw - pw): one constant offset for the whole run. Reads that
fall in the zero padding (off the side of a row, or above or below the plane, which in the run
is the neighbouring channel) are cancelled by zeros in "expanded" weights: per tap, an L-float
array holding the channel's weight where the read is valid and 0 where it is not. So each tap is
one long vector loop reading x and writing y in place, and the expanded weights are built once
per block and reused for every image.

Not supported here (depthwise.py routes them to accel.py): strides, multipliers, other padding,
large maps (there the tall blocks win: 32x32 maps ran 20% slower flat, as each image's block is
a single plane). Under fastmath, like the other kernels, a non-finite input may also turn a
neighbouring output pixel non-finite (0 * inf), where an exact convolution would not.
"""

import numpy as np

from minidl.backend.numpy import accel

# largest map (H*W) the flat form takes; measured faster through 16x16, slower at 32x32
FLAT_MAX_PLANE = 256
# floats per channel block: its expanded weights (kh*kw*L) stay in the core's L2 cache
FLAT_BLOCK = 2048


def applies(inshape, W, stride, pad, dilation):
    """Whether the flat kernels take this depthwise convolution."""
    c, h, wd = inshape[1], inshape[2], inshape[3]
    kh, kw = W.shape[2], W.shape[3]
    return (accel.enabled and W.shape[0] == c and stride == (1, 1) and h * wd <= FLAT_MAX_PLANE
            and (kh - 1) * dilation[0] == 2 * pad[0] and (kw - 1) * dilation[1] == 2 * pad[1])


if accel.enabled:
    from numba import njit, prange

    _jit = dict(parallel=True, cache=True, fastmath=True, nogil=True)

    @njit(cache=True, inline="always")
    def _blocks(c, hw, chunks):
        """Channels per block: at most FLAT_BLOCK floats, and at least `chunks` blocks when there
        are that many channels, so every thread gets work."""
        per = max(1, min(c, FLAT_BLOCK // hw))
        return max(1, min(per, (c + chunks - 1) // chunks))

    @njit(cache=True, inline="always")
    def _validRange(extent, k, dk, pk):
        """[lo, hi): the output rows (or columns) whose tap k reads inside an extent of that length."""
        shift = k * dk - pk
        return min(max(0, -shift), extent), max(min(extent, extent - shift), 0)

    @njit(cache=True, inline="always")
    def _expand(w, c0, nb, h, wd, ph, pw, dh, dw, flip, wexp):
        """wexp[i*kw + j, p] = weight of tap (i, j) of p's channel (of the flipped tap when flip),
        or 0 where that tap reads padding."""
        kh, kw = w.shape[2], w.shape[3]
        wexp[:, :nb * h * wd] = 0.0
        for i in range(kh):
            ylo, yhi = _validRange(h, i, dh, ph)
            for j in range(kw):
                xlo, xhi = _validRange(wd, j, dw, pw)
                si, sj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
                plane = wexp[i * kw + j, :nb * h * wd].reshape(nb, h, wd)
                for k in range(nb):
                    plane[k, ylo:yhi, xlo:xhi] = w[c0 + k, 0, si, sj]

    @njit(cache=True, inline="always")
    def _interior(n, o0, last):
        """[lo, hi): the outputs whose reads p + o0 .. p + last all fall inside a run of n."""
        lo = min(max(0, -o0), n)
        return lo, max(lo, min(n, n - last))

    @njit(cache=True, fastmath=True, inline="always")
    def _rowTaps(out, src, wexp, r, kw, n, o0, dw, init, first):
        """out[p] (+)= sum over j of wexp[r*kw + j, p] * src[p + o0 + j*dw], for p < n; starting from
        init[p] when first. Reads outside src are skipped: their weights are zero anyway."""
        lo, hi = _interior(n, o0, o0 + (kw - 1) * dw)
        span = hi - lo
        if kw == 3:
            # a kernel row of three taps in one pass: out is loaded and stored once per row
            a0, a1, a2 = wexp[r * 3, lo:hi], wexp[r * 3 + 1, lo:hi], wexp[r * 3 + 2, lo:hi]
            s0 = src[lo + o0:hi + o0]
            s1 = src[lo + o0 + dw:hi + o0 + dw]
            s2 = src[lo + o0 + 2 * dw:hi + o0 + 2 * dw]
            o = out[lo:hi]
            if first:
                base = init[lo:hi]
                for q in range(span):
                    o[q] = base[q] + a0[q] * s0[q] + a1[q] * s1[q] + a2[q] * s2[q]
            else:
                for q in range(span):
                    o[q] += a0[q] * s0[q] + a1[q] * s1[q] + a2[q] * s2[q]
        else:
            if first:
                out[lo:hi] = init[lo:hi]
            for j in range(kw):
                a = wexp[r * kw + j, lo:hi]
                s = src[lo + o0 + j * dw:hi + o0 + j * dw]
                o = out[lo:hi]
                for q in range(span):
                    o[q] += a[q] * s[q]
        for p in range(lo):
            _edgeTaps(out, src, wexp, r, kw, n, o0, dw, init, first, p)
        for p in range(hi, n):
            _edgeTaps(out, src, wexp, r, kw, n, o0, dw, init, first, p)

    @njit(cache=True, fastmath=True, inline="always")
    def _edgeTaps(out, src, wexp, r, kw, n, o0, dw, init, first, p):
        """_rowTaps for one output near either end of the run, where some reads fall outside it."""
        acc = init[p] if first else out[p]
        for j in range(kw):
            t = p + o0 + j * dw
            if 0 <= t < n:
                acc += wexp[r * kw + j, p] * src[t]
        out[p] = acc

    @njit(cache=True, fastmath=True, inline="always")
    def _rowProducts(prod, g, src, r, kw, n, o0, dw):
        """prod[r*kw + j, p] += g[p] * src[p + o0 + j*dw] for p < n, reads outside src skipped; summed
        over a pixel's valid taps later, these are the weight gradient's terms."""
        lo, hi = _interior(n, o0, o0 + (kw - 1) * dw)
        span = hi - lo
        gi = g[lo:hi]
        if kw == 3:
            p0, p1, p2 = prod[r * 3, lo:hi], prod[r * 3 + 1, lo:hi], prod[r * 3 + 2, lo:hi]
            s0 = src[lo + o0:hi + o0]
            s1 = src[lo + o0 + dw:hi + o0 + dw]
            s2 = src[lo + o0 + 2 * dw:hi + o0 + 2 * dw]
            for q in range(span):
                gq = gi[q]
                p0[q] += gq * s0[q]
                p1[q] += gq * s1[q]
                p2[q] += gq * s2[q]
        else:
            for j in range(kw):
                pj = prod[r * kw + j, lo:hi]
                s = src[lo + o0 + j * dw:hi + o0 + j * dw]
                for q in range(span):
                    pj[q] += gi[q] * s[q]
        for p in range(lo):
            _edgeProducts(prod, g, src, r, kw, n, o0, dw, p)
        for p in range(hi, n):
            _edgeProducts(prod, g, src, r, kw, n, o0, dw, p)

    @njit(cache=True, fastmath=True, inline="always")
    def _edgeProducts(prod, g, src, r, kw, n, o0, dw, p):
        for j in range(kw):
            t = p + o0 + j * dw
            if 0 <= t < n:
                prod[r * kw + j, p] += g[p] * src[t]

    @njit(**_jit)
    def flatTaps(x, w, b, y, flip, ph, pw, dh, dw, chunks):
        """y = the stride-1 "same" depthwise correlation of x (N, C, H, W) with w (C, 1, kh, kw), plus
        b (C,) when not empty. With flip, the kernel is flipped: that is the input gradient, x being
        the output gradient."""
        n, c, h, wd = x.shape
        kh, kw = w.shape[2], w.shape[3]
        hw = h * wd
        per = _blocks(c, hw, chunks)
        nblk = (c + per - 1) // per
        xf = x.reshape(n, c * hw)
        yf = y.reshape(n, c * hw)
        for blk in prange(nblk):
            c0 = blk * per
            nb = min(per, c - c0)
            run = nb * hw
            wexp = np.empty((kh * kw, run), dtype=np.float32)
            _expand(w, c0, nb, h, wd, ph, pw, dh, dw, flip, wexp)
            init = np.zeros(run, dtype=np.float32)
            if b.shape[0] > 0:
                for k in range(nb):
                    init[k * hw:(k + 1) * hw] = b[c0 + k]
            for im in range(n):
                src = xf[im, c0 * hw:c0 * hw + run]
                out = yf[im, c0 * hw:c0 * hw + run]
                for r in range(kh):
                    _rowTaps(out, src, wexp, r, kw, run, (r * dh - ph) * wd - pw, dw, init, r == 0)

    @njit(**_jit)
    def flatBackward(x, dy, w, dx, wgrad, bgrad, wantData, ph, pw, dh, dw, chunks):
        """The input gradient dx (overwritten, when wantData) and the weight and bias gradients
        (accumulated into wgrad (C, 1, kh, kw) and bgrad (C,) when not empty) in one pass over dy.
        The weight gradient's products are summed per pixel over the batch first, in the block's
        prod arrays, and over each plane's valid pixels once at the end."""
        n, c, h, wd = x.shape
        kh, kw = w.shape[2], w.shape[3]
        hw = h * wd
        per = _blocks(c, hw, chunks)
        nblk = (c + per - 1) // per
        xf = x.reshape(n, c * hw)
        gf = dy.reshape(n, c * hw)
        dxf = dx.reshape(n, c * hw)
        for blk in prange(nblk):
            c0 = blk * per
            nb = min(per, c - c0)
            run = nb * hw
            wexp = np.empty((kh * kw, run), dtype=np.float32)
            if wantData:
                _expand(w, c0, nb, h, wd, ph, pw, dh, dw, True, wexp)
            zero = np.zeros(run, dtype=np.float32)
            prod = np.zeros((kh * kw, run), dtype=np.float32)
            gsum = np.zeros(run, dtype=np.float32)
            for im in range(n):
                g = gf[im, c0 * hw:c0 * hw + run]
                src = xf[im, c0 * hw:c0 * hw + run]
                for r in range(kh):
                    o0 = (r * dh - ph) * wd - pw
                    if wantData:
                        _rowTaps(dxf[im, c0 * hw:c0 * hw + run], g, wexp, r, kw, run, o0, dw, zero, r == 0)
                    _rowProducts(prod, g, src, r, kw, run, o0, dw)
                for p in range(run):
                    gsum[p] += g[p]
            for i in range(kh):
                ylo, yhi = _validRange(h, i, dh, ph)
                for j in range(kw):
                    xlo, xhi = _validRange(wd, j, dw, pw)
                    plane = prod[i * kw + j].reshape(nb, h, wd)
                    for k in range(nb):
                        total = 0.0
                        for y in range(ylo, yhi):
                            for x in range(xlo, xhi):
                                total += plane[k, y, x]
                        wgrad[c0 + k, 0, i, j] += total
            for k in range(nb):
                if bgrad.shape[0] > 0:
                    total = 0.0
                    for q in range(hw):
                        total += gsum[k * hw + q]
                    bgrad[c0 + k] += total
