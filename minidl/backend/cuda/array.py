"""Device arrays (pycuda GPUArrays from the backend's memory pool) and the generic array ops."""

import numpy as np
import pycuda.driver as drv
import pycuda.gpuarray as pga

from minidl.backend.cuda import context
from minidl.backend.cuda.compiler import function, i64, launch, ptr

ArrayType = pga.GPUArray


def to_gpu(ary):
    if isinstance(ary, pga.GPUArray):
        return copy(ary)
    # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it (1,))
    return pga.to_gpu(np.require(ary, requirements="C"), allocator=context.allocator)


def empty(shape, dtype):
    return pga.empty(shape, dtype, allocator=context.allocator)


def zeros(shape, dtype):
    out = empty(shape, dtype)
    if out.size:        # pycuda's fill launches a kernel, which fails over no elements
        out.fill(0)
    return out


def isArray(obj):
    return isinstance(obj, pga.GPUArray)


def copy(x):
    source = ptr(x)  # refuses a strided view
    y = empty(x.shape, x.dtype)
    if x.nbytes:
        context.activate()
        drv.memcpy_dtod(int(ptr(y)), int(source), x.nbytes)
    return y


def axpy(y, x, alpha):
    launch(function("elementwise.cu", "axpy"), y.size, ptr(y), ptr(x), np.float32(alpha), i64(y.size))


def addArrays(xs):
    out = copy(xs[0])
    for x in xs[1:]:
        axpy(out, x, 1.0)
    return out


def _blocks(shape, axis):
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    return outer, int(np.prod(shape[axis:], dtype=np.int64))


def concat(xs, axis):
    axis = axis % len(xs[0].shape)
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = empty(tuple(shape), xs[0].dtype)
    outer, innerDst = _blocks(shape, axis)
    offset = 0
    fn = function("elementwise.cu", "copyBlock")
    for x in xs:
        _, innerSrc = _blocks(x.shape, axis)
        launch(fn, outer * innerSrc, ptr(out), ptr(x), i64(outer), i64(innerSrc),
               i64(innerDst), i64(offset), np.int32(1))
        offset += innerSrc
    return out


def split(x, sections, axis):
    axis = axis % len(x.shape)
    outer, innerBig = _blocks(x.shape, axis)
    fn = function("elementwise.cu", "copyBlock")
    pieces, offset = [], 0
    for size in sections:
        shape = list(x.shape)
        shape[axis] = size
        piece = empty(tuple(shape), x.dtype)
        _, inner = _blocks(shape, axis)
        launch(fn, outer * inner, ptr(piece), ptr(x), i64(outer), i64(inner),
               i64(innerBig), i64(offset), np.int32(0))
        pieces.append(piece)
        offset += inner
    return pieces


def _extent(x):
    """[first, last + 1) byte addresses x's elements occupy (a view's strides may be negative)."""
    if x.size == 0:
        return 0, 0
    start = int(x.gpudata)
    low = sum((n - 1) * s for n, s in zip(x.shape, x.strides) if s < 0)
    high = sum((n - 1) * s for n, s in zip(x.shape, x.strides) if s > 0)
    return start + low, start + high + x.dtype.itemsize


def mayShareMemory(a, b):
    (a0, a1), (b0, b1) = _extent(a), _extent(b)
    return a0 < b1 and b0 < a1
