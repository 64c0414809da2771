"""Kernel compilation and launch.

Kernels live as ``.cu`` files in ``kernels/``. ``function(file, name, **defines)``
compiles a file once per set of compile-time defines (kernel size, stride,
dilation, multiplier, ...) and caches the module in memory; pycuda's
SourceModule keeps its own on-disk cache of the compiled cubin, so a second
process does not call nvcc again.
"""

import os
import sys

import numpy as np
from pycuda.compiler import SourceModule

from minidl.backend.cuda import context

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
BLOCK = 256
MAX_GRID = 65535 * 16

_modules = {}


def function(file, name, **defines):
    key = (file, tuple(sorted(defines.items())))
    module = _modules.get(key)
    if module is None:
        with open(os.path.join(KERNELS, file)) as f:
            source = f.read()
        header = "".join("#define %s %s\n" % item for item in sorted(defines.items()))
        # #line: compiler errors (and a memory checker's reports) name the .cu file and its own lines;
        # the .cu files declare extern "C" themselves, so nvcc's PTX check compiles exactly this text
        text = '%s#line 1 "%s"\n%s' % (header, os.path.join(KERNELS, file), source)
        context.activate()
        module = SourceModule(text, no_extern_c=True, options=["-O3"], include_dirs=[KERNELS])
        _modules[key] = module
    return module.get_function(name)


def launch(fn, n, *args, block=BLOCK):
    """Launch a grid-stride kernel over n elements (none for n == 0)."""
    if n == 0:
        return
    grid = int(min((n + block - 1) // block, MAX_GRID))
    context.activate()
    fn(*args, block=(block, 1, 1), grid=(grid, 1))


def launchBlocks(fn, blocks, block, *args):
    """Launch one block per item (per-channel reductions; none for no items)."""
    if blocks == 0:
        return
    context.activate()
    fn(*args, block=(block, 1, 1), grid=(int(blocks), 1))


def _callingOp():
    """The name of the backend op that was called: the outermost frame inside this package."""
    frame = sys._getframe(2)
    name = frame.f_code.co_name
    while frame.f_back is not None and frame.f_back.f_globals.get("__name__", "").startswith(__package__):
        frame = frame.f_back
        name = frame.f_code.co_name
    return name


def ptr(a, offset=0):
    """Device address of a GPUArray (or None -> null), plus an offset in float32 elements.

    Every kernel and GEMM indexes its arrays as dense C-order blocks, so a strided view (x[:, :2],
    x.T) is refused here, naming the op, rather than read as if it were dense. An empty array has
    no memory: its address is null, and the ops launch nothing over it.
    """
    if a is None or a.size == 0:
        return np.uintp(0)
    if not a.flags.c_contiguous:
        op = _callingOp()
        raise ValueError("CUDA backend: %s got a non-contiguous array of shape %s, strides %s (a view); the CUDA "
                         "ops read dense C-order arrays: pass a contiguous copy (x.copy())" % (op, a.shape, a.strides))
    return np.uintp(int(a.gpudata) + 4 * offset)


def planes(shape):
    """(N, C, L) of an (N, C, ...) shape, L the product of the rest (also for an empty batch)."""
    return shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))


def i32(v):
    return np.int32(v)


def i64(v):
    return np.int64(v)


def f32(v):
    return np.float32(v)
