"""Where the CUDA backend looks for cuBLAS (minidl.backend.cuda.libpaths), on fake toolkit and wheel
layouts of empty files: no pycuda, no GPU and no real library needed, nothing is loaded."""

import importlib
import importlib.util
import os
import sys
import types

import pytest

from minidl.backend.cuda import libpaths
from minidl.errors import BackendError


def _touch(root, *names):
    for name in names:
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()


def _under(paths, root):
    """The candidates inside `root`, relative to it (a real toolkit in /usr/local/cuda may add others)."""
    root = str(root) + os.sep
    return [os.path.relpath(p, root) for p in paths if p.startswith(root)]


def test_cuda13_wheel_layout_is_found(tmp_path):
    """PyTorch's CUDA 13 wheels and nvidia-cublas 13 install nvidia/cu13/lib/libcublas.so.13."""
    _touch(tmp_path, "site/nvidia/cu13/lib/libcublas.so.13", "site/nvidia/cu13/lib/libcublasLt.so.13",
           "site/nvidia/cu13/lib/libcudart.so.13")
    found = _under(libpaths.candidates({}, [str(tmp_path / "site" / "nvidia")]), tmp_path)
    assert found == ["site/nvidia/cu13/lib/libcublas.so.13"]


def test_cuda12_wheel_layout_is_found(tmp_path):
    _touch(tmp_path, "site/nvidia/cublas/lib/libcublas.so.12", "site/nvidia/cublas/lib/libcublasLt.so.12",
           "site/nvidia/cuda_runtime/lib/libcudart.so.12")
    found = _under(libpaths.candidates({}, [str(tmp_path / "site" / "nvidia")]), tmp_path)
    assert found == ["site/nvidia/cublas/lib/libcublas.so.12"]


def test_candidate_order_toolkits_then_wheels_then_loader(tmp_path):
    """CUDA_HOME, CUDA_ROOT, CUDA_PATH in that order (each at lib64, lib, targets/*/lib), then the
    wheels (newest CUDA major first, then the CUDA 12 layout), then sonames for the loader path."""
    _touch(tmp_path,
           "home/lib64/libcublas.so.12", "home/lib64/libcublas.so", "home/lib64/libcublas.so.12.9.1.4",
           "home/targets/sbsa-linux/lib/libcublas.so.12",
           "root/targets/x86_64-linux/lib/libcublas.so.13",
           "path/lib/libcublas.so.11",
           "site1/nvidia/cu13/lib/libcublas.so.13", "site1/nvidia/cu14/lib/libcublas.so.14",
           "site1/nvidia/cublas/lib/libcublas.so.12",
           "site1/nvidia/cufft/lib/libcufft.so.12", "site1/nvidia/cuda/lib/libcublas.so.12",   # not wheel layouts
           "site2/nvidia/cublas/lib/libcublas.so.12")
    env = {"CUDA_HOME": str(tmp_path / "home"), "CUDA_ROOT": str(tmp_path / "root"),
           "CUDA_PATH": str(tmp_path / "path")}
    nvidia = [str(tmp_path / "site1" / "nvidia"), str(tmp_path / "site2" / "nvidia")]
    found = list(libpaths.candidates(env, nvidia))
    assert _under(found, tmp_path) == [
        "home/lib64/libcublas.so.12.9.1.4", "home/lib64/libcublas.so.12", "home/lib64/libcublas.so",
        "home/targets/sbsa-linux/lib/libcublas.so.12",
        "root/targets/x86_64-linux/lib/libcublas.so.13",
        "path/lib/libcublas.so.11",
        "site1/nvidia/cu14/lib/libcublas.so.14", "site1/nvidia/cu13/lib/libcublas.so.13",
        "site1/nvidia/cublas/lib/libcublas.so.12",
        "site2/nvidia/cublas/lib/libcublas.so.12",
    ]
    assert found[-4:] == ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"]


def test_search_dirs_name_every_place(tmp_path):
    env = {"CUDA_PATH": "/opt/cuda-x"}
    dirs = libpaths.searchDirs(env, [str(tmp_path / "nvidia")])
    assert dirs[:4] == ["/opt/cuda-x/lib64", "/opt/cuda-x/lib", "/opt/cuda-x/targets/x86_64-linux/lib",
                        "/opt/cuda-x/targets/sbsa-linux/lib"]
    assert str(tmp_path / "nvidia" / "cublas" / "lib") in dirs
    assert dirs[-4:] == ["/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda/targets/x86_64-linux/lib",
                         "/usr/local/cuda/targets/sbsa-linux/lib"]


