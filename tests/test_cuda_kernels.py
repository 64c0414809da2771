"""Compile every CUDA kernel source with nvcc, so kernel errors show on any machine with the
toolkit (skipped where nvcc is missing): to PTX (syntax and types), and on to cubins for sm_80
and sm_90, since only ptxas checks a kernel against the hardware's limits (48 KB of static shared
memory, registers). The files are compiled exactly as the backend hands them to pycuda (they
declare extern "C" themselves)."""

import os
import shutil
import subprocess

import pytest

KERNELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minidl", "backend", "cuda",
                       "kernels")
NVCC = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if "CUDA_HOME" in os.environ
                                else None)
SOURCES = sorted(f for f in os.listdir(KERNELS) if f.endswith(".cu"))
# the depthwise kernels are specialised at compile time, so check the corners the models use, and
# kernels large enough that a per-tap shared buffer would pass 48 KB (10x10 and up)
VARIANTS = [(f, {}) for f in SOURCES] + [
    ("depthwise.cu", dict(KH=3, KW=3, SH=2, SW=2, DH=1, DW=1, M=1)),
    ("depthwise.cu", dict(KH=5, KW=3, SH=1, SW=2, DH=2, DW=1, M=3)),
    ("depthwise.cu", dict(KH=7, KW=7, SH=1, SW=1, DH=1, DW=1, M=2)),
    ("depthwise.cu", dict(KH=10, KW=10, SH=1, SW=1, DH=1, DW=1, M=1)),
    ("depthwise.cu", dict(KH=11, KW=11, SH=1, SW=1, DH=2, DW=2, M=1)),
    ("depthwise.cu", dict(KH=15, KW=15, SH=1, SW=1, DH=1, DW=1, M=2)),
]
VARIANT_IDS = ["%s%s" % (f, "".join("_%s%s" % kv for kv in sorted(d.items()))) for f, d in VARIANTS]
needsNvcc = pytest.mark.skipif(NVCC is None or not os.path.exists(NVCC), reason="nvcc not found")


def _nvcc(kind, arch, out, source, defines):
    cmd = [NVCC, kind, "-arch=" + arch, "-O3", "-I", KERNELS, "-o", str(out), os.path.join(KERNELS, source)]
    cmd += ["-D%s=%s" % kv for kv in defines.items()]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_every_kernel_file_is_covered():
    assert {"conv.cu", "depthwise.cu", "elementwise.cu", "pool.cu", "batchnorm.cu", "softmax.cu", "optim.cu"} <= set(SOURCES)


@needsNvcc
@pytest.mark.parametrize("source,defines", VARIANTS, ids=VARIANT_IDS)
def test_kernel_compiles_to_ptx(tmp_path, source, defines):
    proc = _nvcc("--ptx", "sm_80", tmp_path / "out.ptx", source, defines)
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert ".entry" in ptx


@needsNvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source,defines", VARIANTS, ids=VARIANT_IDS)
def test_kernel_assembles_to_cubin(tmp_path, source, defines, arch):
    """ptxas accepts every kernel: e.g. a 10x10 depthwise weight reduction with one shared row per
    tap needs 51,712 bytes of shared memory and fails here while its PTX is fine."""
    proc = _nvcc("-cubin", arch, tmp_path / "out.cubin", source, defines)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.cubin").stat().st_size > 0
