"""Host arrays for the NumPy backend and the generic array ops.

``HostArray`` is an ``ndarray`` subclass that adds pycuda's ``.get()`` and
``.set()``, so code written for ``pycuda.gpuarray`` runs unchanged. Ops work on
plain ndarray views internally (no subclass overhead in the hot paths) and
wrap their results with ``host()``.
"""

import numpy as np


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
