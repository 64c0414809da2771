"""Backend-neutral array entry points, named after pycuda.gpuarray.

``from minidl.backend import gpuarray`` gives ``to_gpu``, ``empty``, ``zeros``
and ``GPUArray`` (the current backend's array type). On NumPy the arrays are
host arrays with pycuda's ``.get()``/``.set()``, so user code is identical on
both backends.
"""

import contextlib
import math
import threading

import numpy as np

from minidl import backend as _backend


class BudgetExceeded(MemoryError):
    """An allocation inside ``allocationBudget`` would pass the budget; nothing was allocated."""


_budget = threading.local()


@contextlib.contextmanager
def allocationBudget(nbytes, what):
    """Let the calling thread allocate at most nbytes through to_gpu/empty/zeros inside the block;
    the one that would pass it raises BudgetExceeded (naming ``what``) before allocating. For
    building a model a file describes (minidl.blueprint), so a small file cannot demand a large
    allocation. Not reentrant on one thread."""
    _budget.left, _budget.what = int(nbytes), what
    try:
        yield
    finally:
        _budget.left = None


def _charge(shape, dtype):
    left = getattr(_budget, "left", None)
    if left is None:
        return
    nbytes = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    if nbytes > left:
        raise BudgetExceeded("%s: an array of shape %s would pass the %d bytes left of the allocation budget"
                             % (_budget.what, shape, left))
    _budget.left = left - nbytes


def to_gpu(ary):
    _charge(tuple(np.shape(ary)), getattr(ary, "dtype", np.float32))
    return _backend.current().to_gpu(ary)


def empty(shape, dtype=np.float32):
    _charge(_shapeTuple(shape), dtype)
    return _backend.current().empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    _charge(_shapeTuple(shape), dtype)
    return _backend.current().zeros(shape, dtype)


def _shapeTuple(shape):
    return tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)


def isArray(obj):
    return _backend.current().isArray(obj)


def __getattr__(name):
    if name == "GPUArray":
        return _backend.current().ArrayType
    raise AttributeError("module 'minidl.backend.gpuarray' has no attribute %r" % name)
