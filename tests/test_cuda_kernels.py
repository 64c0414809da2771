"""Compile every CUDA kernel source to PTX with nvcc, so kernel syntax errors show on any
machine with the toolkit (skipped where nvcc is missing). The files are compiled exactly as
the backend hands them to pycuda (they declare extern "C" themselves)."""

import os
import shutil
import subprocess

import pytest

KERNELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minidl", "backend", "cuda",
                       "kernels")
NVCC = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if "CUDA_HOME" in os.environ
                                else None)
SOURCES = sorted(f for f in os.listdir(KERNELS) if f.endswith(".cu"))
# the depthwise kernels are specialised at compile time, so check the corners the models use
VARIANTS = [(f, {}) for f in SOURCES] + [
    ("depthwise.cu", dict(KH=3, KW=3, SH=2, SW=2, DH=1, DW=1, M=1)),
    ("depthwise.cu", dict(KH=5, KW=3, SH=1, SW=2, DH=2, DW=1, M=3)),
    ("depthwise.cu", dict(KH=7, KW=7, SH=1, SW=1, DH=1, DW=1, M=2)),
]


def test_every_kernel_file_is_covered():
    assert {"conv.cu", "depthwise.cu", "elementwise.cu", "pool.cu", "batchnorm.cu", "softmax.cu", "optim.cu"} <= set(SOURCES)


@pytest.mark.skipif(NVCC is None or not os.path.exists(NVCC), reason="nvcc not found")
@pytest.mark.parametrize("source,defines", VARIANTS,
                         ids=["%s%s" % (f, "".join("_%s%s" % kv for kv in sorted(d.items()))) for f, d in VARIANTS])
def test_kernel_compiles_to_ptx(tmp_path, source, defines):
    cmd = [NVCC, "--ptx", "-arch=sm_80", "-O3", "-I", KERNELS, "-o", str(tmp_path / "out.ptx"),
           os.path.join(KERNELS, source)]
    cmd += ["-D%s=%s" % kv for kv in defines.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert ".entry" in ptx
