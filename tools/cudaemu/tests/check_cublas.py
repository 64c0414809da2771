"""Checks cudaemu's cuBLAS stand-in against NumPy float64 references.

Usage: python3 tools/cudaemu/tests/check_cublas.py /path/to/libcublas.so.13

In cudaemu device pointers are host pointers, so NumPy arrays' data pointers are passed as the
"device" operands. Matrices are column-major: a matrix with leading dimension ld and `cols` columns
lives in a C-order buffer of shape (cols, ld), and its rows x cols view is buf[:, :rows].T. Padding
rows (ld > rows) hold a sentinel so that writes outside the matrix are caught.

Exit code 0 when every check passes; a summary is printed either way.
"""

import ctypes
import itertools
import os
import platform
import subprocess
import sys
import time

import numpy as np

SUCCESS, NOT_INITIALIZED, INVALID_VALUE = 0, 1, 7
OPS = {"N": 0, "T": 1, "C": 2}
SENTINEL = np.float32(-12345.0)
EPS = float(np.finfo(np.float32).eps)
# Without FMA contraction (x86-64 at -O2) the float32 k-order sums are reproducible bit for bit.
EXACT = platform.machine() in ("x86_64", "AMD64")

P, I, F, LL = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_longlong


def load(path):
    lib = ctypes.CDLL(path)
    sig = {
        "cublasCreate_v2": [ctypes.POINTER(P)], "cublasDestroy_v2": [P],
        "cublasGetVersion_v2": [P, ctypes.POINTER(I)], "cublasSetStream_v2": [P, P],
        "cublasGetStream_v2": [P, ctypes.POINTER(P)], "cublasSetPointerMode_v2": [P, I],
        "cublasGetPointerMode_v2": [P, ctypes.POINTER(I)], "cublasSetMathMode": [P, I],
        "cublasGetMathMode": [P, ctypes.POINTER(I)],
        "cublasSgemm_v2": [P, I, I, I, I, I, F, P, I, P, I, F, P, I],
        "cublasSgemmStridedBatched": [P, I, I, I, I, I, F, P, I, LL, P, I, LL, F, P, I, LL, I],
        "cublasSgemmBatched": [P, I, I, I, I, I, F, P, I, P, I, F, P, I, I],
    }
    for name, args in sig.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = I
    for name in ("cublasGetStatusString", "cublasGetStatusName"):
        getattr(lib, name).argtypes = [I]
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


