"""Host arrays for the NumPy backend and the generic array ops.

``HostArray`` is an ``ndarray`` subclass that adds pycuda's ``.get()`` and
``.set()``, so code written for ``pycuda.gpuarray`` runs unchanged. Ops work on
plain ndarray views internally (no subclass overhead in the hot paths) and
wrap their results with ``host()``.
"""

import math
import os
import sys

import numpy as np


class Workspace:
    """Reuses large host buffers between calls.

    Fresh large allocations are expensive here: glibc hands big blocks straight
    back to the OS on free, so every new output page-faults again (several
    times the cost of the arithmetic for memory-bound layers). Op outputs of
    POOL_MIN bytes or more come from here instead. A buffer is handed out again
    only when nothing outside the pool references it: every array made from it
    (views, reshapes, HostArray wrappers) holds its base alive, so the
    reference count says when it is free. Training loops repeat the same shapes
    every step, so after the first step nothing new is allocated. Free buffers
    are dropped when the pool would exceed MINIDL_WORKSPACE_MB (default 8192).
    """

    POOL_MIN = 1 << 18

    def __init__(self, limitBytes):
        self.buckets = {}
        self.limit = limitBytes
        self.held = 0

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
        bucket = self.buckets.setdefault(nbytes, [])
        for k in range(len(bucket) - 1, -1, -1):
            buf = bucket[k]
            if self._isFree(buf):
                del bucket[k]
                bucket.append(buf)
                return buf.view(dtype).reshape(shape)
        if self.held + nbytes > self.limit:
            self.release()
        buf = np.empty(nbytes, np.uint8)
        self.buckets.setdefault(nbytes, []).append(buf)
        self.held += nbytes
        return buf.view(dtype).reshape(shape)

    def release(self):
        """Drop every buffer that is not in use."""
        for nbytes, bucket in list(self.buckets.items()):
            keep = [buf for buf in bucket if not self._isFree(buf)]
            self.held -= nbytes * (len(bucket) - len(keep))
            self.buckets[nbytes] = keep


workspace = Workspace(int(os.environ.get("MINIDL_WORKSPACE_MB", "8192")) << 20)


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
