"""The CUDA backend's own context and memory pool.

``ensureContext()`` retains the device's primary context (the one the CUDA
runtime, and so PyTorch, uses too, so both can share a process) and makes it
current; arrays come from one ``pycuda.tools.DeviceMemoryPool`` so repeated
training steps reuse freed blocks instead of calling cudaMalloc. Nothing
happens at import: no reliance on ``pycuda.autoinit``.
"""

import atexit
import os

import pycuda.driver as drv
from pycuda.tools import DeviceMemoryPool

from minidl.errors import BackendError

_context = None
_pool = None


def ensureContext():
    global _context, _pool
    if _context is not None:
        return
    index = int(os.environ.get("MINIDL_DEVICE", "0"))
    count = drv.Device.count()
    if not 0 <= index < count:
        raise BackendError("CUDA backend: MINIDL_DEVICE=%d, but the driver sees %d device(s)" % (index, count))
    _context = drv.Device(index).retain_primary_context()
    _context.push()
    _pool = DeviceMemoryPool()
    atexit.register(_release)


def _release():
    global _context
    if _context is None:
        return
    try:
        _pool.free_held()
        _context.pop()
    except drv.Error:
        pass  # the driver may already be shutting down at exit
    _context = None


def allocator(nbytes):
    return _pool.allocate(nbytes)


def synchronize():
    drv.Context.synchronize()
