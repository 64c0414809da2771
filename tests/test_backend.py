"""The backend seam: one contract, identical signatures, gpuarray facade, selection."""

import ast
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl.backend as B
from minidl.backend import gpuarray, interface
from minidl.errors import BackendError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "minidl", "backend", "cuda")


def _astSignatures(paths):
    """{name: 'arg, arg=default'} for top-level functions of the given files, without importing them."""
    found = {}
    for path in paths:
        tree = ast.parse(open(path).read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = ast.unparse(node.args)
    return found


def test_interface_lists_every_op():
    names = interface.opNames()
    assert len(names) >= 40
    assert {"conv2d", "depthwiseConv2d", "pointwiseConv2d", "batchNormTrain", "adamUpdate"} <= set(names)


def test_numpy_backend_implements_every_op_with_the_same_signature():
    import minidl.backend.numpy as nb
    for name in interface.opNames():
        assert hasattr(nb, name), "numpy backend lacks %s" % name
        assert inspect.signature(getattr(nb, name)) == inspect.signature(getattr(interface, name)), name


def test_cuda_backend_defines_every_op_with_the_same_signature():
    """Read from source, so the check runs without pycuda."""
    files = [os.path.join(CUDA_DIR, f) for f in os.listdir(CUDA_DIR) if f.endswith(".py")]
    cuda = _astSignatures(files)
    want = _astSignatures([interface.__file__])
    for name in interface.opNames():
        assert name in cuda, "cuda backend lacks %s" % name
        assert cuda[name] == want[name], "%s: cuda (%s) vs interface (%s)" % (name, cuda[name], want[name])


@pytest.mark.cuda
def test_cuda_backend_signatures_when_importable():
    if not B.cudaAvailable():
        pytest.skip("CUDA backend unavailable here")
    cuda = B._loadCuda()
    for name in interface.opNames():
        assert inspect.signature(getattr(cuda, name)) == inspect.signature(getattr(interface, name)), name


def test_gpuarray_api(backend):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = gpuarray.to_gpu(host)
    assert isinstance(a, gpuarray.GPUArray) and gpuarray.isArray(a)
    assert a.shape == (2, 3, 4) and a.dtype == np.float32
    got = a.get()
    assert type(got) is np.ndarray and np.array_equal(got, host)
    got[0, 0, 0] = 99
    assert a.get()[0, 0, 0] == 0, ".get() must return a copy"
    assert np.array_equal(a.reshape(6, 4).get(), host.reshape(6, 4))
    assert np.array_equal(a.ravel().get(), host.ravel())
    assert np.array_equal(a[1].get(), host[1]) and np.array_equal(a[0:1].get(), host[0:1])
    assert a.astype(np.int32).dtype == np.int32
    a.fill(3)
    assert np.all(a.get() == 3)
    a.set(host * 2)
    assert np.array_equal(a.get(), host * 2)
    # pycuda's GPUArray.set words its own message; the NumPy backend's is minidl's
    with pytest.raises(ValueError, match=r"expected an array of shape \(2, 3, 4\), got \(3,\)" if backend == "numpy" else
                       "ary and self must be the same size"):
        a.set(np.zeros(3, np.float32))
    assert not gpuarray.zeros((2, 2)).get().any()
    assert gpuarray.empty((5,), np.int32).dtype == np.int32


def test_cuda_request_explains_why_it_cannot_load():
    if B.cudaAvailable():
        pytest.skip("CUDA is available here")
    previous = B.backendName()
    with pytest.raises(BackendError, match=r"CUDA backend unavailable: .*MINIDL_BACKEND=numpy"):
        B.setBackend("cuda")
    assert B.backendName() == previous, "a failed switch must leave the current backend in place"


def test_unknown_backend_name():
    with pytest.raises(BackendError, match=r"unknown backend 'tpu': expected one of numpy, cuda, auto"):
        B.setBackend("tpu")


def test_runtime_switch_and_auto():
    previous = B.backendName()
    try:
        assert B.setBackend("numpy") == "numpy"
        assert B.setBackend("auto") == ("cuda" if B.cudaAvailable() else "numpy")
    finally:
        B.setBackend(previous)


def test_environment_variable_selects_backend_and_import_needs_no_pycuda():
    code = "import minidl, sys; print(minidl.backendName()); print('pycuda' in sys.modules)"
    env = dict(os.environ, MINIDL_BACKEND="numpy", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["numpy", "False"]
    env["MINIDL_BACKEND"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown backend 'bogus'" in bad.stderr
