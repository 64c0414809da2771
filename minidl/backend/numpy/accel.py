"""numba kernels for the NumPy backend's hot ops (optional).

When numba imports (and MINIDL_NUMBA is not "0"), the NumPy backend runs the
depthwise convolution, im2col/col2im, batch normalisation and ReLU/clip
through these compiled loops instead of whole-array NumPy expressions: each
works on one (image, channel) plane at a time while it sits in cache, in
parallel over planes or channels, with no temporaries. Compiled code is cached
on disk (numba's cache=True), so only the first run of a checkout compiles.
The NumPy implementations stay as the reference and the fallback; tests hold
the two to each other.
"""

import os

import numpy as np

enabled = False
if os.environ.get("MINIDL_NUMBA", "1") != "0":
    try:
        import numba
        from numba import njit, prange
        enabled = True
    except ImportError:
        pass

if enabled and "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's OpenMP threads spin after each parallel region and, on few cores, starve
    # OpenBLAS's threads between the GEMMs (measured: a training step took twice as long);
    # the workqueue layer's threads do not spin
    numba.config.THREADING_LAYER = "workqueue"

if enabled:
    _jit = dict(parallel=True, cache=True, fastmath=True, nogil=True)

    # The depthwise kernels copy each input plane into a private zero-padded scratch plane (or
    # accumulate into one), so the tap loops need no bounds checks and write only to memory the
    # compiler knows is private. Each tap's row is sliced once (r[off : off + sw*(wo - 1) + 1 : sw])
    # and indexed with the bare loop variable: an index like ox + off could be negative as far as
    # numba knows, and its wraparound check on every element stops vectorisation. Stride 1 gets
    # its own step-less slice (typed contiguous, so the loop vectorises); a stepped slice is typed
    # as any-layout. Together: 2-5x over bounds-checked loops on the arrays themselves.

    def numThreads():
        return numba.get_num_threads()

    def parallelChunks():
        """How many parallel tasks to split plane loops into (a few per thread, for balance)."""
        return 4 * numba.get_num_threads()

    @njit(cache=True, inline="always")
    def _chunk(t, chunks, total):
        """The t-th of `chunks` near-equal ranges over [0, total): each parallel task reuses its scratch."""
        return t * total // chunks, (t + 1) * total // chunks

    @njit(**_jit)
    def depthwiseForward(x, w, b, y, sh, sw, ph, pw, dh, dw, chunks):
        n, c, h, wd = x.shape
        cm, _, kh, kw = w.shape
        m = cm // c
        ho, wo = y.shape[2], y.shape[3]
        hp, wp = h + 2 * ph, wd + 2 * pw
        flat = sh == 1 and sw == 1
        chunks = min(n * c, chunks)
        for t in prange(chunks):
            # one spare row: the flat form's last tap reads up to (kw - 1) * dw past the plane
            store = np.zeros((hp + 1) * wp, dtype=np.float32)      # border stays zero
            buf = store[:hp * wp].reshape(hp, wp)
            acc = np.empty(ho * wp if flat else wo, dtype=np.float32)
            lo, hi = _chunk(t, chunks, n * c)
            for p in range(lo, hi):
                i0 = p // c
                ci = p - i0 * c
                buf[ph:ph + h, pw:pw + wd] = x[i0, ci]
                for mm in range(m):
                    co = ci * m + mm
                    out = y[i0, co]
                    bias = b[co] if b.shape[0] > 0 else np.float32(0.0)
                    if flat:
                        # stride 1: each tap is one long contiguous loop over the padded-width grid;
                        # the grid's last wp - wo columns are garbage and never copied out
                        acc[:] = bias
                        for i in range(kh):
                            for j in range(kw):
                                wv = w[co, 0, i, j]
                                off = i * dh * wp + j * dw
                                tap = store[off:off + ho * wp]
                                for q in range(ho * wp):
                                    acc[q] += wv * tap[q]
                        for oy in range(ho):
                            out[oy, :] = acc[oy * wp:oy * wp + wo]
                    else:
                        for oy in range(ho):
                            acc[:] = bias
                            for i in range(kh):
                                row = buf[oy * sh + i * dh]
                                for j in range(kw):
                                    wv = w[co, 0, i, j]
                                    strided = row[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                                    for ox in range(wo):
                                        acc[ox] += wv * strided[ox]
                            out[oy, :] = acc

    @njit(**_jit)
    def depthwiseBackwardData(dy, w, dx, sh, sw, ph, pw, dh, dw, chunks):
        n, c, h, wd = dx.shape
        cm, _, kh, kw = w.shape
        m = cm // c
        ho, wo = dy.shape[2], dy.shape[3]
        top, left = (kh - 1) * dh - ph, (kw - 1) * dw - pw
        # stride 1 with padding inside the kernel's extent (the usual case): gather, i.e. correlate
        # the padded output gradient with the flipped kernel; otherwise scatter into a padded plane
        gather = sh == 1 and sw == 1 and top >= 0 and left >= 0
        chunks = min(n * c, chunks)
        for t in prange(chunks):
            lo, hi = _chunk(t, chunks, n * c)
            if gather:
                hg, wg = h + (kh - 1) * dh, wd + (kw - 1) * dw
                store = np.zeros((hg + 1) * wg, dtype=np.float32)      # spare row; border stays zero
                gp = store[:hg * wg].reshape(hg, wg)
                acc = np.empty(h * wg, dtype=np.float32)
                for p in range(lo, hi):
                    i0 = p // c
                    ci = p - i0 * c
                    acc[:] = 0.0
                    for mm in range(m):
                        co = ci * m + mm
                        gp[top:top + ho, left:left + wo] = dy[i0, co]
                        # flat form, as in the forward pass: one contiguous loop per tap
                        for i in range(kh):
                            for j in range(kw):
                                wv = w[co, 0, i, j]
                                off = (kh - 1 - i) * dh * wg + (kw - 1 - j) * dw
                                tap = store[off:off + h * wg]
                                for q in range(h * wg):
                                    acc[q] += wv * tap[q]
                    out = dx[i0, ci]
                    for iy in range(h):
                        out[iy, :] = acc[iy * wg:iy * wg + wd]
            else:
                buf = np.empty((h + 2 * ph, wd + 2 * pw), dtype=np.float32)
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

    @njit(**_jit)
    def depthwiseBackwardParams(x, dy, wgrad, bgrad, sh, sw, ph, pw, dh, dw):
        n, c, h, wd = x.shape
        cm, _, kh, kw = wgrad.shape
        m = cm // c
        ho, wo = dy.shape[2], dy.shape[3]
        hp, wp = h + 2 * ph, wd + 2 * pw
        flat = sh == 1 and sw == 1
        for co in prange(cm):
            ci = co // m
            store = np.zeros((hp + 1) * wp, dtype=np.float32)          # spare row; border stays zero
            buf = store[:hp * wp].reshape(hp, wp)
            bacc = 0.0
            if flat:
                # dy laid on the padded-width grid (its extra columns stay zero), then one vector
                # accumulator per tap over the whole grid, reduced once at the end
                gstore = np.zeros(ho * wp, dtype=np.float32)
                grid = gstore.reshape(ho, wp)
                vacc = np.zeros((kh * kw, ho * wp), dtype=np.float32)
                for i0 in range(n):
                    buf[ph:ph + h, pw:pw + wd] = x[i0, ci]
                    grid[:, :wo] = dy[i0, co]
                    for i in range(kh):
                        for j in range(kw):
                            va = vacc[i * kw + j]
                            off = i * dh * wp + j * dw
                            tap = store[off:off + ho * wp]
                            for q in range(ho * wp):
                                va[q] += gstore[q] * tap[q]
                    if bgrad.shape[0] > 0:
                        bacc += gstore.sum()
            else:
                vacc = np.zeros((kh * kw, wo), dtype=np.float32)
                for i0 in range(n):
                    buf[ph:ph + h, pw:pw + wd] = x[i0, ci]
                    g = dy[i0, co]
                    for oy in range(ho):
                        grow = g[oy]
                        for i in range(kh):
                            row = buf[oy * sh + i * dh]
                            for j in range(kw):
                                va = vacc[i * kw + j]
                                strided = row[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                                for ox in range(wo):
                                    va[ox] += grow[ox] * strided[ox]
                    if bgrad.shape[0] > 0:
                        bacc += g.sum()
            for t in range(kh * kw):
                wgrad[co, 0, t // kw, t % kw] += vacc[t].sum()
            if bgrad.shape[0] > 0:
                bgrad[co] += bacc

    # im2col / col2im work on a private zero-padded copy of each plane (one scratch per parallel
    # task) and move whole rows through pre-sliced views indexed by the bare loop variable, so no
    # per-pixel bounds checks or possibly negative indices stop vectorisation

    @njit(**_jit)
    def im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, chunks):
        """cols (N, C*kh*kw, Ho*Wo): row (c, i, j) holds the input pixels tap (i, j) of channel c reads."""
        n, c, h, wd = x.shape
        chunks = min(n * c, chunks)
        for t in prange(chunks):
            buf = np.zeros((h + 2 * ph, wd + 2 * pw), dtype=np.float32)    # border stays zero
            lo, hi = _chunk(t, chunks, n * c)
            for p in range(lo, hi):
                i0 = p // c
                ci = p - i0 * c
                buf[ph:ph + h, pw:pw + wd] = x[i0, ci]
                for i in range(kh):
                    for j in range(kw):
                        row = cols[i0, (ci * kh + i) * kw + j]
                        for oy in range(ho):
                            dst = row[oy * wo:(oy + 1) * wo]
                            src = buf[oy * sh + i * dh]
                            if sw == 1:
                                unit = src[j * dw:j * dw + wo]
                                for ox in range(wo):
                                    dst[ox] = unit[ox]
                            else:
                                strided = src[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                                for ox in range(wo):
                                    dst[ox] = strided[ox]

    @njit(**_jit)
    def col2im(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, chunks):
        n, c, h, wd = dx.shape
        chunks = min(n * c, chunks)
        for t in prange(chunks):
            buf = np.empty((h + 2 * ph, wd + 2 * pw), dtype=np.float32)
            lo, hi = _chunk(t, chunks, n * c)
            for p in range(lo, hi):
                i0 = p // c
                ci = p - i0 * c
                buf[:, :] = 0.0
                for i in range(kh):
                    for j in range(kw):
                        row = cols[i0, (ci * kh + i) * kw + j]
                        for oy in range(ho):
                            src = row[oy * wo:(oy + 1) * wo]
                            dst = buf[oy * sh + i * dh]
                            if sw == 1:
                                unit = dst[j * dw:j * dw + wo]
                                for ox in range(wo):
                                    unit[ox] += src[ox]
                            else:
                                strided = dst[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                                for ox in range(wo):
                                    strided[ox] += src[ox]
                dx[i0, ci] = buf[ph:ph + h, pw:pw + wd]

    @njit(**_jit)
    def channelMoments(x, mean, var):
        """Per-channel mean and biased variance of x (N, C, L) in one pass: sums of x and x^2 in
        float64, where E[x^2] - mean^2 loses nothing unless mean/std exceeds ~1e6."""
        n, c, l = x.shape
        for ci in prange(c):
            s = 0.0
            q = 0.0
            for i0 in range(n):
                for k in range(l):
                    v = np.float64(x[i0, ci, k])
                    s += v
                    q += v * v
            mu = s / (n * l)
            mean[ci] = mu
            var[ci] = max(q / (n * l) - mu * mu, 0.0)

    @njit(**_jit)
    def channelAffine(x, a, b, y):
        """y[n, c, :] = x[n, c, :] * a[c] + b[c]."""
        n, c, l = x.shape
        for p in prange(n * c):
            i0 = p // c
            ci = p - i0 * c
            av, bv = a[ci], b[ci]
            for k in range(l):
                y[i0, ci, k] = x[i0, ci, k] * av + bv

    @njit(**_jit)
    def channelDyMoments(x, dy, mean, sdy, sdyx):
        """Per channel: sum(dy) and sum(dy * (x - mean)), in float64."""
        n, c, l = x.shape
        for ci in prange(c):
            s1 = 0.0
            s2 = 0.0
            mu = mean[ci]
            for i0 in range(n):
                for k in range(l):
                    g = dy[i0, ci, k]
                    s1 += g
                    s2 += g * (x[i0, ci, k] - mu)
            sdy[ci] = s1
            sdyx[ci] = s2

    @njit(**_jit)
    def channelAffine2(dy, x, k1, k2, k3, out):
        """out[n, c, :] = dy * k1[c] + x * k2[c] + k3[c]."""
        n, c, l = x.shape
        for p in prange(n * c):
            i0 = p // c
            ci = p - i0 * c
            a, b, d = k1[ci], k2[ci], k3[ci]
            for k in range(l):
                out[i0, ci, k] = dy[i0, ci, k] * a + x[i0, ci, k] * b + d

    @njit(**_jit)
    def clipForward(x, y, lo, hi):
        for k in prange(x.size):
            v = x[k]
            y[k] = lo if v < lo else (hi if v > hi else v)

    @njit(**_jit)
    def clipBackward(x, dy, dx, lo, hi):
        for k in prange(x.size):
            v = x[k]
            dx[k] = dy[k] if (v > lo and v < hi) else 0.0
