"""numba kernels for the NumPy backend's hot ops (optional).

When numba imports (and MINIDL_NUMBA is not "0"), the NumPy backend runs the
depthwise convolution, im2col/col2im, batch normalisation and ReLU/clip
through these compiled loops instead of whole-array NumPy expressions: each
works on one (image, channel) plane at a time while it sits in cache, in
parallel over planes or channels, with no temporaries. The NumPy
implementations stay as the reference and the fallback; tests hold the two to
each other.

Compiling: numba compiles a kernel at its first call (nothing at import), for
the argument types of that call; callers pass C-contiguous float32 arrays, so
each kernel compiles once. The machine code goes to numba's disk cache
(cache=CACHE): __pycache__ beside these files, or where that is read-only
(an installed package) numba's user-wide folder (~/.cache/numba), or
NUMBA_CACHE_DIR when set. So only the first run of an install (or after an
edit of the file) compiles: ~23 s for examples/train_mobilenet.py's kernels on
2 cores, and notices.py says so once on stderr (MINIDL_QUIET=1 silences it).
With no writable folder at all the kernels compile in every process.
Written for short compiles: a parallel kernel costs ~2.3x the compile time of
the same loops serial (numba compiles the prange body on its own, then the
whole; moving the body into a serial function of its own made it slower, as
numba optimises a callee's code again inside every caller), and numba
compiles error-message code for an axis reduction such as a.sum(axis=0), or
for a slice assignment from an array outside a prange loop (~1-2 s per process
for each kind); the kernels use plain loops there.

Non-finite values: the kernels compile with FASTMATH, fast-math without the
flags that assume no NaN or infinity, so a NaN or an infinity goes through
each loop as IEEE arithmetic takes it. Where a kernel's shortcut can still put
one where the formula would not (it multiplies pixels outside a window, or
padding and seams, by zeros; Winograd's tiles mix neighbours), its caller
checks the result and falls back to an exact path (see each op's file).

Threads: every parallel kernel is launched through `parallel` below, which
serialises launches while the threading layer is numba's workqueue (not safe
for launches from two threads at once: numba aborts the process).
"""

import functools
import os
import threading

import numpy as np

from minidl.backend.numpy import notices

enabled = False
CACHE = False                       # whether kernels are cached on disk (see _diskCache)
disabledBy = "MINIDL_NUMBA=0"       # why the kernels are off, for notices.withoutKernels; None when on
if os.environ.get("MINIDL_NUMBA", "1") != "0":
    try:
        import numba
        from numba import njit, prange
        enabled, disabledBy = True, None
    except ImportError as error:
        disabledBy = "numba: %s" % error


