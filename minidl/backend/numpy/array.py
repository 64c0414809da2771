"""Host arrays for the NumPy backend and the generic array ops.

``HostArray`` is an ``ndarray`` subclass that adds pycuda's ``.get()`` and
``.set()``, so code written for ``pycuda.gpuarray`` runs unchanged. Ops work on
plain ndarray views internally (no subclass overhead in the hot paths) and
wrap their results with ``host()``.
"""

import math
import sys
import threading

import numpy as np

from minidl.backend.numpy.memlimit import workspaceLimit


class Workspace:
    """Reuses large host buffers between calls, holding at most limitBytes in all.

    Fresh large allocations are expensive here: glibc hands blocks above its
    mmap threshold (which grows with use, up to 32 MiB) straight back to the OS
    on free, so every new output that large page-faults again (several times
    the cost of the arithmetic for memory-bound layers). Op outputs of
    POOL_MIN bytes or more come from here instead: a free buffer of the size
    asked for, else the front of the smallest free one up to REUSE_LARGER times
    that size. A buffer is handed out again
    only when nothing outside the pool references it: every array made from it
    (views, reshapes, HostArray wrappers) holds its base alive, so the
    reference count says when it is free.

    Every buffer the pool keeps counts, in use or free. A request that finds no
    free buffer to take drops free buffers, least recently handed out first,
    until the pool holds no more than the most it ever had in use at once
    (peakInUse, this request included) and no more than the limit; if the
    buffers in use leave no room under the limit even then, the request gets a
    plain array the pool does not keep (freed as usual when its last reference
    goes). Kept free beside those in use, a training step's buffers of one size
    (its forward's) sat idle while those of another (its backward's) were new:
    MobileNetV3-Small held 346 MB at batch 64 with at most 312 MB in use. Now
    such a loop hands some buffers back to malloc each step and takes new ones
    (MobileNetV2-0.5: 19 a step, 128 MB), which glibc serves from the memory
    just freed, those under its mmap threshold (measured: under 1 MB of page
    faults a step; step times unchanged, benchmarks/RESULTS.md). A loop over
    ever new shapes (batch sizes 1, 2, 3, ...) keeps recycling the pool rather
    than adding a new set of buffers per shape. Thread-safe: one lock around
    the bookkeeping.
    """

    POOL_MIN = 1 << 18
    # A request with no free buffer of its own size takes the front of a free one up to this many
    # times larger. Exact sizes alone kept each size's own peak: a training step's backward frees
    # gradients of one size and asks for another, so MobileNetV3-Small (many sizes) held 396 MB of
    # buffers at batch 64 against at most 312 MB in use at once; with 2, 363 MB (346 MB with the
    # containers' release of the last pass too, 310 MB with the peakInUse rule; benchmarks/RESULTS.md).
    REUSE_LARGER = 2

    def __init__(self, limitBytes):
        self.buckets = {}       # size in bytes -> buffers of that size, most recently handed out last
        self.limit = limitBytes
        self.held = 0           # bytes of every buffer kept, in use or free
        self.lastUse = {}       # id(buffer) -> the request count when it was last handed out
        self.requests = 0
        self.peakInUse = 0      # bytes: the most the buffers in use ever took at once
        self.lock = threading.Lock()

    @staticmethod
    def _isFree(buf):
        # references when free: the bucket list, the caller's loop variable, this parameter and
        # getrefcount's argument; any array made from the buffer adds one
        return sys.getrefcount(buf) <= 4

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.POOL_MIN:
            return np.empty(shape, dtype)
        with self.lock:
            self.requests += 1
            buf = self._reuse(nbytes)
            if buf is None:
                buf = self._allocate(nbytes)
            return buf.view(dtype).reshape(shape)

    def _reuse(self, nbytes):
        """A free buffer of nbytes, else the first nbytes of the smallest free one of at most
        REUSE_LARGER times that (now the most recently used), or None. The caller holds the lock."""
        k = self._freeIndex(self.buckets.get(nbytes, ()))
        size = nbytes
        if k is None:
            size = None
            for other, bucket in self.buckets.items():
                if nbytes < other <= self.REUSE_LARGER * nbytes and (size is None or other < size):
                    j = self._freeIndex(bucket)
                    if j is not None:
                        size, k = other, j
            if size is None:
                return None
        bucket = self.buckets[size]
        buf = bucket.pop(k)
        bucket.append(buf)
        self.lastUse[id(buf)] = self.requests
        return buf if size == nbytes else buf[:nbytes]

    def _freeIndex(self, bucket):
        """The index of the most recently handed out free buffer in bucket, or None."""
        for k in range(len(bucket) - 1, -1, -1):
            buf = bucket[k]
            if self._isFree(buf):
                return k
        return None

    def _allocate(self, nbytes):
        """A new buffer, kept when there is room. Free buffers are dropped first (least recently
        handed out first) so that the pool holds no more than the most it ever had in use at once,
        nor more than the limit. The caller holds the lock."""
        free = self._free()
        inUse = self.held - sum(size for _, size, _ in free)
        self.peakInUse = max(self.peakInUse, inUse + nbytes)
        self._drop(free, self.held + nbytes - min(self.peakInUse, self.limit))
        buf = np.empty(nbytes, np.uint8)
        if self.held + nbytes <= self.limit:
            self.buckets.setdefault(nbytes, []).append(buf)
            self.lastUse[id(buf)] = self.requests
            self.held += nbytes
        return buf

    def _free(self):
        """[(last handed out, size, id)] of the free buffers. The caller holds the lock."""
        free = []
        for nbytes, bucket in self.buckets.items():
            for buf in bucket:
                if self._isFree(buf):
                    free.append((self.lastUse[id(buf)], nbytes, id(buf)))
        return free

    def _drop(self, free, need):
        """Drop buffers of free (_free's list), least recently handed out first, until need bytes
        are dropped or none is left. The caller holds the lock."""
        if need <= 0:
            # the usual case (a pool under its peak): no sort, and no rebuild of every bucket
            return
        dropped = set()
        for _, nbytes, key in sorted(free):
            if need <= 0:
                break
            dropped.add(key)
            need -= nbytes
        self._forget(dropped)

    def _forget(self, keys):
        """Take the buffers whose ids are in keys out of the pool. The caller holds the lock."""
        for nbytes, bucket in list(self.buckets.items()):
            keep = [buf for buf in bucket if id(buf) not in keys]
            self.held -= nbytes * (len(bucket) - len(keep))
            if keep:
                self.buckets[nbytes] = keep
            else:
                del self.buckets[nbytes]
        for key in keys:
            del self.lastUse[key]

    def release(self):
        """Drop every buffer that is not in use, and start the count of the most in use afresh."""
        with self.lock:
            self._forget({key for _, _, key in self._free()})
            self.peakInUse = self.held


