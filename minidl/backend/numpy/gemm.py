"""Batched matrix products for the NumPy backend.

``matmul(a, b, out)`` is ``np.matmul`` into ``out``. When the
numba kernels are active (accel.enabled) and threadpoolctl is installed, the
work is split over a few Python threads (NumPy releases the GIL inside
matmul) while numpy's BLAS is pinned to one thread for the call. Why: a
multi-threaded OpenBLAS call leaves its worker threads spinning for a while
afterwards, and on a small machine they starve the numba kernels that run
next (measured on 2 cores: a MobileNet training step 30% slower). Splitting
over the batch keeps both cores busy without a second spinning pool. The
previous BLAS thread count is restored after every call, so numpy code
outside minidl is unaffected.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minidl.backend.numpy import accel

_state = {}


def _setup():
    """(BLAS controllers, executor, parts), or None when the split does not apply."""
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
    return _state["split"]


def matmul(a, b, out):
    """out = a @ b; returns out.

    2-D: split over the rows of a (and out). Batched (out.ndim >= 3): split over the leading batch
    axis; an operand of lower rank than out is broadcast (shared weights), one of out's rank is
    sliced with it.
    """
    a, b = np.asarray(a), np.asarray(b)
    split = _setup()
    n = out.shape[0]
    if split is None or n < 2:
        return np.matmul(a, b, out=out)
    blas, executor, parts = split
    if out.ndim == 2:
        def piece(lo, hi):
            np.matmul(a[lo:hi], b, out=out[lo:hi])
    else:
        def piece(lo, hi):
            np.matmul(a[lo:hi] if a.ndim == out.ndim else a, b[lo:hi] if b.ndim == out.ndim else b, out=out[lo:hi])
    bounds = [n * k // parts for k in range(parts + 1)]
    previous = [c.num_threads for c in blas]
    for c in blas:
        c.set_num_threads(1)
    try:
        futures = [executor.submit(piece, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        piece(0, bounds[1])
        for f in futures:
            f.result()
    finally:
        for c, t in zip(blas, previous):
            c.set_num_threads(t)
    return out