def _openmpLoaded():
    """Whether an OpenMP runtime is already loaded in this process (it read its settings then)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line or "libiomp" in line for line in maps)
    except OSError:
        return True     # cannot tell: assume so, and trust only an explicit setting


def _threadingLayer():
    """numba's threading layer: OpenMP with passive waiting where that can be had, else workqueue.

    Spinning pools are the enemy on a small machine: an OpenMP thread that spins after its
    parallel region steals the core from the GEMM thread that runs next (measured: a training step
    twice as long). With OMP_WAIT_POLICY=passive OpenMP's threads sleep at once, and the calling
    thread takes a share of every region, so a region costs one wake-up instead of the three of
    workqueue (two workers, then the caller): a MobileNet training step ~10% faster. The policy is
    read once, when the runtime loads, so minidl sets it (unless the user did) only while no
    OpenMP runtime is loaded yet; note that the setting then also holds for libraries loaded later
    that share the runtime, such as PyTorch's.
    """
    if not _openmpLoaded():
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    return "omp" if os.environ.get("OMP_WAIT_POLICY", "").lower() == "passive" else "workqueue"


if enabled and "NUMBA_THREADING_LAYER" not in os.environ:
    if _threadingLayer() == "omp":
        # workqueue stays the fallback where numba's OpenMP layer cannot load (no libgomp)
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
        numba.config.THREADING_LAYER = "default"
    else:
        numba.config.THREADING_LAYER = "workqueue"

if enabled:
    # Fast-math flags for every kernel: 'reassoc' lets sums run (and vectorise) in any order and
    # 'contract' fuses a multiply and an add into one rounding. Neither assumes away NaN or infinity,
    # so neither changes which results are non-finite: a NaN term makes any order of the sum NaN,
    # +inf and -inf give NaN in any order, and only a sum or product within rounding of float32's
    # overflow could land differently (as with any change of rounding). Not taken: 'nnan' and
    # 'ninf' (with them LLVM folded ReLU's comparisons into a max that turned NaN into 0), 'nsz',
    # 'arcp' and 'afn' (sign of zero, reciprocals, approximate functions). Measured against full
    # fast-math, in one process with the two builds alternating: the MobileNet-0.5 training steps
    # and the depthwise, Winograd and batch-norm ops each within 2%, either way (noise).
    FASTMATH = {"reassoc", "contract"}

    def _cacheProbe():
        return 0

    def _diskCache():
        """Whether numba has a writable folder for this package's disk cache of compiled kernels:
        NUMBA_CACHE_DIR when set, else __pycache__ beside these files, else (a read-only install)
        its user-wide cache folder, ~/.cache/numba on Linux. With none, cache=True would make
        numba raise RuntimeError at import ("no locator available"); the kernels then compile
        without the disk cache, in every process (and notices.COMPILING_UNCACHED says so)."""
        try:
            njit(cache=True)(_cacheProbe)       # numba picks the folder here; nothing compiles
        except RuntimeError:
            return False
        return True

    CACHE = _diskCache()        # cache= for every kernel of the package (depthwiseflat.py, winograd.py, ...)
    notices.watchCompiles(CACHE)
    _jit = dict(parallel=True, cache=CACHE, fastmath=FASTMATH, nogil=True)

    # numba's workqueue layer (taken when another library loaded OpenMP first, or with
    # OMP_WAIT_POLICY=active: see _threadingLayer) aborts the process when two threads launch
    # parallel kernels at once. Launches are serialised while the layer is, or may be, workqueue:
    # until the first launch has run numba has not picked its layer, so that one holds the lock too.
    # The OpenMP and TBB layers take concurrent launches, so there the lock is skipped (the check
    # costs 0.1 us a launch). On workqueue the lock measured at most 3 us a launch, against ~50 us
    # for workqueue's own launch; a MobileNetV2-0.5 training step makes 292 launches (V1: 174).
    _launchLock = threading.Lock()
    _serialise = [None]         # unknown until the first launch; then whether the layer is workqueue

    def _serialised(kernel):
        """A launcher for the compiled parallel kernel that holds _launchLock where the layer needs it."""
        @functools.wraps(kernel.py_func)
        def launch(*args):
            if _serialise[0] is False:
                return kernel(*args)
            with _launchLock:
                result = kernel(*args)
                if _serialise[0] is None:
                    _serialise[0] = numba.threading_layer() == "workqueue"
            return result
        launch.kernel = kernel
        return launch

    def parallel(fn):
        """fn compiled with _jit (parallel, FASTMATH), launched through _serialised."""
        return _serialised(njit(**_jit)(fn))

    # The depthwise kernels work on a block of B images of one channel at a time, stacked into a
    # private zero-padded "tall" scratch plane: the padding rows of each image separate it from the
    # next, so one kernel tap is a single contiguous loop over the whole block (the "flat" form)
    # with no bounds checks. Outputs computed across a seam between images, or in the padding
    # columns, are garbage that is never copied out. B is chosen so a block holds ~BLOCK floats:
    # small maps (4x4, 8x8) get long vector loops instead of a per-image overhead. Two numba
    # details matter: an index like q + off could be negative as far as numba knows, and its
    # wraparound check on every element stops vectorisation (so each tap's run is sliced first and
    # indexed with the bare loop variable); and a step-sliced view is typed "any layout", so its
    # loops and copies go element by element (strided passes reuse the stride-1 loops instead,
    # and only their copies in and out take steps).

    BLOCK = 4096

    def numThreads():
        return numba.get_num_threads()

    def parallelChunks():
        """How many parallel tasks to split plane loops into (a few per thread, for balance)."""
        return 4 * numba.get_num_threads()

    @njit(cache=CACHE, inline="always")
    def _chunk(t, chunks, total):
        """The t-th of `chunks` near-equal ranges over [0, total): each parallel task reuses its scratch."""
        return t * total // chunks, (t + 1) * total // chunks

    @njit(cache=CACHE, inline="always")
    def _blockImages(n, planeSize):
        """Images per block of one channel (at least 1, at most n)."""
        return max(1, min(n, BLOCK // planeSize))

    @njit(cache=CACHE, inline="always")
    def _tallScratch(bi, rows, width):
        """A zeroed flat store and its (bi, rows, width) view: one spare row at the end, since a
        tap's contiguous run over the block reads up to (kw - 1) * dw past it."""
        store = np.zeros((bi * rows + 1) * width, dtype=np.float32)
        return store, store[:bi * rows * width].reshape(bi, rows, width)

    @njit(cache=CACHE, inline="always")
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

    @njit(cache=CACHE, fastmath=FASTMATH, inline="always")
    def _taps(acc, store, w, co, span, width, dh, dw, flip, init, add):
        """acc[q] (+)= sum over taps (i, j) of w[co, 0, i, j] * store[q + offset of (i, j)], q < span, the
        offset being (i*dh*width + j*dw), or that of the flipped tap (kh-1-i, kw-1-j) when flip.
        Without add, acc starts at init. A kernel row of three taps goes in one pass, so acc is
        loaded and stored once per row rather than once per tap (measured 15-25% off the depthwise
        forward on MobileNet's shapes)."""
        kh, kw = w.shape[2], w.shape[3]
        for r in range(kh):
            i = kh - 1 - r if flip else r
            base = r * dh * width
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

    @parallel
    def depthwiseForward(x, w, b, y, sh, sw, ph, pw, dh, dw, chunks):
        """The stride-1 correlation over a tall block, read out at the strided positions: a strided
        conv does sh*sw times the arithmetic it needs, but in long vector loops rather than
        step-sliced ones (measured faster for stride 2 on every map size of MobileNet)."""
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
            lo, hi = _chunk(t, chunks, c * nb)
            for item in range(lo, hi):
                ci = item // nb
                n0 = (item - ci * nb) * bi
                nbi = min(bi, n - n0)
                for k in range(nbi):
                    tall[k, ph:ph + h, pw:pw + wd] = x[n0 + k, ci]
                span = ((nbi - 1) * hp + sh * (ho - 1) + 1) * wp
                for mm in range(m):
                    co = ci * m + mm
                    _taps(acc, store, w, co, span, wp, dh, dw, False, b[co] if b.shape[0] > 0 else np.float32(0.0),
                          False)
                    for k in range(nbi):
                        out = y[n0 + k, co]
                        for oy in range(ho):
                            base = (k * hp + oy * sh) * wp
                            if sw == 1:
                                out[oy, :] = acc[base:base + wo]
                            else:
                                out[oy, :] = acc[base:base + sw * (wo - 1) + 1:sw]

    @parallel
    def depthwiseBackwardData(dy, w, dx, sh, sw, ph, pw, dh, dw, chunks):
        n, c, h, wd = dx.shape
        cm, _, kh, kw = w.shape
        m = cm // c
        ho, wo = dy.shape[2], dy.shape[3]
        top, left = (kh - 1) * dh - ph, (kw - 1) * dw - pw
        if top >= 0 and left >= 0:
            # padding inside the kernel's extent (the usual case): gather, i.e. correlate the output
            # gradient, laid on a zero grid (zero-stuffed between its pixels when strided), with
            # the flipped kernel
            hg, wg = h + (kh - 1) * dh, wd + (kw - 1) * dw
            bi = _blockImages(n, hg * wg)
            nb = (n + bi - 1) // bi
            chunks = min(c * nb, chunks)
            for t in prange(chunks):
                store, tall = _tallScratch(bi, hg, wg)      # zero but where dy is placed
                acc = np.empty(bi * hg * wg, dtype=np.float32)
                lo, hi = _chunk(t, chunks, c * nb)
                for item in range(lo, hi):
                    ci = item // nb
                    n0 = (item - ci * nb) * bi
                    nbi = min(bi, n - n0)
                    span = ((nbi - 1) * hg + h) * wg
                    for mm in range(m):
                        co = ci * m + mm
                        for k in range(nbi):
                            _place(tall, k, top, left, sh, sw, dy[n0 + k, co])
                        _taps(acc, store, w, co, span, wg, dh, dw, True, np.float32(0.0), mm > 0)
                    for k in range(nbi):
                        out = dx[n0 + k, ci]
                        for iy in range(h):
                            base = (k * hg + iy) * wg
                            out[iy, :] = acc[base:base + wd]
            return
        # padding wider than the kernel's reach: scatter into a padded plane
        chunks = min(n * c, chunks)
        for t in prange(chunks):
            buf = np.empty((h + 2 * ph, wd + 2 * pw), dtype=np.float32)
            lo, hi = _chunk(t, chunks, n * c)
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

    @njit(cache=CACHE, fastmath=FASTMATH, inline="always")
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

    @parallel
    def depthwiseBackwardParams(x, dy, wgrad, bgrad, sh, sw, ph, pw, dh, dw):
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

    @parallel
    def depthwiseBackward(x, dy, w, dx, wgrad, bgrad, sh, sw, ph, pw, dh, dw):
        """depthwiseBackwardData and depthwiseBackwardParams in one pass over dy, for "same"
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
                    _taps(acc, gstore, w, co, spanData, wp, dh, dw, True, np.float32(0.0), mm > 0)
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

    # im2col / col2im run one image at a time, serially, from the GEMM threads of conv.py: the
    # columns of one image (C*kh*kw x Ho*Wo, ~1 MB) are made and consumed while they sit in that
    # core's L2 cache, instead of the whole batch's columns going out to memory and back. Each
    # plane goes through a zero-bordered copy, and whole rows move through pre-sliced views indexed
    # by the bare loop variable, so no per-pixel bounds checks or possibly negative indices stop
    # vectorisation.
    _serial = dict(cache=CACHE, fastmath=FASTMATH, nogil=True)

    @njit(**_serial)
    def im2colImage(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
        """cols (C*kh*kw, Ho*Wo) of one image x (C, H, W): row (c, i, j) holds what tap (i, j) of
        channel c reads."""
        c, h, wd = x.shape
        buf = np.zeros((h + 2 * ph, wd + 2 * pw), dtype=np.float32)    # the border stays zero
        for ci in range(c):
            plane = x[ci]
            for r in range(h):      # rows by loop, not buf[...] = x[ci]: see "Compiling" above
                line = buf[ph + r, pw:pw + wd]
                for q in range(wd):
                    line[q] = plane[r, q]
            for i in range(kh):
                for j in range(kw):
                    row = cols[(ci * kh + i) * kw + j]
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

    @njit(**_serial)
    def col2imImage(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
        """dx (C, H, W) of one image = the sum of what each row of cols (C*kh*kw, Ho*Wo) read
        (im2colImage's adjoint); dx is overwritten."""
        c, h, wd = dx.shape
        buf = np.empty((h + 2 * ph, wd + 2 * pw), dtype=np.float32)
        for ci in range(c):
            buf[:, :] = 0.0
            for i in range(kh):
                for j in range(kw):
                    row = cols[(ci * kh + i) * kw + j]
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
            plane = dx[ci]
            for r in range(h):
                line = buf[ph + r, pw:pw + wd]
                for q in range(wd):
                    plane[r, q] = line[q]

    # Stride 1 has a cheaper "wide" form: columns span the padded width, Ho rows of Wp = W + 2*pw,
    # so row (c, i, j) is one contiguous run of the flat padded plane starting at tap (i, j)'s
    # offset: a single copy of Ho*Wp floats instead of Ho copies of Wo (for 16x16 maps, 16-float
    # copies made im2col cost more than the GEMM). The GEMM then computes Wp - Wo garbage columns
    # per row, which the caller drops (forward) or keeps at zero (backward), ~6-12% more arithmetic.

    @njit(cache=CACHE, inline="always")
    def _paddedPlanes(c, h, wd, ph, pw):
        """Zeroed flat padded planes (C, (H + 2ph + 1) * Wp): one spare row, since a wide row at the
        largest tap offset runs (kw - 1) * dw past the plane."""
        wp = wd + 2 * pw
        return np.zeros((c, (h + 2 * ph + 1) * wp), dtype=np.float32)

    @njit(**_serial)
    def im2colWide(x, cols, kh, kw, ph, pw, dh, dw, ho):
        """Stride-1 columns of one image x (C, H, W) in the wide form: cols (C*kh*kw, Ho*Wp), row
        (c, i, j) = the flat padded plane of channel c from offset i*dh*Wp + j*dw."""
        c, h, wd = x.shape
        wp = wd + 2 * pw
        buf = _paddedPlanes(c, h, wd, ph, pw)
        span = ho * wp
        for ci in range(c):
            plane = buf[ci]
            src = x[ci]
            for r in range(h):
                row = plane[(ph + r) * wp + pw:(ph + r) * wp + pw + wd]
                for q in range(wd):
                    row[q] = src[r, q]
            for i in range(kh):
                for j in range(kw):
                    off = i * dh * wp + j * dw
                    run = plane[off:off + span]
                    dst = cols[(ci * kh + i) * kw + j]
                    for q in range(span):
                        dst[q] = run[q]

    @njit(**_serial)
    def col2imWide(cols, dx, kh, kw, ph, pw, dh, dw, ho):
        """im2colWide's adjoint: dx (C, H, W) of one image, overwritten. The garbage columns of cols
        (wide positions past Wo) must be zero, since their runs overlap real pixels."""
        c, h, wd = dx.shape
        wp = wd + 2 * pw
        buf = _paddedPlanes(c, h, wd, ph, pw)
        span = ho * wp
        for ci in range(c):
            plane = buf[ci]
            for i in range(kh):
                for j in range(kw):
                    off = i * dh * wp + j * dw
                    run = plane[off:off + span]
                    src = cols[(ci * kh + i) * kw + j]
                    for q in range(span):
                        run[q] += src[q]
            dst = dx[ci]
            for r in range(h):
                row = plane[(ph + r) * wp + pw:(ph + r) * wp + pw + wd]
                for q in range(wd):
                    dst[r, q] = row[q]

    # Stride 1 with "same" padding (output size = input size) has a "flat" form with no padded
    # copies and no garbage columns: in a channel's flat plane, tap (i, j) of output pixel q reads
    # q + offset, offset = (i*dh - ph)*W + (j*dw - pw), so row (c, i, j) of the columns is one
    # contiguous copy of the image from that offset, with the reads that fall in the padding (off
    # the side of a row, or above or below the plane) then set to zero: whole rows at either end
    # and a few columns per row. The image is first copied whole into a buffer with zero margins,
    # so no read needs a bounds check (depthwiseflat.py does the same). A 0/1 mask multiplied in
    # instead ran 2x slower than the copy.

    @njit(cache=CACHE, inline="always")
    def _zeroPadded(row, valid, t, wd):
        """Zero the entries of a flat (H*W) row that tap t reads from the padding: valid[t] =
        (first valid row, end row, first valid column, end column)."""
        n = row.shape[0]
        y0, y1, x0, x1 = valid[t, 0], valid[t, 1], valid[t, 2], valid[t, 3]
        for q in range(y0 * wd):
            row[q] = 0.0
        for q in range(y1 * wd, n):
            row[q] = 0.0
        # column by column, rows inner: a 3x3 kernel's side taps zero one column each
        for xx in range(x0):
            for y in range(y0, y1):
                row[y * wd + xx] = 0.0
        for xx in range(x1, wd):
            for y in range(y0, y1):
                row[y * wd + xx] = 0.0

    @njit(**_serial)
    def im2colFlat(x, cols, valid, offs, lead):
        """cols (C*T, H*W) of one image x (C, H, W): row c*T + t = x read at offs[t], zero where
        valid[t] says the read falls in the padding; lead >= every |offset|."""
        c, h, wd = x.shape
        hw = h * wd
        taps = offs.shape[0]
        buf = np.zeros(lead + c * hw + lead, dtype=np.float32)
        flat = x.reshape(c * hw)
        body = buf[lead:lead + c * hw]
        for q in range(c * hw):
            body[q] = flat[q]
        for ci in range(c):
            for t in range(taps):
                start = lead + ci * hw + offs[t]
                src = buf[start:start + hw]
                dst = cols[ci * taps + t]
                for q in range(hw):
                    dst[q] = src[q]
                _zeroPadded(dst, valid, t, wd)

    @njit(**_serial)
    def col2imFlat(cols, dx, valid, offs, lead):
        """im2colFlat's adjoint: dx (C, H, W) of one image, overwritten. Zeroes cols' entries for
        padding reads first (cols is scratch)."""
        c, h, wd = dx.shape
        hw = h * wd
        taps = offs.shape[0]
        buf = np.zeros(lead + c * hw + lead, dtype=np.float32)
        for ci in range(c):
            for t in range(taps):
                src = cols[ci * taps + t]
                _zeroPadded(src, valid, t, wd)
                start = lead + ci * hw + offs[t]
                dst = buf[start:start + hw]
                for q in range(hw):
                    dst[q] += src[q]
        flat = dx.reshape(c * hw)
        body = buf[lead:lead + c * hw]
        for q in range(c * hw):
            flat[q] = body[q]

    @njit(**_serial)
    def addBiasRows(mat, bias):
        """mat[k, :] += bias[k] for a matrix (M, L): one image's GEMM output in place (a numpy
        broadcast add cost ~4 us per image, most of it call overhead)."""
        for k in range(mat.shape[0]):
            bv = bias[k]
            row = mat[k]
            for q in range(mat.shape[1]):
                row[q] += bv

    @njit(**_serial)
    def narrow(wide, out, bias):
        """out (M, Ho, Wo) = the valid columns of wide (M, Ho*Wp), plus bias[m] when bias is not
        empty."""
        m, ho, wo = out.shape
        wp = wide.shape[1] // ho
        for k in range(m):
            bv = bias[k] if bias.shape[0] > 0 else np.float32(0.0)
            for oy in range(ho):
                src = wide[k, oy * wp:oy * wp + wo]
                dst = out[k, oy]
                for q in range(wo):
                    dst[q] = src[q] + bv

    @njit(**_serial)
    def widen(src, wide):
        """wide (M, Ho*Wp) = src (M, Ho, Wo) at the valid positions; the garbage columns are left
        as they are (the caller zeroes them once)."""
        m, ho, wo = src.shape
        wp = wide.shape[1] // ho
        for k in range(m):
            for oy in range(ho):
                dst = wide[k, oy * wp:oy * wp + wo]
                row = src[k, oy]
                for q in range(wo):
                    dst[q] = row[q]

    # Batch norm works channel by channel: one channel of a (N, C, L) tensor is N blocks of L floats
    # (256 KB for 64 images of 32x32), so the statistics pass leaves it in the core's L2 cache and
    # the pass that applies them reads it from there, not from main memory. Sums run in float64,
    # where E[x^2] - mean^2 loses nothing unless mean/std exceeds ~1e6.

    @njit(cache=CACHE, inline="always")
    def _trainCoefficients(s, q, count, scale, bias, epsilon):
        """(mean, biased var, a, b) of one channel from its float64 sums of x and x^2, with
        y = x * a + b the normalised, scaled and shifted output."""
        mu = s / count
        sigma2 = q / count - mu * mu
        if sigma2 < 0.0:        # rounding below zero; NaN fails the comparison and stays NaN
            sigma2 = 0.0
        a = np.float32(scale / np.sqrt(np.float32(sigma2) + epsilon))
        return mu, sigma2, a, np.float32(bias - np.float32(mu) * a)

    @njit(cache=CACHE, inline="always")
    def _backwardCoefficients(s1, s2, count, scale, mean, var, epsilon, useBatchStats):
        """(a, k2, k3, dscale) of one channel from its sums of dy and dy * (x - mean), with
        dx = a*dy + k2*x + k3: the batch-statistics terms folded into per-channel constants."""
        mu = np.float64(mean)
        invStd = 1.0 / np.sqrt(np.float64(var) + epsilon)
        a = scale * invStd
        k2 = -a * invStd * invStd * s2 / count if useBatchStats else 0.0
        k3 = -a * s1 / count - k2 * mu if useBatchStats else 0.0
        return np.float32(a), np.float32(k2), np.float32(k3), s2 * invStd

    @parallel
    def batchNormTrain(x, scale, bias, y, mean, var, epsilon):
        """Per channel c: mean[c], biased var[c] of x[:, c, :] (float64), then
        y[:, c, :] = (x - mean) / sqrt(var + epsilon) * scale[c] + bias[c]."""
        n, c, l = x.shape
        for ci in prange(c):
            s = 0.0
            q = 0.0
            for i0 in range(n):
                for k in range(l):
                    v = np.float64(x[i0, ci, k])
                    s += v
                    q += v * v
            mean[ci], var[ci], a, b = _trainCoefficients(s, q, n * l, scale[ci], bias[ci], epsilon)
            for i0 in range(n):
                for k in range(l):
                    y[i0, ci, k] = x[i0, ci, k] * a + b

    @parallel
    def channelAffine(x, a, b, y):
        """y[n, c, :] = x[n, c, :] * a[c] + b[c]."""
        n, c, l = x.shape
        for p in prange(n * c):
            i0 = p // c
            ci = p - i0 * c
            av, bv = a[ci], b[ci]
            for k in range(l):
                y[i0, ci, k] = x[i0, ci, k] * av + bv

    @parallel
    def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats, dx, dscale, dbias):
        """Per channel c: dbias[c] = sum(dy), dscale[c] = sum(dy * xhat), then dx for the batch
        statistics (useBatchStats) or for fixed ones, with xhat = (x - mean) * invStd."""
        n, c, l = x.shape
        count = n * l
        for ci in prange(c):
            mu = np.float64(mean[ci])
            s1 = 0.0
            s2 = 0.0
            for i0 in range(n):
                for k in range(l):
                    g = dy[i0, ci, k]
                    s1 += g
                    s2 += g * (x[i0, ci, k] - mu)
            a32, k2f, k3f, dscale[ci] = _backwardCoefficients(s1, s2, count, scale[ci], mean[ci], var[ci], epsilon,
                                                              useBatchStats)
            dbias[ci] = s1
            for i0 in range(n):
                for k in range(l):
                    dx[i0, ci, k] = dy[i0, ci, k] * a32 + x[i0, ci, k] * k2f + k3f

    # Small planes (8x8: 256 bytes, 64 KB apart for 256 channels) go image by image instead:
    # channel-major reads of such short runs defeat the hardware prefetcher (measured inside a
    # MobileNet step: 2-3x the time of the same call on warm data). The sums are taken per parallel
    # task over its images, in float64, and added up afterwards; the elementwise pass then walks the
    # tensor in memory order (channelAffine, batchNormBackwardApply).

    @parallel
    def _channelSums(x, dy, mean, withGrad, chunks):
        """channelSums, with dy an array either way (ignored without withGrad): one compiled
        signature serves both kinds of call. Per task t over a share of the images,
        part[t, :, c] are its images' sums, added up over the tasks in task order at the end."""
        n, c, l = x.shape
        chunks = min(n, chunks)
        part = np.zeros((chunks, 2, c))
        for t in prange(chunks):
            lo, hi = _chunk(t, chunks, n)
            for i0 in range(lo, hi):
                for ci in range(c):
                    s = 0.0
                    q = 0.0
                    if not withGrad:
                        for k in range(l):
                            v = np.float64(x[i0, ci, k])
                            s += v
                            q += v * v
                    else:
                        mu = np.float64(mean[ci])
                        for k in range(l):
                            g = np.float64(dy[i0, ci, k])
                            s += g
                            q += g * (np.float64(x[i0, ci, k]) - mu)
                    part[t, 0, ci] += s
                    part[t, 1, ci] += q
        # loops, not part.sum(axis=0) (numba's axis sum added ~1.3 s to a cold compile) nor
        # np.zeros (in a parallel kernel numba makes that a parallel loop: one more launch)
        out = np.empty((2, c))
        for ci in range(c):
            out[0, ci] = 0.0
            out[1, ci] = 0.0
        for t in range(chunks):
            for ci in range(c):
                out[0, ci] += part[t, 0, ci]
                out[1, ci] += part[t, 1, ci]
        return out

    _noMean = np.zeros(0, dtype=np.float32)

    def channelSums(x, dy, mean, chunks):
        """(2, C) float64 sums over images and positions of x (N, C, L): of x and x^2 when dy is
        None, else of dy and dy * (x - mean[c]), dy (N, C, L) and mean (C,) float32. Taken per
        parallel task over a share of the images, then added up."""
        if dy is None:
            return _channelSums(x, x, _noMean, False, chunks)
        return _channelSums(x, dy, mean, True, chunks)

    @njit(cache=CACHE)
    def trainCoefficients(sums, count, scale, bias, epsilon, mean, var, a, b):
        """_trainCoefficients for every channel, from channelSums' (2, C) sums."""
        for ci in range(sums.shape[1]):
            mean[ci], var[ci], a[ci], b[ci] = _trainCoefficients(sums[0, ci], sums[1, ci], count, scale[ci],
                                                                 bias[ci], epsilon)

    @njit(cache=CACHE)
    def backwardCoefficients(sums, count, scale, mean, var, epsilon, useBatchStats, a, k2, k3, dscale, dbias):
        """_backwardCoefficients for every channel, from channelSums' (2, C) sums."""
        for ci in range(sums.shape[1]):
            a[ci], k2[ci], k3[ci], dscale[ci] = _backwardCoefficients(sums[0, ci], sums[1, ci], count, scale[ci],
                                                                      mean[ci], var[ci], epsilon, useBatchStats)
            dbias[ci] = sums[0, ci]

    @parallel
    def batchNormBackwardApply(x, dy, a, k2, k3, dx):
        """dx[n, c, :] = dy * a[c] + x * k2[c] + k3[c]."""
        n, c, l = x.shape
        for p in prange(n * c):
            i0 = p // c
            ci = p - i0 * c
            av, kv2, kv3 = a[ci], k2[ci], k3[ci]
            for k in range(l):
                dx[i0, ci, k] = dy[i0, ci, k] * av + x[i0, ci, k] * kv2 + kv3

    # No fast-math here: its no-NaN assumption lets the compiler fold the comparisons into min/max,
    # which turned NaN into 0 (or the upper bound). Written so a NaN input falls through both
    # comparisons, and a NaN gradient stays NaN through the 0/1 mask, as the NumPy formulas give.
    _exactJit = dict(_jit, fastmath=False)

    @_serialised
    @njit(**_exactJit)
    def clipForward(x, y, lo, hi):
        for k in prange(x.size):
            v = x[k]
            y[k] = lo if v < lo else (hi if v > hi else v)

    @_serialised
    @njit(**_exactJit)
    def clipBackward(x, dy, dx, lo, hi, bounded):
        """dx = dy * (lo < x < hi); without bounded, dy * (lo < x): ReLU's x = +inf passes its
        gradient, as the NumPy formula dy * (x > 0) has it, where x < inf would stop it."""
        for k in prange(x.size):
            v = x[k]
            dx[k] = dy[k] * (1.0 if (v > lo and (v < hi or not bounded)) else 0.0)