workspace = Workspace(workspaceLimit())


def allFinite(a):
    """Whether every element of a is finite: for the small arrays (weights, per-channel sums) a
    kernel's result is checked by before it is trusted (see jit.py on non-finite values)."""
    return bool(np.isfinite(a).all())


def contiguous(a):
    """A C-contiguous plain ndarray view of a, what the kernels take (copied only when it is not)."""
    return np.ascontiguousarray(np.asarray(a))


_EMPTY = np.empty(0, dtype=np.float32)


def vectorOrEmpty(a):
    """A bias or its gradient as a flat array, a size-0 one for None: the kernels test the size."""
    return _EMPTY if a is None else np.asarray(a).reshape(-1)


def new(shape, dtype=np.float32):
    """An uninitialised plain ndarray for an op's output, from the workspace."""
    return workspace.empty(shape, dtype)


class HostArray(np.ndarray):
    """A numpy array that answers pycuda.gpuarray's host-transfer methods."""

    def get(self):
        """A plain numpy.ndarray copy of the contents (pycuda's device-to-host copy)."""
        return np.array(self, copy=True, subok=False)

    def set(self, ary):
        """Overwrite the contents from a host array of the same shape (pycuda's host-to-device copy)."""
        ary = np.asarray(ary)
        if ary.shape != self.shape:
            raise ValueError("set: expected an array of shape %s, got %s" % (self.shape, ary.shape))
        np.copyto(self, ary, casting="same_kind")


ArrayType = HostArray


def host(a):
    """View an ndarray as a HostArray (no copy)."""
    return a if type(a) is HostArray else a.view(HostArray)


def to_gpu(ary):
    return host(np.array(ary, copy=True, order="C", subok=False))


def empty(shape, dtype):
    return host(np.empty(shape, dtype=dtype))


def zeros(shape, dtype):
    return host(np.zeros(shape, dtype=dtype))


def isArray(obj):
    return isinstance(obj, HostArray)


def copy(x):
    return host(np.array(x, copy=True, subok=False))


def axpy(y, x, alpha):
    if alpha == 1.0:
        np.add(y, x, out=y)
    else:
        y += np.float32(alpha) * np.asarray(x)


def addArrays(xs):
    out = np.array(xs[0], copy=True, subok=False)
    for x in xs[1:]:
        np.add(out, x, out=out)
    return host(out)


def concat(xs, axis):
    return host(np.concatenate([np.asarray(x) for x in xs], axis=axis))


def split(x, sections, axis):
    bounds = np.cumsum(sections)[:-1]
    return [host(np.ascontiguousarray(part)) for part in np.split(np.asarray(x), bounds, axis=axis)]


def mayShareMemory(a, b):
    return bool(np.may_share_memory(a, b))
