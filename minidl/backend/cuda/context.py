"""The CUDA backend's own context and memory pool.

``ensureContext()`` retains the device's primary context (the one the CUDA
runtime, and so PyTorch, uses too, so both can share a process); arrays come
from one ``pycuda.tools.DeviceMemoryPool`` so repeated training steps reuse
freed blocks instead of calling cudaMalloc (``MINIDL_CUDA_POOL=0`` allocates
each array exactly instead, for memory checkers). Nothing happens at import:
no reliance on ``pycuda.autoinit``.

The driver keeps a current context per OS thread, so every entry point that
talks to the driver calls ``activate()`` first: the context is pushed once on
each thread that uses the backend and popped when that thread ends (pycuda
aborts the process if a thread ends with a context still pushed).

At exit the context stays current until Python has freed every array:
popping it earlier (as an atexit handler would) makes pycuda free the
remaining arrays without a context and abort.
"""

import os
import threading

import pycuda.driver as drv
from pycuda.tools import DeviceMemoryPool

from minidl.errors import BackendError

_context = None
_pool = None
_thread = threading.local()


class _ThreadBinding:
    """Pushes the context on the thread that makes it; pops it when that thread's locals go."""

    def __init__(self, context):
        self.context = context
        context.push()

    def __del__(self):
        try:
            self.context.pop()
        except drv.Error:
            pass  # the driver is already shutting down


def ensureContext():
    global _context, _pool
    if _context is None:
        index = _deviceIndex()
        _context = drv.Device(index).retain_primary_context()
        activate()
        _pool = DeviceMemoryPool() if os.environ.get("MINIDL_CUDA_POOL", "1") != "0" else None
    activate()


def _deviceIndex():
    text = os.environ.get("MINIDL_DEVICE", "0")
    try:
        index = int(text)
    except ValueError:
        raise BackendError("CUDA backend: MINIDL_DEVICE=%r is not a device number" % text) from None
    count = drv.Device.count()
    if not 0 <= index < count:
        raise BackendError("CUDA backend: MINIDL_DEVICE=%d, but the driver sees %d device(s)" % (index, count))
    return index


def activate():
    """Make the backend's context current on the calling thread (once per thread)."""
    if getattr(_thread, "binding", None) is None:
        _thread.binding = _ThreadBinding(_context)


def allocator(nbytes):
    activate()
    if _pool is None:
        return drv.mem_alloc(nbytes)
    return _pool.allocate(nbytes)


def synchronize():
    activate()
    drv.Context.synchronize()
