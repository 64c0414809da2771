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
    """A new array of the current backend holding a copy of ary (a numpy array or anything numpy
    takes), its shape and dtype kept; ``.get()`` copies it back to a numpy array.

    Example::

        >>> x = gpuarray.to_gpu(np.arange(6, dtype=np.float32).reshape(2, 3))
        >>> x.shape, x.dtype, x.get()[1]
        ((2, 3), dtype('float32'), array([3., 4., 5.], dtype=float32))
    """
    _charge(tuple(np.shape(ary)), getattr(ary, "dtype", np.float32))
    return _backend.current().to_gpu(ary)


def empty(shape, dtype=np.float32):
    """A new, uninitialised array of the current backend of the given shape (an int or a tuple)
    and dtype (float32 by default)."""
    _charge(_shapeTuple(shape), dtype)
    return _backend.current().empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    """A new array of zeros of the current backend, of the given shape (an int or a tuple) and
    dtype (float32 by default).

    Example::

        >>> gpuarray.zeros((2, 3)).shape, gpuarray.zeros(4, np.int32).dtype
        ((2, 3), dtype('int32'))
    """
    _charge(_shapeTuple(shape), dtype)
    return _backend.current().zeros(shape, dtype)


def _shapeTuple(shape):
    return tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)


def isArray(obj):
    """True when obj is an array of the current backend (not a plain numpy array on either)."""
    return _backend.current().isArray(obj)


def __getattr__(name):
    if name == "GPUArray":
        return _backend.current().ArrayType
    raise AttributeError("module 'minidl.backend.gpuarray' has no attribute %r" % name)
