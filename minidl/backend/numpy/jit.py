"""numba set-up for the NumPy backend's kernels: availability, options, threads, chunking.

Every kernel file of the backend compiles through the decorators here, so one place says how the
package's kernels are built:

- ``parallel`` / ``serial``: fast-math that keeps NaN and infinity (FASTMATH below); ``parallel``
  kernels run their ``prange`` loops on numba's threads and launch through ``launcher``.
- ``parallelExact`` / ``serialExact``: no fast-math, so results equal the NumPy formulas bit for bit
  (clip, hard activations, optimizer rules).
- ``inline`` / ``inlineMath``: helpers inlined into the kernels that call them (numba optimises a
  callee again inside every caller, so small helpers are inlined rather than called).

Without numba (not installed, or MINIDL_NUMBA=0) ``enabled`` is False, the decorators return the
Python functions unchanged and ``prange`` is ``range``: kernel files still import, and the routing
plans (routing.py) send every op to its NumPy implementation, so no kernel is ever called.

Compiling: numba compiles a kernel at its first call, for that call's argument types; callers pass
C-contiguous float32 arrays, so each kernel compiles once. The machine code goes to numba's disk
cache (cache=CACHE): __pycache__ beside the kernel files, or where that is read-only numba's
user-wide folder (~/.cache/numba), or NUMBA_CACHE_DIR. So only the first run of an install (or
after an edit) compiles, ~25 s for a MobileNet's kernels on 2 cores; notices.py says so once on
stderr (MINIDL_QUIET=1 silences it). With no writable folder the kernels compile in every process.
Written for short compiles: a parallel kernel costs ~2.3x the compile time of the same loops
serial, and numba compiles error-message code for an axis reduction such as a.sum(axis=0), or for
a slice assignment from an array outside a prange loop (~1-2 s per process for each kind), so the
kernels use plain loops there.

Threads: ``configure()`` picks numba's threading layer, loading numba's OpenMP runtime with passive
waiting where it can (see _loadPassiveRuntime). It runs when the NumPy backend is selected
(minidl.backend.setBackend), not at import, and at the latest before the first parallel launch,
where numba reads its layer.
"""

import functools
import os
import sys
import threading

import numpy as np

from minidl.backend.numpy import notices

enabled = False
CACHE = False                       # whether kernels are cached on disk (see _diskCache)
disabledBy = "MINIDL_NUMBA=0"       # why the kernels are off, for notices.withoutKernels; None when on
if os.environ.get("MINIDL_NUMBA", "1") != "0":
    try:
        import numba
        enabled, disabledBy = True, None
    except ImportError as error:
        disabledBy = "numba: %s" % error

# Fast-math flags for every kernel that takes them: 'reassoc' lets sums run (and vectorise) in any
# order and 'contract' fuses a multiply and an add into one rounding. Neither assumes away NaN or
# infinity, so neither changes which results are non-finite: a NaN term makes any order of the sum
# NaN, +inf and -inf give NaN in any order, and only a sum or product within rounding of float32's
# overflow could land differently (as with any change of rounding). Not taken: 'nnan' and 'ninf'
# (with them LLVM folded ReLU's comparisons into a max that turned NaN into 0), 'nsz', 'arcp' and
# 'afn' (sign of zero, reciprocals, approximate functions). Measured against full fast-math: the
# MobileNet-0.5 training steps and the depthwise, Winograd and batch-norm ops each within 2%.
# Where a kernel's shortcut can still put a NaN where the formula would not (it multiplies pixels
# outside a window, or padding and seams, by zeros; Winograd's tiles mix neighbours), its caller
# checks the result and takes an exact path (see each op family's file).
FASTMATH = {"reassoc", "contract"}


def _cacheProbe():
    return 0


def _diskCache():
    """Whether numba has a writable folder for this package's disk cache of compiled kernels:
    NUMBA_CACHE_DIR when set, else __pycache__ beside these files, else (a read-only install) its
    user-wide cache folder, ~/.cache/numba on Linux. With none, cache=True would make numba raise
    RuntimeError at import ("no locator available"); the kernels then compile without the disk
    cache, in every process (and notices.COMPILING_UNCACHED says so)."""
    try:
        numba.njit(cache=True)(_cacheProbe)       # numba picks the folder here; nothing compiles
    except RuntimeError:
        return False
    return True


if enabled:
    from numba import prange  # noqa: F401  (the kernel files' parallel loop)
    CACHE = _diskCache()
    notices.watchCompiles(CACHE)
else:
    prange = range


# ---- threads --------------------------------------------------------------------------------------

