"""Batched matrix products for the NumPy backend.

``matmul(a, b, out)`` is ``np.matmul`` into ``out``. When the
numba kernels are active (accel.enabled) and threadpoolctl is installed, the
work is split over a few Python threads (NumPy releases the GIL inside
matmul) while numpy's BLAS is pinned to one thread for the call. Why: a
multi-threaded OpenBLAS call leaves its worker threads spinning for a while
afterwards, and on a small machine they starve the numba kernels that run
next (measured on 2 cores: a MobileNet training step 30% slower). Splitting
over the batch keeps both cores busy without a second spinning pool. The
previous BLAS thread count is restored when the last call running in the
process returns, so numpy code outside minidl is unaffected.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from minidl.backend.numpy import accel

_state = {}
_lock = threading.Lock()
# blocks holding BLAS to one thread now (in any thread: see pinnedBlas), and the thread counts to
# restore when the last ends
_pins = {"active": 0, "previous": None}


def _setup():
    """(BLAS controllers, executor, parts), or None when the split does not apply."""
    if "split" not in _state:
        with _lock:     # decided once, by the first thread to get here
            _decideSplit()
    return _state["split"]


def _decideSplit():
    if "split" not in _state:
        split = None
        if accel.enabled:
            try:
                from threadpoolctl import ThreadpoolController
                allBlas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
                # numpy's own BLAS when it can be told apart (torch may load another)
                blas = [c for c in allBlas if "numpy" in c.filepath.replace("\\", "/")] or allBlas
                parts = accel.numThreads()
                if blas and parts > 1:
                    split = (blas, ThreadPoolExecutor(parts - 1, thread_name_prefix="minidl-gemm"), parts)
            except ImportError:
                pass
        _state["split"] = split


def parts(n):
    """How many ranges overBatch splits n items into."""
    split = _setup()
    return 1 if split is None or n < 2 else split[2]


def overBatch(n, piece):
    """[piece(t, lo, hi) for the t-th of parts(n) near-equal ranges covering [0, n)]: the ranges run
    on the GEMM threads (the calling thread takes the first) with numpy's BLAS pinned to one thread
    meanwhile. t lets a piece use its own slice of scratch the caller allocated."""
    count = parts(n)
    if count == 1:
        return [piece(0, 0, n)]
    _, executor, _ = _setup()
    bounds = [n * k // count for k in range(count + 1)]
    with pinnedBlas():
        futures = [executor.submit(piece, t, bounds[t], bounds[t + 1]) for t in range(1, count)]
        return [piece(0, 0, bounds[1])] + [f.result() for f in futures]


@contextmanager
def pinnedBlas():
    """numpy's BLAS held to one thread for the block (nothing to do where the split does not apply).
    Blocks in several threads at once share one pin: the first to start saves the thread counts,
    the last to end restores them. With each block saving and restoring its own, one thread's
    restore gave BLAS its threads back while another thread's GEMMs ran, and two threads training
    MobileNets at once got weights 1e-2 away from those of the same trainings run one after the
    other (measured). So every BLAS call of the numba paths runs inside one: overBatch's, and
    Winograd's kernel transform."""
    split = _setup()
    if split is None:
        yield
        return
    blas = split[0]
    with _lock:
        if _pins["active"] == 0:
            _pins["previous"] = [c.num_threads for c in blas]
            for c in blas:
                _setThreads(c, 1)
        _pins["active"] += 1
    try:
        yield
    finally:
        with _lock:
            _pins["active"] -= 1
            if _pins["active"] == 0:
                for c, t in zip(blas, _pins["previous"]):
                    _setThreads(c, t)


def _setThreads(controller, count):
    """Set a BLAS library's thread count from any thread. threadpoolctl (3.8 here) lets only the
    first thread that set OpenBLAS's count set it again, silently ignoring the others, so the pin
    did nothing in a second training thread; the pin changes counts only under _lock (no two
    threads fight over them), so it calls the library's setter itself where threadpoolctl has that
    policy, and threadpoolctl's public one where it has not."""
    getattr(controller, "_real_set_num_threads", controller.set_num_threads)(count)