def test_nvidia_dirs_from_namespace_package_and_site_dirs(tmp_path, monkeypatch):
    """A namespace nvidia/ on sys.path, and one in a site-packages folder that is not on sys.path, are
    both found, without importing nvidia."""
    _touch(tmp_path, "a/nvidia/cu13/lib/libcublas.so.13", "b/nvidia/__init__.py", "b/nvidia/cublas/lib/libcublas.so.12")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "a")] + sys.path)
    monkeypatch.setattr(libpaths.site, "getsitepackages", lambda: [str(tmp_path / "b")])
    importlib.invalidate_caches()
    had = "nvidia" in sys.modules
    dirs = [os.path.normpath(d) for d in libpaths.nvidiaDirs()]
    assert str(tmp_path / "a" / "nvidia") in dirs and str(tmp_path / "b" / "nvidia") in dirs
    assert ("nvidia" in sys.modules) == had, "the search must not import the nvidia package"


@pytest.mark.parametrize("major,package", [(13, "nvidia-cublas"), (14, "nvidia-cublas"), (12, "nvidia-cublas-cu12"),
                                           (11, "nvidia-cublas-cu11")])
def test_wheel_named_for_the_driver(major, package):
    assert libpaths.wheelFor("cublas", major) == package


def test_not_found_message(tmp_path):
    env = {"CUDA_HOME": "/opt/cuda-x"}
    nvidia = [str(tmp_path / "nvidia")]
    broken = str(tmp_path / "nvidia" / "cu13" / "lib" / "libcublas.so.13")
    msg = libpaths.notFoundMessage("cuBLAS", "cublas", env, nvidia, {broken: "file too short",
                                                                     "libcublas.so.12": "not found"}, 12)
    for place in libpaths.searchDirs(env, nvidia):
        assert place in msg
    assert "libcublas.so.13, libcublas.so.12, libcublas.so.11, libcublas.so" in msg
    assert "%s (file too short)" % broken in msg
    assert "pip install nvidia-cublas-cu12 (the driver supports CUDA 12)" in msg and "CUDA_HOME" in msg
    unknown = libpaths.notFoundMessage("cuBLAS", "cublas", env, nvidia, {}, None)
    assert "pip install nvidia-cublas (CUDA 13) or nvidia-cublas-cu12 (CUDA 12)" in unknown
    assert "Found but could not load" not in unknown


def test_cublas_module_reports_every_place_when_nothing_loads(tmp_path, monkeypatch):
    """cublas.py loads the library on import: with only an unloadable file (an empty libcublas.so.13)
    and no loader names (a real cuBLAS on the loader path would load), the import fails with the
    search's message. The module is executed from its file under another name, so a real cuBLAS
    loaded elsewhere in the session is not disturbed."""
    _touch(tmp_path, "site/nvidia/cu13/lib/libcublas.so.13")
    nvidia = [str(tmp_path / "site" / "nvidia")]
    monkeypatch.setattr(libpaths, "nvidiaDirs", lambda: nvidia)
    monkeypatch.setattr(libpaths, "DEFAULT_TOOLKIT", str(tmp_path / "no-toolkit"))
    monkeypatch.setattr(libpaths, "loaderNames", lambda lib="cublas": [])
    monkeypatch.setattr(libpaths, "driverCudaMajor", lambda: 13)
    for var in libpaths.TOOLKIT_VARS:
        monkeypatch.delenv(var, raising=False)
    # cublas.py's other import needs pycuda: a stand-in context module keeps this test pycuda-free
    monkeypatch.setitem(sys.modules, "minidl.backend.cuda.context", types.SimpleNamespace(activate=lambda: None))
    path = os.path.join(os.path.dirname(libpaths.__file__), "cublas.py")
    spec = importlib.util.spec_from_file_location("_minidl_cublas_probe", path)
    with pytest.raises(BackendError, match=r"cuBLAS \(libcublas\.so\) not found\. Looked in: .*cu13/lib.*"
                                           r"Found but could not load: .*libcublas\.so\.13 .*"
                                           r"pip install nvidia-cublas \(the driver supports CUDA 13\)"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
