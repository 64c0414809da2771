"""The CPU execution of the CUDA backend (tools/cudaemu) catches what a GPU run would show.

These run only on the emulator (`tools/cudaemu/run` with MINIDL_BACKEND=cuda, as .ci/run does);
on a real GPU or without pycuda they are skipped. Each injected fault is applied to a copy of
the kernel sources (or to one call site), run through minidl's real modules, and must be caught:
as a launch error naming the fault, or as outputs that differ from the NumPy backend's. The same
check on the unmodified code must pass, so a catch is the fault's doing.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minidl.backend as B
from emulation import cudaEmulated
from minidl.backend import gpuarray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.skipif(not cudaEmulated(), reason="needs the CPU execution of CUDA (tools/cudaemu/run)")


@pytest.fixture
def cuda(backend):
    if backend != "cuda":
        pytest.skip("emulator checks run on the CUDA backend")
    return backend


@pytest.fixture
def mutate(monkeypatch, tmp_path):
    """apply(file, old, new): the kernels compiled from now on come from a copy with `old` -> `new`."""
    from minidl.backend.cuda import compiler
    copy = tmp_path / "kernels"
    shutil.copytree(compiler.KERNELS, copy)
    monkeypatch.setattr(compiler, "KERNELS", str(copy))
    monkeypatch.setattr(compiler, "_modules", {})

    def apply(file, old, new):
        text = (copy / file).read_text()
        assert text.count(old) == 1, "the fault's anchor must occur once in %s: %r" % (file, old)
        (copy / file).write_text(text.replace(old, new))
        compiler._modules.clear()  # what was compiled before the edit must not be reused
    return apply


def _outputs(build, x, backend):
    """Forward and backward of a freshly built module on one backend (same seed, same weights)."""
    B.setBackend(backend)
    np.random.seed(7)
    module = build()
    y = module(gpuarray.to_gpu(x)).get()
    dy = np.random.RandomState(3).randn(*y.shape).astype(np.float32)
    dx = module.backward(gpuarray.to_gpu(dy)).get()
    grads = [v.grad.get() for v in module.vars.values() if v.grad is not None]
    return [y, dx] + grads


def _caught(build, shape):
    """None when the CUDA backend agrees with NumPy on `build`; else how the difference showed."""
    x = np.random.RandomState(1).randn(*shape).astype(np.float32)
    expected = _outputs(build, x, "numpy")
    try:
        got = _outputs(build, x, "cuda")
    except Exception as e:  # a launch failure, a cuBLAS status: the fault stopped the run
        return "raised %s: %s" % (type(e).__name__, str(e).splitlines()[0][:200])
    finally:
        B.setBackend("cuda")
    for name, a, b in zip(["output", "input gradient", "parameter gradient", "parameter gradient"], got, expected):
        if not np.allclose(a, b, rtol=1e-4, atol=1e-4):
            return "%s differs (max |diff| %.3g)" % (name, np.nanmax(np.abs(a - b)))
    return None


def _batchNorm():
    from minidl.modules import BatchNorm2D
    return BatchNorm2D(6)


def _dilatedConv():
    from minidl.modules import Conv2D
    return Conv2D(4, 6, 3, pad=1, dilation=(2, 1))


def _depthwise():
    from minidl.modules import DepthwiseConv2D
    return DepthwiseConv2D(4, 3, pad=1, multiplier=2)


def _gemmSwapLdaLdb(monkeypatch):
    from minidl.backend.cuda import cublas
    real = cublas.gemmStridedBatched

    def swapped(transA, transB, m, n, k, alpha, A, lda, strideA, B_, ldb, strideB, *rest):
        return real(transA, transB, m, n, k, alpha, A, ldb, strideA, B_, lda, strideB, *rest)
    monkeypatch.setattr(cublas, "gemmStridedBatched", swapped)


def _int64ForInt(monkeypatch):
    from minidl.backend.cuda import depthwise
    monkeypatch.setattr(depthwise, "i32", np.int64)


# (id, module to run, input shape, how the fault is injected: a kernel-source edit or a call-site patch)
FAULTS = [
    ("missing_barrier_in_block_reduction", _batchNorm, (3, 6, 5, 7),
     ("batchnorm.cu", "if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];\n        __syncthreads();",
      "if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];")),
    ("int64_passed_to_int_parameter", _depthwise, (2, 4, 6, 6), _int64ForInt),
    ("swapped_lda_ldb", _dilatedConv, (2, 4, 9, 7), _gemmSwapLdaLdb),
    ("swapped_dilation_axes_in_im2col", _dilatedConv, (2, 4, 9, 7),
     ("conv.cu", "int iy = oy * SH - PH + i * DH, ix = ox * SW - PW + j * DW;",
      "int iy = oy * SH - PH + i * DW, ix = ox * SW - PW + j * DH;")),
    ("early_return_before_barrier", _batchNorm, (3, 6, 5, 7),
     ("batchnorm.cu", "    long long count = (long long)N * L;\n    float s = 0.0f;",
      "    if (threadIdx.x == blockDim.x - 1) return;\n"
      "    long long count = (long long)N * L;\n    float s = 0.0f;")),
    ("off_by_one_in_tap_index", _depthwise, (2, 4, 6, 6),
     ("depthwise.cu", "int ix = ox * SW - PW + j * DW;\n                if (ix >= 0 && ix < W) s +=",
      "int ix = ox * SW - PW + j * DW + 1;\n                if (ix >= 0 && ix < W) s +=")),
]


@pytest.mark.parametrize("name,build,shape,inject", FAULTS, ids=[f[0] for f in FAULTS])
def test_injected_fault_is_caught(cuda, mutate, monkeypatch, name, build, shape, inject):
    assert _caught(build, shape) is None, "the unmodified backend must agree with NumPy"
    if callable(inject):
        inject(monkeypatch)
    else:
        mutate(*inject)
    how = _caught(build, shape)
    print("%s: %s" % (name, how))
    assert how is not None, "%s went unnoticed" % name


def test_divergent_barrier_names_kernel_and_line(cuda, mutate):
    import pycuda.driver as drv
    mutate(*FAULTS[4][3])
    with pytest.raises(drv.LaunchError, match=r"divergent __syncthreads\(\).*batchnorm\.cu:\d+"):
        _outputs(_batchNorm, np.ones((3, 6, 5, 7), np.float32), "cuda")


def test_argument_type_mismatch_names_the_kernel(cuda, monkeypatch):
    import pycuda.driver as drv
    _int64ForInt(monkeypatch)
    with pytest.raises(drv.Error, match=r"depthwiseForward.*does not match"):
        _outputs(_depthwise, np.ones((2, 4, 6, 6), np.float32), "cuda")


@pytest.mark.parametrize("order", ["reverse", "interleaved"])
def test_block_order_does_not_change_results(cuda, monkeypatch, order):
    monkeypatch.setenv("CUEMU_BLOCK_ORDER", order)
    for build, shape in [(_batchNorm, (3, 6, 5, 7)), (_dilatedConv, (2, 4, 9, 7)), (_depthwise, (2, 4, 6, 6))]:
        assert _caught(build, shape) is None


def _module(source):
    from pycuda.compiler import SourceModule
    return SourceModule(source, no_extern_c=True)


def test_launch_limits_are_errors(cuda):
    import pycuda.driver as drv
    fn = _module('extern "C" __global__ void k(float* y) { extern __shared__ float s[]; y[0] = 1; }').get_function("k")
    y = gpuarray.zeros(1)
    with pytest.raises(drv.LogicError, match="block"):
        fn(y, block=(2048, 1, 1), grid=(1, 1))
    with pytest.raises(drv.LogicError, match="grid"):
        fn(y, block=(1, 1, 1), grid=(1, 70000))
    with pytest.raises(drv.LogicError, match="dynamic shared memory"):
        fn(y, block=(1, 1, 1), grid=(1, 1), shared=49 * 1024)
    fn(y, block=(1, 1, 1), grid=(1, 1), shared=1024)
    assert y.get()[0] == 1


def test_static_shared_memory_over_48k_does_not_build(cuda):
    from pycuda.driver import CompileError
    with pytest.raises(CompileError, match="too much shared data"):
        _module('extern "C" __global__ void k(float* y) { __shared__ float s[12289]; s[threadIdx.x] = 1; '
                '__syncthreads(); y[0] = s[1]; }')


def test_fresh_memory_and_shared_memory_are_poisoned(cuda):
    import pycuda.driver as drv
    block = drv.mem_alloc(64)
    host = np.zeros(16, np.float32)
    drv.memcpy_dtoh(host, block)
    assert np.isnan(host).all()
    # a block's shared memory is NaN until written: reading it unwritten shows
    fn = _module('extern "C" __global__ void k(float* y) { __shared__ float s[64]; if (threadIdx.x > 0) '
                 's[threadIdx.x] = 1; __syncthreads(); y[threadIdx.x] = s[threadIdx.x]; }').get_function("k")
    y = gpuarray.zeros(64)
    fn(y, block=(64, 1, 1), grid=(1, 1))
    out = y.get()
    assert np.isnan(out[0]) and (out[1:] == 1).all()


def test_warp_synchronous_reduction_matches(cuda):
    # pycuda's own reductions end in warp-synchronous volatile code (no barriers)
    import pycuda.gpuarray as pga
    for n in (1, 31, 33, 1000, 70001):
        x = np.random.RandomState(n).rand(n).astype(np.float32)
        assert np.isclose(pga.sum(gpuarray.to_gpu(x)).get(), x.sum(dtype=np.float64), rtol=1e-5)


@pytest.mark.slow
def test_address_sanitizer_names_the_line_of_an_out_of_bounds_read(tmp_path):
    script = tmp_path / "oob.py"
    script.write_text(
        "import numpy as np, pycuda.driver as drv\n"
        "from pycuda.compiler import SourceModule\n"
        "drv.init(); ctx = drv.Device(0).retain_primary_context(); ctx.push()\n"
        "src = '#line 1 \"oob.cu\"\\nextern \"C\" __global__ void k(const float* x, float* y, int n)\\n'"
        " + '{\\n    int i = threadIdx.x;\\n    y[i] = x[i + 1];\\n}\\n'\n"
        "fn = SourceModule(src, no_extern_c=True).get_function('k')\n"
        "x, y = drv.mem_alloc(4 * 8), drv.mem_alloc(4 * 8)\n"
        "fn(x, y, np.int32(8), block=(8, 1, 1), grid=(1, 1))\n"
        "ctx.pop()\n")
    env = dict(os.environ, CUEMU_ASAN="1")
    proc = subprocess.run([os.path.join(ROOT, "tools", "cudaemu", "run"), sys.executable, str(script)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert "heap-buffer-overflow" in proc.stderr
    assert "oob.cu:4" in proc.stderr, proc.stderr[-3000:]


def test_reference_cublas_against_numpy(cuda):
    # every transpose, leading dimension, batch layout, NaN rule and invalid argument of the
    # stand-in cuBLAS, against float64 NumPy (tools/cudaemu/tests/check_cublas.py)
    library = os.path.join(os.environ["CUDA_HOME"], "lib64", "libcublas.so.13")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cudaemu", "tests", "check_cublas.py"), library],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " 0 failed" in proc.stdout
