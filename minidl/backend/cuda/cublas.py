"""The few cuBLAS calls minidl needs, bound with ctypes.

scikit-cuda 0.5.3 (its last release) cannot find cuBLAS 11+ by name and its
``misc`` module fails on current NumPy, so sgemm and strided-batched sgemm
are bound here directly. Where the library is looked for (toolkits named by
CUDA_HOME / CUDA_ROOT / CUDA_PATH, NVIDIA's CUDA 13 and CUDA 12 wheels,
/usr/local/cuda, the loader path) is decided in ``libpaths``.

``gemm`` and ``gemmStridedBatched`` take *row-major* operands (as NumPy
arrays are laid out) and call column-major cuBLAS on the transposed problem:
row-major C = op(A) @ op(B) is column-major C^T = op(B)^T @ op(A)^T.
"""

import ctypes
import os

from minidl.backend.cuda import context, libpaths
from minidl.errors import BackendError


def _load():
    nvidia = libpaths.nvidiaDirs()
    failures = {}
    for path in libpaths.candidates(os.environ, nvidia, "cublas"):
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            failures[path] = str(e)
    raise BackendError(libpaths.notFoundMessage("cuBLAS", "cublas", os.environ, nvidia, failures,
                                                libpaths.driverCudaMajor()))


# Loaded when the backend's ops are imported (CUDA backend selection), so a missing cuBLAS fails
# the selection with the message above and "auto" falls back to NumPy.
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
    """The cuBLAS handle, with the backend's context current on the calling thread."""
    global _handle
    context.activate()
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
