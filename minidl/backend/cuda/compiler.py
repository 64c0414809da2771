"""Kernel compilation and launch.

Kernels live as ``.cu`` files in ``kernels/``. ``function(file, name, **defines)``
compiles a file once per set of compile-time defines (kernel size, stride,
dilation, multiplier, ...) and caches the module in memory; pycuda's
SourceModule keeps its own on-disk cache of the compiled cubin, so a second
process does not call nvcc again.
"""

import os

import numpy as np
from pycuda.compiler import SourceModule

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
        # the .cu files declare extern "C" themselves, so nvcc's PTX check compiles exactly this text
        module = SourceModule(header + source, no_extern_c=True, options=["-O3"], include_dirs=[KERNELS])
        _modules[key] = module
    return module.get_function(name)


def launch(fn, n, *args, block=BLOCK):
    """Launch a grid-stride kernel over n elements."""
    grid = int(min(max((n + block - 1) // block, 1), MAX_GRID))
    fn(*args, block=(block, 1, 1), grid=(grid, 1))


def launchBlocks(fn, blocks, block, *args):
    """Launch one block per item (per-channel reductions)."""
    fn(*args, block=(block, 1, 1), grid=(int(blocks), 1))


def ptr(a, offset=0):
    """Device address of a GPUArray (or None -> null), plus an offset in float32 elements."""
    if a is None:
        return np.uintp(0)
    return np.uintp(int(a.gpudata) + 4 * offset)


def i32(v):
    return np.int32(v)


def i64(v):
    return np.int64(v)


def f32(v):
    return np.float32(v)
