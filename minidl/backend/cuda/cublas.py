"""The few cuBLAS calls minidl needs, bound with ctypes.

scikit-cuda 0.5.3 (its last release) cannot find cuBLAS 11+ by name and its
``misc`` module fails on current NumPy, so sgemm and strided-batched sgemm
are bound here directly. The library is looked for in CUDA_HOME / CUDA_ROOT /
CUDA_PATH, in the nvidia-cublas wheel, then on the loader path.

``gemm`` and ``gemmStridedBatched`` take *row-major* operands (as NumPy
arrays are laid out) and call column-major cuBLAS on the transposed problem:
row-major C = op(A) @ op(B) is column-major C^T = op(B)^T @ op(A)^T.
"""

import ctypes
import ctypes.util
import glob
import os

from minidl.errors import BackendError

_NAMES = ["libcublas.so", "libcublas.so.13", "libcublas.so.12", "libcublas.so.11"]


def _candidates():
    for var in ("CUDA_HOME", "CUDA_ROOT", "CUDA_PATH"):
        root = os.environ.get(var)
        if root:
            for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
                for name in _NAMES:
                    yield os.path.join(root, sub, name)
    try:
        import nvidia.cublas
        for base in nvidia.cublas.__path__:
            yield from sorted(glob.glob(os.path.join(base, "lib", "libcublas.so*")), reverse=True)
    except ImportError:
        pass
    found = ctypes.util.find_library("cublas")
    if found:
        yield found
    yield from _NAMES
    for name in _NAMES:
        yield os.path.join("/usr/local/cuda/lib64", name)


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError:
            tried.append(path)
    raise BackendError("CUDA backend: cuBLAS not found (tried %s); set CUDA_HOME to the toolkit or "
                       "pip install nvidia-cublas" % ", ".join(tried[:6]))


_lib = _load()
_handle = None
_OP_N, _OP_T = 0, 1

_lib.cublasCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
_lib.cublasSgemm_v2.argtypes = [
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
    ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int,
]
_lib.cublasSgemmStridedBatched.argtypes = [
    ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong,
    ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.POINTER(ctypes.c_float),
    ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_int,
]


def _check(status, what):
    if status != 0:
        raise BackendError("cuBLAS %s failed with status %d" % (what, status))


def handle():
    global _handle
    if _handle is None:
        h = ctypes.c_void_p()
        _check(_lib.cublasCreate_v2(ctypes.byref(h)), "cublasCreate")
        _handle = h
    return _handle


def gemm(transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """Row-major C (m x n) = alpha * op(A) @ op(B) + beta * C; A, B, C are device addresses."""
    a, b = ctypes.c_float(alpha), ctypes.c_float(beta)
    _check(_lib.cublasSgemm_v2(handle(), _OP_T if transB else _OP_N, _OP_T if transA else _OP_N, n, m, k,
                               ctypes.byref(a), int(B), ldb, int(A), lda, ctypes.byref(b), int(C), ldc), "sgemm")


def gemmStridedBatched(transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC,
                       batch):
    """gemm over `batch` problems whose operands sit strideX elements apart (strideA 0 shares A)."""
    a, b = ctypes.c_float(alpha), ctypes.c_float(beta)
    _check(_lib.cublasSgemmStridedBatched(handle(), _OP_T if transB else _OP_N, _OP_T if transA else _OP_N, n, m,
                                          k, ctypes.byref(a), int(B), ldb, strideB, int(A), lda, strideA,
                                          ctypes.byref(b), int(C), ldc, strideC, batch), "sgemmStridedBatched")