def _openmpFiles():
    """The OpenMP runtime files loaded in this process (None where /proc cannot tell)."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split(None, 5)[-1].strip() for line in maps
                    if "libgomp" in line or "libiomp" in line or "libomp" in line}
    except OSError:
        return None


def _loadPassiveRuntime():
    """Load numba's OpenMP layer now, with passive waiting, and say whether that worked.

    Spinning pools are the enemy on a small machine: an OpenMP thread that spins after its
    parallel region steals the core from the GEMM thread that runs next (measured: a training step
    twice as long). With passive waiting OpenMP's threads sleep at once, and the calling thread
    takes a share of every region, so a region costs one wake-up instead of the three of workqueue
    (two workers, then the caller): a MobileNet training step ~10% faster.

    libgomp reads OMP_WAIT_POLICY once, when it loads. So minidl loads numba's OpenMP layer (the
    extension numba itself loads for the layer) with the variable set to passive, then takes it out
    of the environment again: the user's environment and subprocesses never see it, nor does a
    runtime another library loaded earlier. The PyTorch and scikit-learn wheels bring their own
    copies of libgomp, and numba's wheel links the system's by its full name (libgomp.so.1.0.0), so
    numba's is a runtime of its own even when they were imported first (with the binding below).
    A library loaded later that asks for the same runtime gets this one, passive waiting included:
    the PyTorch wheel's libgomp has the system's soname (libgomp.so.1), so a PyTorch imported after
    the NumPy backend is selected runs its OpenMP on numba's runtime (README, "Speed on the CPU").

    Returns False (and workqueue is taken) where the layer cannot load, where this cannot be done
    or checked (no dlopen flags, no /proc: not Linux), or where numba's runtime was already loaded
    (by another library, with settings of its own).
    """
    before = _openmpFiles()
    if before is None or not hasattr(sys, "setdlopenflags"):
        return False
    flags = sys.getdlopenflags()
    os.environ["OMP_WAIT_POLICY"] = "passive"
    # RTLD_DEEPBIND: the extension's OpenMP calls bind to the runtime it is linked with, loaded
    # here, and not to one already in the process's global symbol scope: PyTorch puts its libgomp
    # there, and without this numba's parallel regions ran on PyTorch's runtime, whose threads spin
    # after every region (measured: the pointwise GEMM after a depthwise kernel 1.9x slower).
    sys.setdlopenflags(flags | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        from numba.np.ufunc import omppool  # noqa: F401  (loads libgomp, which reads the policy)
    except ImportError:
        return False                        # no libgomp on this machine
    finally:
        sys.setdlopenflags(flags)
        os.environ.pop("OMP_WAIT_POLICY", None)
    after = _openmpFiles()
    return after is not None and bool(after - before)


def _threadingLayer():
    """numba's threading layer: OpenMP with passive waiting where that can be had, else workqueue.
    A policy the user set stands: passive gives OpenMP, any other (spinning) gives workqueue; an
    empty one is unset, as for libgomp."""
    policy = os.environ.get("OMP_WAIT_POLICY", "")
    if policy:
        return "omp" if policy.lower() == "passive" else "workqueue"
    user = os.environ.pop("OMP_WAIT_POLICY", None)    # "" or None: put back as it was
    try:
        return "omp" if _loadPassiveRuntime() else "workqueue"
    finally:
        if user is not None:
            os.environ["OMP_WAIT_POLICY"] = user


_configured = []
_configureLock = threading.Lock()


def configure():
    """Choose numba's threading layer for this process, once (the user's NUMBA_THREADING_LAYER
    stands). Called when the NumPy backend is selected, and by the first parallel launch."""
    if _configured or not enabled:
        return
    with _configureLock:    # two threads' first launches at once: one loads the runtime
        if _configured:
            return
        if "NUMBA_THREADING_LAYER" not in os.environ:
            if _threadingLayer() == "omp":
                # workqueue stays the fallback where numba's OpenMP layer cannot load (no libgomp)
                numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
                numba.config.THREADING_LAYER = "default"
            else:
                numba.config.THREADING_LAYER = "workqueue"
        _configured.append(True)


def numThreads():
    """numba's thread count. Asking starts numba's threads, so configure() runs first."""
    if not enabled:
        return 1
    configure()
    return numba.get_num_threads()


def parallelChunks():
    """How many parallel tasks to split plane loops into (a few per thread, for balance)."""
    return 4 * numThreads()


# numba's workqueue layer (taken where numba's OpenMP runtime cannot be loaded passive, or with the
# user's OMP_WAIT_POLICY=active: see _threadingLayer) aborts the process when two threads launch
# parallel kernels at once. Launches are serialised while the layer is, or may be, workqueue: until the first
# launch has run numba has not picked its layer, so that one holds the lock too. The OpenMP and TBB
# layers take concurrent launches, so there the lock is skipped (the check costs 0.1 us a launch).
# On workqueue the lock measured at most 3 us a launch, against ~50 us for workqueue's own launch; a
# MobileNetV2-0.5 training step makes 292 launches (V1: 174).
_launchLock = threading.Lock()
_serialise = [None]         # unknown until the first launch; then whether the layer is workqueue


def launcher(kernel):
    """A launcher for the compiled parallel kernel that holds _launchLock where the layer needs it."""
    @functools.wraps(kernel.py_func)
    def launch(*args):
        if _serialise[0] is False:
            return kernel(*args)
        configure()
        with _launchLock:
            result = kernel(*args)
            if _serialise[0] is None:
                _serialise[0] = numba.threading_layer() == "workqueue"
        return result
    launch.kernel = kernel
    return launch


# ---- decorators -----------------------------------------------------------------------------------

def _compiler(launched=False, **options):
    """A decorator compiling with these options (the function itself without numba)."""
    def decorate(fn):
        if not enabled:
            return fn
        kernel = numba.njit(cache=CACHE, **options)(fn)
        return launcher(kernel) if launched else kernel
    return decorate


parallel = _compiler(launched=True, parallel=True, fastmath=FASTMATH, nogil=True)
parallelExact = _compiler(launched=True, parallel=True, fastmath=False, nogil=True)
serial = _compiler(fastmath=FASTMATH, nogil=True)
serialExact = _compiler(fastmath=False, nogil=True)
inline = _compiler(inline="always")
inlineMath = _compiler(inline="always", fastmath=FASTMATH)
plain = _compiler()


# ---- chunking -------------------------------------------------------------------------------------

@inline
def chunk(t, chunks, total):
    """The t-th of `chunks` near-equal ranges over [0, total): each parallel task reuses its scratch."""
    return t * total // chunks, (t + 1) * total // chunks