class Checker:
    def __init__(self):
        self.passed, self.failed = 0, []

    def __call__(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print("FAIL:", what)


def colmajor(rows, cols, ld, rng, fill=None):
    """(buffer, view): buffer is what the library sees, view the rows x cols matrix inside it."""
    buf = np.full((max(cols, 1), ld), SENTINEL, np.float32)
    view = buf[:cols, :rows].T
    view[...] = rng.standard_normal((rows, cols)).astype(np.float32) if fill is None else fill
    return buf, view


def ptr(buf):
    return buf.ctypes.data


def op(M, t):
    return M if t == "N" else M.T


def reference(ta, tb, alpha, A, B, beta, C0):
    """float64 result and an error bound for float32 accumulation over k terms."""
    a, b = op(A, ta).astype(np.float64), op(B, tb).astype(np.float64)
    k = a.shape[1]
    ref = alpha * (a @ b) if alpha != 0 and k > 0 else np.zeros((a.shape[0], b.shape[1]))
    mag = abs(alpha) * (np.abs(a) @ np.abs(b)) if alpha != 0 and k > 0 else np.zeros_like(ref)
    if beta != 0:
        ref = ref + beta * C0.astype(np.float64)
        mag = mag + abs(beta * C0.astype(np.float64))
    return ref, (k + 3) * EPS * mag + 1e-30


def sequential_float32(ta, tb, alpha, A, B, beta, C0):
    """The documented arithmetic: float32 sums in k order, then alpha * sum (+ beta * C)."""
    a, b = op(A, ta), op(B, tb)
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for p in range(a.shape[1]):
        acc = acc + np.outer(a[:, p], b[p, :]).astype(np.float32)
    out = np.float32(alpha) * acc
    return out if beta == 0 else out + np.float32(beta) * C0


def sgemm(lib, h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    al, be = ctypes.c_float(alpha), ctypes.c_float(beta)
    return lib.cublasSgemm_v2(h, OPS.get(ta, ta), OPS.get(tb, tb), m, n, k, ctypes.byref(al), A, lda, B, ldb,
                              ctypes.byref(be), C, ldc)


def run_case(lib, h, chk, ta, tb, m, n, k, pad, alpha, beta, rng, label=""):
    """One sgemm with padded leading dimensions; compares values, padding and untouched inputs."""
    ra, ca = (m, k) if ta == "N" else (k, m)
    rb, cb = (k, n) if tb == "N" else (n, k)
    Ab, A = colmajor(ra, ca, max(1, ra) + pad, rng)
    Bb, B = colmajor(rb, cb, max(1, rb) + pad, rng)
    Cb, C = colmajor(m, n, max(1, m) + pad, rng)
    A0, B0, C0, Cb0 = A.copy(), B.copy(), C.copy(), Cb.copy()
    st = sgemm(lib, h, ta, tb, m, n, k, alpha, ptr(Ab), Ab.shape[1], ptr(Bb), Bb.shape[1], beta, ptr(Cb),
               Cb.shape[1])
    what = "sgemm %s%s m=%d n=%d k=%d pad=%d alpha=%g beta=%g %s" % (ta, tb, m, n, k, pad, alpha, beta, label)
    chk(st == SUCCESS, what + ": status %d" % st)
    ref, tol = reference(ta, tb, alpha, A0, B0, beta, C0)
    chk(np.all(np.abs(C - ref) <= tol), what + ": values (max err %.3g)" % np.max(np.abs(C - ref), initial=0))
    if EXACT and m and n:
        chk(np.array_equal(C, sequential_float32(ta, tb, alpha, A0, B0, beta, C0)), what + ": float32 k-order bits")
    outside = np.ones(Cb.shape, bool)
    outside[:n, :m] = False
    chk(np.array_equal(Cb[outside], Cb0[outside]), what + ": C padding untouched")
    chk(np.array_equal(A, A0) and np.array_equal(B, B0), what + ": A and B untouched")


def check_all_layouts(lib, h, chk, rng):
    shapes = [(1, 1, 1), (3, 5, 7), (7, 3, 5), (5, 7, 3), (16, 1, 9), (1, 13, 4), (33, 17, 65), (4, 4, 1)]
    for ta, tb in itertools.product("NTC", repeat=2):
        for (m, n, k), pad in itertools.product(shapes, (0, 3)):
            run_case(lib, h, chk, ta, tb, m, n, k, pad, 1.0, 0.0, rng)
        run_case(lib, h, chk, ta, tb, 6, 5, 9, 2, -0.75, 0.5, rng)
        run_case(lib, h, chk, ta, tb, 6, 5, 9, 1, 2.0, 1.0, rng)


def check_nan_rules(lib, h, chk, rng):
    m, n, k = 5, 4, 6
    for ta, tb in itertools.product("NT", repeat=2):
        ra, ca = (m, k) if ta == "N" else (k, m)
        rb, cb = (k, n) if tb == "N" else (n, k)
        tag = " (%s%s)" % (ta, tb)
        Ab, A = colmajor(ra, ca, ra, rng)
        Bb, B = colmajor(rb, cb, rb, rng)
        # beta == 0: C is not read, so NaN there must vanish.
        Cb, C = colmajor(m, n, m, rng, fill=np.nan)
        chk(sgemm(lib, h, ta, tb, m, n, k, 1.0, ptr(Ab), ra, ptr(Bb), rb, 0.0, ptr(Cb), m) == SUCCESS, "beta=0 status" + tag)
        chk(not np.isnan(C).any() and np.allclose(C, op(A, ta) @ op(B, tb), rtol=1e-5, atol=1e-5), "beta=0 NaN C ignored" + tag)
        # alpha == 0: A and B are not read; beta == 0 too gives exact zeros even from a NaN C.
        An = np.full_like(Ab, np.nan)
        Bn = np.full_like(Bb, np.inf)
        Cb, C = colmajor(m, n, m, rng)
        C0 = C.copy()
        chk(sgemm(lib, h, ta, tb, m, n, k, 0.0, ptr(An), ra, ptr(Bn), rb, 2.0, ptr(Cb), m) == SUCCESS, "alpha=0 status" + tag)
        chk(np.array_equal(C, np.float32(2.0) * C0), "alpha=0 with NaN A gives beta*C" + tag)
        Cb, C = colmajor(m, n, m, rng, fill=np.nan)
        sgemm(lib, h, ta, tb, m, n, k, 0.0, ptr(An), ra, ptr(Bn), rb, 0.0, ptr(Cb), m)
        chk(np.array_equal(C, np.zeros((m, n), np.float32)), "alpha=0 beta=0 writes zeros" + tag)
        # alpha != 0: a NaN in op(A)[2, 3] poisons row 2 of C only; an Inf in op(B)[1, 0] times a zero gives NaN.
        Ab2, A2 = colmajor(ra, ca, ra, rng)
        op(A2, ta)[2, 3] = np.nan
        Cb, C = colmajor(m, n, m, rng)
        sgemm(lib, h, ta, tb, m, n, k, 1.0, ptr(Ab2), ra, ptr(Bb), rb, 1.0, ptr(Cb), m)
        chk(np.isnan(C[2]).all() and not np.isnan(np.delete(C, 2, axis=0)).any(), "NaN in A propagates to its row" + tag)
        Bb3, B3 = colmajor(rb, cb, rb, rng)
        op(B3, tb)[1, 0] = np.inf
        Ab3, A3 = colmajor(ra, ca, ra, rng)
        op(A3, ta)[0, 1] = 0.0
        Cb, C = colmajor(m, n, m, rng)
        sgemm(lib, h, ta, tb, m, n, k, 1.0, ptr(Ab3), ra, ptr(Bb3), rb, 0.0, ptr(Cb), m)
        chk(np.isnan(C[0, 0]) and np.isinf(C[1:, 0]).all() and np.isfinite(C[:, 1:]).all(), "0 * Inf is NaN" + tag)
    # beta == 1 accumulates: twice the same product adds up.
    Ab, A = colmajor(m, k, m, rng)
    Bb, B = colmajor(k, n, k, rng)
    Cb, C = colmajor(m, n, m, rng, fill=0.0)
    for _ in range(2):
        sgemm(lib, h, "N", "N", m, n, k, 1.0, ptr(Ab), m, ptr(Bb), k, 1.0, ptr(Cb), m)
    chk(np.allclose(C, 2 * (A.astype(np.float64) @ B), rtol=1e-5, atol=1e-5), "beta=1 accumulates")
    # k == 0: C = beta * C, and with beta == 0 a NaN C becomes zeros; A and B (null here) are not read.
    Cb, C = colmajor(m, n, m, rng)
    C0 = C.copy()
    chk(sgemm(lib, h, "N", "N", m, n, 0, 1.0, None, m, None, 1, 0.5, ptr(Cb), m) == SUCCESS, "k=0 status")
    chk(np.array_equal(C, np.float32(0.5) * C0), "k=0 scales C by beta")
    Cb, C = colmajor(m, n, m, rng, fill=np.nan)
    sgemm(lib, h, "T", "T", m, n, 0, 1.0, None, 1, None, n, 0.0, ptr(Cb), m)
    chk(np.array_equal(C, np.zeros((m, n), np.float32)), "k=0 beta=0 zeros a NaN C")
    # m == 0 or n == 0: nothing is touched, not even a null C.
    for mm, nn in ((0, 3), (3, 0), (0, 0)):
        chk(sgemm(lib, h, "N", "N", mm, nn, 4, 1.0, None, max(1, mm), None, 4, 0.0, None, max(1, mm)) == SUCCESS,
            "quick return m=%d n=%d" % (mm, nn))


def check_batched(lib, h, chk, rng):
    m, n, k, batch = 6, 5, 7, 4
    for ta, tb in itertools.product("NT", repeat=2):
        ra, ca = (m, k) if ta == "N" else (k, m)
        rb, cb = (k, n) if tb == "N" else (n, k)
        lda, ldb, ldc = ra + 1, rb + 2, m + 3
        Ab, A = colmajor(ra, ca, lda, rng)                       # one A shared by every batch (strideA = 0)
        Bs = [colmajor(rb, cb, ldb, rng) for _ in range(batch)]
        Cs = [colmajor(m, n, ldc, rng) for _ in range(batch)]
        strideB, strideC = Bs[0][0].size + 5, Cs[0][0].size + 7  # gaps between the batches' matrices
        Bbig = np.full(strideB * batch, SENTINEL, np.float32)
        Cbig = np.full(strideC * batch, SENTINEL, np.float32)
        for i in range(batch):
            Bbig[i * strideB:i * strideB + Bs[i][0].size] = Bs[i][0].ravel()
            Cbig[i * strideC:i * strideC + Cs[i][0].size] = Cs[i][0].ravel()
        Cbig0 = Cbig.copy()
        al, be = ctypes.c_float(1.5), ctypes.c_float(-0.5)
        st = lib.cublasSgemmStridedBatched(h, OPS[ta], OPS[tb], m, n, k, ctypes.byref(al), ptr(Ab), lda, 0,
                                           ptr(Bbig), ldb, strideB, ctypes.byref(be), ptr(Cbig), ldc, strideC, batch)
        chk(st == SUCCESS, "strided batched %s%s status %d" % (ta, tb, st))
        touched = np.zeros(Cbig.shape, bool)
        for i in range(batch):
            out = Cbig[i * strideC:i * strideC + Cs[i][0].size].reshape(Cs[i][0].shape)[:n, :m].T
            ref, tol = reference(ta, tb, 1.5, A, Bs[i][1], -0.5, Cs[i][1])
            chk(np.all(np.abs(out - ref) <= tol), "strided batched %s%s batch %d values" % (ta, tb, i))
            touched[i * strideC:i * strideC + Cs[i][0].size] = Cs[i][0].ravel() != SENTINEL
        chk(np.array_equal(Cbig[~touched], Cbig0[~touched]), "strided batched %s%s gaps untouched" % (ta, tb))
        # The pointer-array form, on fresh copies of the same operands.
        Bcopies = [b.copy() for b, _ in Bs]
        Ccopies = [c.copy() for c, _ in Cs]
        arr = lambda bufs: (ctypes.c_void_p * batch)(*[ptr(x) for x in bufs])  # noqa: E731
        Aarr, Barr, Carr = arr([Ab] * batch), arr(Bcopies), arr(Ccopies)
        st = lib.cublasSgemmBatched(h, OPS[ta], OPS[tb], m, n, k, ctypes.byref(al), ctypes.addressof(Aarr), lda,
                                    ctypes.addressof(Barr), ldb, ctypes.byref(be), ctypes.addressof(Carr), ldc, batch)
        chk(st == SUCCESS, "batched %s%s status %d" % (ta, tb, st))
        for i in range(batch):
            ref, tol = reference(ta, tb, 1.5, A, Bs[i][1], -0.5, Cs[i][1])
            chk(np.all(np.abs(Ccopies[i][:n, :m].T - ref) <= tol), "batched %s%s batch %d values" % (ta, tb, i))
    al = ctypes.c_float(1.0)
    chk(lib.cublasSgemmStridedBatched(h, 0, 0, 2, 2, 2, ctypes.byref(al), None, 2, 0, None, 2, 0, ctypes.byref(al),
                                      None, 2, 0, 0) == SUCCESS, "batchCount=0 quick return")


def check_invalid(lib, h, chk, rng):
    """Every documented INVALID_VALUE case, on both entry points; C must stay untouched."""
    Cb, _ = colmajor(8, 8, 8, rng)
    Cb0 = Cb.copy()
    buf = np.ones(256, np.float32)
    one = ctypes.c_float(1.0)
    base = dict(ta=0, tb=0, m=4, n=5, k=6, lda=4, ldb=6, ldc=4, alpha=ctypes.byref(one), beta=ctypes.byref(one), batch=2)
    cases = [
        ("transa=3", dict(ta=3)), ("transa=-1", dict(ta=-1)), ("transb=3", dict(tb=3)),
        ("m<0", dict(m=-1)), ("n<0", dict(n=-1)), ("k<0", dict(k=-1)),
        ("lda<m (N)", dict(lda=3)), ("lda<k (T)", dict(ta=1, lda=5)), ("lda<k (C)", dict(ta=2, lda=5)),
        ("ldb<k (N)", dict(ldb=5)), ("ldb<n (T)", dict(tb=1, ldb=4)),
        ("ldc<m", dict(ldc=3)), ("ldc=0 with m=0", dict(m=0, lda=1, ldc=0)), ("lda=0 with m=k=0", dict(m=0, k=0, lda=0, ldb=1, ldc=1)),
        ("alpha NULL", dict(alpha=None)), ("beta NULL", dict(beta=None)),
        ("C NULL", dict(C=None)),
    ]
    for name, change in cases:
        a = dict(base, C=ptr(Cb))
        a.update(change)
        st = lib.cublasSgemm_v2(h, a["ta"], a["tb"], a["m"], a["n"], a["k"], a["alpha"], ptr(buf), a["lda"],
                                ptr(buf), a["ldb"], a["beta"], a["C"], a["ldc"])
        chk(st == INVALID_VALUE, "sgemm invalid %s -> %d" % (name, st))
        st = lib.cublasSgemmStridedBatched(h, a["ta"], a["tb"], a["m"], a["n"], a["k"], a["alpha"], ptr(buf), a["lda"],
                                           0, ptr(buf), a["ldb"], 0, a["beta"], a["C"], a["ldc"], 0, a["batch"])
        chk(st == INVALID_VALUE, "strided batched invalid %s -> %d" % (name, st))
    st = lib.cublasSgemmStridedBatched(h, 0, 0, 4, 5, 6, ctypes.byref(one), ptr(buf), 4, 0, ptr(buf), 6, 0,
                                       ctypes.byref(one), ptr(Cb), 4, 0, -1)
    chk(st == INVALID_VALUE, "strided batched batchCount<0 -> %d" % st)
    st = lib.cublasSgemmBatched(h, 0, 0, 4, 5, 6, ctypes.byref(one), None, 4, None, 6, ctypes.byref(one), None, 4, -1)
    chk(st == INVALID_VALUE, "batched batchCount<0 -> %d" % st)
    chk(np.array_equal(Cb, Cb0), "C untouched by failed calls")


def check_handles(lib, chk):
    h = P()
    chk(lib.cublasCreate_v2(ctypes.byref(h)) == SUCCESS and h.value, "create")
    chk(lib.cublasCreate_v2(None) == INVALID_VALUE, "create(NULL) invalid")
    v = I()
    chk(lib.cublasGetVersion_v2(h, ctypes.byref(v)) == SUCCESS and v.value == 130000, "version 130000")
    s = P()
    chk(lib.cublasSetStream_v2(h, 0x1234) == SUCCESS and lib.cublasGetStream_v2(h, ctypes.byref(s)) == SUCCESS
        and s.value == 0x1234, "stream round trip")
    mode = I()
    chk(lib.cublasGetPointerMode_v2(h, ctypes.byref(mode)) == SUCCESS and mode.value == 0, "pointer mode HOST by default")
    chk(lib.cublasSetPointerMode_v2(h, 1) == SUCCESS and lib.cublasGetPointerMode_v2(h, ctypes.byref(mode)) == SUCCESS
        and mode.value == 1, "pointer mode DEVICE round trip")
    chk(lib.cublasSetPointerMode_v2(h, 2) == INVALID_VALUE, "pointer mode 2 invalid")
    # DEVICE mode: alpha and beta live in "device" (here host) memory and are read the same way.
    rng = np.random.default_rng(1)
    run_case(lib, h, chk, "T", "N", 4, 3, 5, 1, 0.5, 2.0, rng, label="(pointer mode DEVICE)")
    lib.cublasSetPointerMode_v2(h, 0)
    chk(lib.cublasSetMathMode(h, 3) == SUCCESS and lib.cublasGetMathMode(h, ctypes.byref(mode)) == SUCCESS
        and mode.value == 3, "math mode round trip")
    for fn in (lib.cublasGetStream_v2, lib.cublasGetPointerMode_v2, lib.cublasGetMathMode, lib.cublasGetVersion_v2):
        chk(fn(h, None) == INVALID_VALUE, "%s(NULL out) invalid" % fn.__name__)
    for code in (0, 1, 3, 7, 8, 11, 13, 14, 15):
        name, text = lib.cublasGetStatusName(code), lib.cublasGetStatusString(code)
        chk(name.startswith(b"CUBLAS_STATUS_") and name != b"CUBLAS_STATUS_UNKNOWN" and text, "status %d named" % code)
    chk(lib.cublasGetStatusName(7) == b"CUBLAS_STATUS_INVALID_VALUE", "status 7 name")
    one = ctypes.c_float(1.0)
    chk(lib.cublasSgemm_v2(None, 0, 0, 1, 1, 1, ctypes.byref(one), None, 1, None, 1, ctypes.byref(one), None, 1)
        == NOT_INITIALIZED, "NULL handle -> NOT_INITIALIZED")
    chk(lib.cublasSetStream_v2(None, None) == NOT_INITIALIZED, "SetStream(NULL handle)")
    chk(lib.cublasDestroy_v2(h) == SUCCESS, "destroy")
    chk(lib.cublasSgemm_v2(h, 0, 0, 1, 1, 1, ctypes.byref(one), None, 1, None, 1, ctypes.byref(one), None, 1)
        == NOT_INITIALIZED, "destroyed handle -> NOT_INITIALIZED")
    chk(lib.cublasDestroy_v2(h) == NOT_INITIALIZED, "double destroy -> NOT_INITIALIZED")
    chk(lib.cublasDestroy_v2(None) == NOT_INITIALIZED, "destroy(NULL) -> NOT_INITIALIZED")


CHILD = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
h = ctypes.c_void_p(); lib.cublasCreate_v2(ctypes.byref(h))
one = ctypes.c_float(1.0); buf = (ctypes.c_float * 64)()
lib.cublasSgemm_v2(h, 0, 1, 4, 3, 2, ctypes.byref(one), buf, 4, buf, 3, ctypes.byref(one), buf, 4)
lib.cublasSgemm_v2(h, 0, 0, 4, 3, 2, ctypes.byref(one), buf, 2, buf, 2, ctypes.byref(one), buf, 4)
"""


def check_messages(path, chk):
    """Errors are explained on stderr always; CUEMU_TRACE adds one line per call."""
    env = {k: v for k, v in os.environ.items() if k != "CUEMU_TRACE"}
    quiet = subprocess.run([sys.executable, "-c", CHILD, path], env=env, capture_output=True, text=True)
    msg = "cuBLAS stand-in: cublasSgemm_v2: lda = 2, expected lda >= max(1, m) = 4 (transa = N)"
    chk(quiet.stderr.strip() == msg, "error message (got %r)" % quiet.stderr)
    traced = subprocess.run([sys.executable, "-c", CHILD, path], env=dict(env, CUEMU_TRACE="1"),
                            capture_output=True, text=True)
    lines = traced.stderr.strip().splitlines()
    chk(len(lines) == 4 and "cublasSgemm_v2 transa=N transb=T m=4 n=3 k=2 lda=4 ldb=3 ldc=4" in lines[1]
        and lines[3] == msg, "trace lines (got %r)" % traced.stderr)


def check_large(lib, h, chk, rng):
    """The largest sizes minidl's tests reach, in every layout; also a rough timing."""
    m, n, k = 512, 1024, 1152
    times = []
    for ta, tb in itertools.product("NT", repeat=2):
        ra, ca = (m, k) if ta == "N" else (k, m)
        rb, cb = (k, n) if tb == "N" else (n, k)
        Ab, A = colmajor(ra, ca, ra, rng)
        Bb, B = colmajor(rb, cb, rb, rng)
        Cb, C = colmajor(m, n, m, rng)
        t = time.perf_counter()
        st = sgemm(lib, h, ta, tb, m, n, k, 1.0, ptr(Ab), ra, ptr(Bb), rb, 0.0, ptr(Cb), m)
        times.append("%s%s %.2fs" % (ta, tb, time.perf_counter() - t))
        ref, tol = reference(ta, tb, 1.0, A, B, 0.0, C)
        chk(st == SUCCESS and np.all(np.abs(C - ref) <= tol), "large %s%s %dx%dx%d" % (ta, tb, m, n, k))
    print("large sgemm %dx%dx%d: %s" % (m, n, k, ", ".join(times)))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = os.path.abspath(sys.argv[1])
    lib = load(path)
    chk = Checker()
    rng = np.random.default_rng(0)
    h = P()
    assert lib.cublasCreate_v2(ctypes.byref(h)) == SUCCESS
    # The library explains each rejected call on stderr; silence that here (check_messages tests it).
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            check_all_layouts(lib, h, chk, rng)
            check_nan_rules(lib, h, chk, rng)
            check_batched(lib, h, chk, rng)
            check_invalid(lib, h, chk, rng)
            check_handles(lib, chk)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    check_messages(path, chk)
    check_large(lib, h, chk, rng)
    lib.cublasDestroy_v2(h)
    print("check_cublas: %d passed, %d failed%s" % (chk.passed, len(chk.failed),
                                                    "" if EXACT else " (float32 bit-exact checks skipped)"))
    sys.exit(1 if chk.failed else 0)


if __name__ == "__main__":
    main()