def matmul(a, b, out):
    """out = a @ b; returns out.

    2-D: split over the rows of a (and out). Batched (out.ndim >= 3): split over the leading batch
    axis; an operand of lower rank than out is broadcast (shared weights), one of out's rank is
    sliced with it.
    """
    a, b = np.asarray(a), np.asarray(b)
    if out.ndim == 2:
        def piece(t, lo, hi):
            np.matmul(a[lo:hi], b, out=out[lo:hi])
    else:
        def piece(t, lo, hi):
            np.matmul(a[lo:hi] if a.ndim == out.ndim else a, b[lo:hi] if b.ndim == out.ndim else b, out=out[lo:hi])
    overBatch(out.shape[0], piece)
    return out


# bytes of the map-major copies of one chunk of images: small enough to stay in a core's L2
CHUNK_BYTES = 1 << 20
# maps of at least this many pixels go image by image, straight from the operands
DIRECT_MIN_L = 256


def _imagesPerChunk(n, rows, l):
    """Images per chunk when `rows` rows of l floats are copied per image (at least 1, at most n)."""
    return max(1, min(n, CHUNK_BYTES // (4 * rows * l)))


def _mapMajor(buf, images):
    """Copy images (k', R, L) into buf (R, k, L), k' <= k; returns the (R, k'*L) matrix they fill."""
    r, k, l = buf.shape
    count = images.shape[0]
    np.copyto(buf[:, :count], images.transpose(1, 0, 2))
    return buf.reshape(r, k * l)[:, :count * l]


def batchGram(a, b, out):
    """out (M, P) = sum over n of a[n] @ b[n]^T, for a (N, M, L) and b (N, P, L); returns out.

    The batch is contracted inside the GEMM rather than summed afterwards: each thread takes a
    share of the images and, a few images at a time, copies them map-major ((M, k*L) and (P, k*L),
    cache-sized) so one GEMM contracts over k*L at once, adding into its own partial sum. This
    avoids both an (N, M, P) intermediate summed on one core and GEMMs with a short inner
    dimension (L is 16 for a 4x4 map). Long maps skip the copies: one GEMM per image, read in place.
    """
    a, b = np.asarray(a), np.asarray(b)
    n, m, l = a.shape
    p = b.shape[1]
    if m < p:
        # OpenBLAS ran big @ small^T 10-30% faster than small @ big^T on these shapes (measured on
        # MobileNetV2's projection layers): compute the transpose and copy it back
        np.copyto(out, batchGram(b, a, np.empty((p, m), np.float32)).T)
        return out
    k = _imagesPerChunk(n, m + p, l)

    def direct(t, lo, hi):
        acc = np.zeros((m, p), np.float32)
        tmp = np.empty((m, p), np.float32)
        for i in range(lo, hi):
            np.matmul(a[i], b[i].T, out=tmp)
            acc += tmp
        return acc

    def chunked(t, lo, hi):
        abuf, bbuf = np.empty((m, k, l), np.float32), np.empty((p, k, l), np.float32)
        acc = np.zeros((m, p), np.float32)
        tmp = np.empty((m, p), np.float32)
        for s in range(lo, hi, k):
            e = min(hi, s + k)
            np.matmul(_mapMajor(abuf, a[s:e]), _mapMajor(bbuf, b[s:e]).T, out=tmp)
            acc += tmp
        return acc

    # a long map already gives each image's GEMM a long inner dimension: no copies needed
    partials = overBatch(n, direct if l >= DIRECT_MIN_L else chunked)
    np.copyto(out, partials[0])
    for part in partials[1:]:
        out += part
    return out


def batchLeft(w, x, out):
    """out[n] = w @ x[n] for w (M, C), x (N, C, L), out (N, M, L); returns out.

    Short maps are multiplied a few images at a time through map-major copies ((C, k*L) in,
    (M, k*L) out, cache-sized), so each GEMM is k*L wide rather than L (16 for a 4x4 map), the
    width a GEMM needs to run near its peak; long maps go straight to one GEMM per image.
    """
    w, x = np.asarray(w), np.asarray(x)
    n, c, l = x.shape
    m = w.shape[0]
    if l >= DIRECT_MIN_L:
        return matmul(w, x, out)
    k = _imagesPerChunk(n, m + c, l)

    def piece(t, lo, hi):
        xbuf, ybuf = np.empty((c, k, l), np.float32), np.empty((m, k, l), np.float32)
        for s in range(lo, hi, k):
            e = min(hi, s + k)
            np.matmul(w, _mapMajor(xbuf, x[s:e]), out=ybuf.reshape(m, k * l)[:, :(e - s) * l])
            np.copyto(out[s:e].transpose(1, 0, 2), ybuf[:, :e - s])

    overBatch(n, piece)
    return out
