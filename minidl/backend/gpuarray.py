"""Backend-neutral array entry points, named after pycuda.gpuarray.

``from minidl.backend import gpuarray`` gives ``to_gpu``, ``empty``, ``zeros``
and ``GPUArray`` (the current backend's array type). On NumPy the arrays are
host arrays with pycuda's ``.get()``/``.set()``, so user code is identical on
both backends.
"""

import numpy as np

from minidl import backend as _backend


def to_gpu(ary):
    return _backend.current().to_gpu(ary)


def empty(shape, dtype=np.float32):
    return _backend.current().empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    return _backend.current().zeros(shape, dtype)


def isArray(obj):
    return _backend.current().isArray(obj)


def __getattr__(name):
    if name == "GPUArray":
        return _backend.current().ArrayType
    raise AttributeError("module 'minidl.backend.gpuarray' has no attribute %r" % name)
