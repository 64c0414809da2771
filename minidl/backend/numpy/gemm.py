"""Batched matrix products, and the threads that run them, for the NumPy backend.

``matmul(a, b, out)`` is ``np.matmul`` into ``out``; ``overBatch`` runs any per-image work on the
GEMM threads. When the numba kernels are active (jit.enabled) and threadpoolctl is installed, the
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

from minidl.backend.numpy import jit

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
        if jit.enabled:
            try:
                from threadpoolctl import ThreadpoolController
                allBlas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
                # numpy's own BLAS when it can be told apart (torch may load another)
                blas = [c for c in allBlas if "numpy" in c.filepath.replace("\\", "/")] or allBlas
                parts = jit.numThreads()
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

