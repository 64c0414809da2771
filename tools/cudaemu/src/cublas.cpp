// cudaemu: a CPU stand-in for the part of the cuBLAS v2 API that minidl uses.
//
// In cudaemu, "device" pointers are plain host pointers (cuMemAlloc returns host memory), so this
// library reads and writes A, B, C, alpha and beta directly, whatever the pointer mode. It follows
// the cuBLAS documentation's column-major definition of GEMM,
//     C = alpha * op(A) * op(B) + beta * C,   op(A) m x k, op(B) k x n, C m x n,
// with its argument checks and BLAS's rules about what is not read: C is not read when beta == 0
// (so NaN or garbage there does not propagate), A and B are not read when alpha == 0 or k == 0.
// Everything else is plain IEEE float arithmetic (build without -ffast-math).
//
// Build: g++ -O2 -fPIC -shared -std=c++17 -o libcublas.so.13 cublas.cpp -Wl,-soname,libcublas.so.13
// Debug: CUEMU_TRACE=1 prints one line per call to stderr. Errors are always explained on stderr.

#include <algorithm>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_set>
#include <vector>

// The types, with cuBLAS's numeric values (no CUDA headers are used).
enum cublasStatus_t : int {
    CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1, CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_ARCH_MISMATCH = 8, CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13, CUBLAS_STATUS_INTERNAL_ERROR = 14, CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum cublasPointerMode_t : int { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 };
enum cublasMath_t : int { CUBLAS_DEFAULT_MATH = 0 };  // other modes are accepted and stored as given

struct cublasContext {
    uint64_t magic;                   // kLive while the handle is usable
    void* stream;                     // cudaStream_t; stored only, work here is synchronous
    cublasPointerMode_t pointer_mode; // stored only: "device" scalars are host memory here
    cublasMath_t math_mode;           // stored only: the arithmetic is always plain float
};
typedef cublasContext* cublasHandle_t;

namespace {

const uint64_t kLive = 0x6375424c41536831ULL;  // "cuBLASh1"
const uint64_t kDead = 0x64657374726f7965ULL;  // written on destroy

// Live handles are kept in a set so a destroyed (freed) handle is recognised without reading it.
std::mutex g_mutex;
std::unordered_set<const cublasContext*> g_live;

bool tracing() {
    static const bool on = [] { const char* v = std::getenv("CUEMU_TRACE"); return v && *v; }();
    return on;
}

void trace(const char* fmt, ...) {
    if (!tracing()) return;
    va_list ap;
    va_start(ap, fmt);
    std::fputs("cuBLAS stand-in trace: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
}

// Prints "cuBLAS stand-in: <fn>: <argument> = <value>, expected <rule>" and returns the status.
cublasStatus_t fail(cublasStatus_t status, const char* fn, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "cuBLAS stand-in: %s: ", fn);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    return status;
}

cublasStatus_t check_handle(const cublasContext* h, const char* fn) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (h && g_live.count(h) && h->magic == kLive) return CUBLAS_STATUS_SUCCESS;
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, fn,
                "handle = %p, expected a handle from cublasCreate_v2 not yet destroyed", (const void*)h);
}

cublasStatus_t null_out(const char* fn, const char* what) {
    return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "%s = NULL, expected a pointer to store the result in", what);
}

const char* op_name(int op) { return op == CUBLAS_OP_N ? "N" : op == CUBLAS_OP_T ? "T" : op == CUBLAS_OP_C ? "C" : "?"; }

struct Gemm { int transa, transb, m, n, k, lda, ldb, ldc; };

// The checks the cuBLAS docs list for gemm / gemmBatched / gemmStridedBatched, in that order.
cublasStatus_t check_gemm(const char* fn, const cublasContext* h, const Gemm& g, const float* alpha,
                          const float* beta, bool batched, int batchCount) {
    char batch[32] = "";
    if (batched) std::snprintf(batch, sizeof batch, " batchCount=%d", batchCount);
    trace("%s transa=%s transb=%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d%s", fn, op_name(g.transa), op_name(g.transb),
          g.m, g.n, g.k, g.lda, g.ldb, g.ldc, batch);
    if (cublasStatus_t s = check_handle(h, fn)) return s;
    const cublasStatus_t bad = CUBLAS_STATUS_INVALID_VALUE;
    if (g.transa < 0 || g.transa > 2) return fail(bad, fn, "transa = %d, expected CUBLAS_OP_N/T/C (0, 1, 2)", g.transa);
    if (g.transb < 0 || g.transb > 2) return fail(bad, fn, "transb = %d, expected CUBLAS_OP_N/T/C (0, 1, 2)", g.transb);
    if (g.m < 0) return fail(bad, fn, "m = %d, expected m >= 0", g.m);
    if (g.n < 0) return fail(bad, fn, "n = %d, expected n >= 0", g.n);
    if (g.k < 0) return fail(bad, fn, "k = %d, expected k >= 0", g.k);
    const bool an = g.transa == CUBLAS_OP_N, bn = g.transb == CUBLAS_OP_N;
    const int min_lda = std::max(1, an ? g.m : g.k), min_ldb = std::max(1, bn ? g.k : g.n), min_ldc = std::max(1, g.m);
    if (g.lda < min_lda)
        return fail(bad, fn, "lda = %d, expected lda >= max(1, %s) = %d (transa = %s)", g.lda, an ? "m" : "k", min_lda, op_name(g.transa));
    if (g.ldb < min_ldb)
        return fail(bad, fn, "ldb = %d, expected ldb >= max(1, %s) = %d (transb = %s)", g.ldb, bn ? "k" : "n", min_ldb, op_name(g.transb));
    if (g.ldc < min_ldc) return fail(bad, fn, "ldc = %d, expected ldc >= max(1, m) = %d", g.ldc, min_ldc);
    if (batchCount < 0) return fail(bad, fn, "batchCount = %d, expected batchCount >= 0", batchCount);
    if (!alpha) return fail(bad, fn, "alpha = NULL, expected a pointer to the scalar");
    if (!beta) return fail(bad, fn, "beta = NULL, expected a pointer to the scalar");
    return CUBLAS_STATUS_SUCCESS;
}

// Scratch reused across the batches of one call.
struct Work {
    std::vector<float> at, bt;         // op(A) (m x k) and op(B) (k x n) packed column-major when transposed
    const float *at_src = nullptr, *bt_src = nullptr;  // what they hold: a shared operand (stride 0) packs once
    std::vector<float> acc;            // one column of sums op(A) * op(B)[:, j]
};

// dst (cols x rows, leading dimension cols) = src^T, src rows x cols with leading dimension ld.
// Tiled so that neither the reads nor the writes stride through memory one element per cache line.
void transpose(int rows, int cols, const float* src, int ld, std::vector<float>& dst) {
    dst.resize((size_t)rows * cols);
    const int T = 32;
    for (int j0 = 0; j0 < cols; j0 += T)
        for (int i0 = 0; i0 < rows; i0 += T)
            for (int j = j0; j < std::min(cols, j0 + T); ++j)
                for (int i = i0; i < std::min(rows, i0 + T); ++i) dst[j + (size_t)i * cols] = src[i + (ptrdiff_t)j * ld];
}

// op(X) as a column-major pointer and leading dimension, packing X^T into `buf` when transposed.
const float* op_matrix(int trans, int rows, int cols, const float* X, int ld, std::vector<float>& buf,
                       const float*& held, ptrdiff_t& op_ld) {
    if (trans == CUBLAS_OP_N) { op_ld = ld; return X; }
    if (held != X) { transpose(cols, rows, X, ld, buf); held = X; }  // X is cols x rows, op(X) rows x cols
    op_ld = rows;
    return buf.data();
}

// acc[0:m] += sum over the given columns a[q] * b[q], q in order: each element still gets its products
// added one at a time in k order, so unrolling four columns changes no rounding. Four elements go at a
// time through GCC's vector extension: each lane does exactly the scalar arithmetic (no reassociation).
typedef float v4 __attribute__((vector_size(16)));  // one SSE / NEON register
inline v4 load4(const float* p) { v4 v; std::memcpy(&v, p, sizeof v); return v; }
inline void store4(float* p, v4 v) { std::memcpy(p, &v, sizeof v); }

void axpy4(int m, float* __restrict acc, const float* a0, const float* a1, const float* a2, const float* a3,
           float b0, float b1, float b2, float b3) {
    int i = 0;
    for (; i + 4 <= m; i += 4)
        store4(acc + i, (((load4(acc + i) + load4(a0 + i) * b0) + load4(a1 + i) * b1) + load4(a2 + i) * b2) +
                            load4(a3 + i) * b3);
    for (; i < m; ++i) acc[i] = (((acc[i] + a0[i] * b0) + a1[i] * b1) + a2[i] * b2) + a3[i] * b3;
}
void axpy1(int m, float* __restrict acc, const float* a, float b) {
    int i = 0;
    for (; i + 4 <= m; i += 4) store4(acc + i, load4(acc + i) + load4(a + i) * b);
    for (; i < m; ++i) acc[i] += a[i] * b;
}

// C = beta * C with BLAS's rule that beta == 0 writes zeros without reading C.
void scale_c(const Gemm& g, float beta, float* C) {
    if (beta == 1.0f) return;
    for (int j = 0; j < g.n; ++j) {
        float* c = C + (ptrdiff_t)j * g.ldc;
        for (int i = 0; i < g.m; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    }
}

// The arithmetic of gemm_one (alpha != 0, k > 0, m, n > 0); may throw std::bad_alloc.
void multiply(const Gemm& g, float alpha, const float* A, const float* B, float beta, float* C, Work& w) {
    const int m = g.m, n = g.n, k = g.k;
    // The kernel walks columns of op(A) and op(B); transposed operands are packed so those are contiguous.
    ptrdiff_t lda, ldb;
    const float* a = op_matrix(g.transa, m, k, A, g.lda, w.at, w.at_src, lda);
    const float* b = op_matrix(g.transb, k, n, B, g.ldb, w.bt, w.bt_src, ldb);
    w.acc.resize(m);
    float* acc = w.acc.data();
    for (int j = 0; j < n; ++j) {
        const float* bj = b + j * ldb;  // column j of op(B)
        std::fill(acc, acc + m, 0.0f);
        int p = 0;
        for (; p + 4 <= k; p += 4)
            axpy4(m, acc, a + p * lda, a + (p + 1) * lda, a + (p + 2) * lda, a + (p + 3) * lda, bj[p], bj[p + 1],
                  bj[p + 2], bj[p + 3]);
        for (; p < k; ++p) axpy1(m, acc, a + p * lda, bj[p]);
        float* c = C + (ptrdiff_t)j * g.ldc;
        if (beta == 0.0f)
            for (int i = 0; i < m; ++i) c[i] = alpha * acc[i];  // C not read: NaN there must not leak
        else
            for (int i = 0; i < m; ++i) c[i] = alpha * acc[i] + beta * c[i];
    }
}

// One GEMM with checked arguments. Each C[i,j] is a float32 sum over p = 0..k-1, in that order, of
// op(A)[i,p] * op(B)[p,j]; then C[i,j] = alpha * sum (+ beta * C[i,j] unless beta == 0).
cublasStatus_t gemm_one(const char* fn, const Gemm& g, float alpha, const float* A, const float* B,
                        float beta, float* C, Work& w) {
    if (g.m == 0 || g.n == 0) return CUBLAS_STATUS_SUCCESS;  // nothing to write
    if (!C) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "C = NULL, expected a device pointer (C is written)");
    if (alpha == 0.0f || g.k == 0) { scale_c(g, beta, C); return CUBLAS_STATUS_SUCCESS; }
    // Not in the cuBLAS docs (a GPU would fault later): a null A or B that must be read is refused.
    if (!A) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "A = NULL, expected a device pointer (alpha != 0, k > 0)");
    if (!B) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "B = NULL, expected a device pointer (alpha != 0, k > 0)");
    try {
        multiply(g, alpha, A, B, beta, C, w);
    } catch (const std::bad_alloc&) {
        return fail(CUBLAS_STATUS_ALLOC_FAILED, fn, "scratch = %d x %d floats, expected to fit in host memory", g.m, g.k);
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
    trace("cublasCreate_v2");
    if (!handle) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate_v2", "handle = NULL, expected a pointer to store the handle in");
    cublasContext* h = new (std::nothrow) cublasContext{kLive, nullptr, CUBLAS_POINTER_MODE_HOST, CUBLAS_DEFAULT_MATH};
    if (!h) return fail(CUBLAS_STATUS_ALLOC_FAILED, "cublasCreate_v2", "context = %zu bytes, expected to fit in host memory", sizeof *h);
    std::lock_guard<std::mutex> lock(g_mutex);
    g_live.insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    trace("cublasDestroy_v2 handle=%p", (void*)handle);
    if (cublasStatus_t s = check_handle(handle, "cublasDestroy_v2")) return s;
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        if (!g_live.erase(handle))  // another thread destroyed it since the check
            return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy_v2", "handle = %p, expected a live handle", (void*)handle);
        handle->magic = kDead;
    }
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

// cuBLAS encodes its version as major * 10000 + minor * 100 + patch. A null handle is allowed here.
cublasStatus_t cublasGetVersion_v2(cublasHandle_t handle, int* version) {
    trace("cublasGetVersion_v2");
    if (handle) {
        if (cublasStatus_t s = check_handle(handle, "cublasGetVersion_v2")) return s;
    }
    if (!version) return null_out("cublasGetVersion_v2", "version");
    *version = 130000;
    return CUBLAS_STATUS_SUCCESS;
}

// The setters and getters: check the handle (and the out pointer), then store or load one field.
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, void* stream) {
    trace("cublasSetStream_v2 stream=%p", stream);
    if (cublasStatus_t s = check_handle(handle, "cublasSetStream_v2")) return s;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, void** stream) {
    trace("cublasGetStream_v2");
    if (cublasStatus_t s = check_handle(handle, "cublasGetStream_v2")) return s;
    if (!stream) return null_out("cublasGetStream_v2", "stream");
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
    const char* fn = "cublasSetPointerMode_v2";
    trace("%s mode=%d", fn, (int)mode);
    if (cublasStatus_t s = check_handle(handle, fn)) return s;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "mode = %d, expected HOST (0) or DEVICE (1)", (int)mode);
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
    trace("cublasGetPointerMode_v2");
    if (cublasStatus_t s = check_handle(handle, "cublasGetPointerMode_v2")) return s;
    if (!mode) return null_out("cublasGetPointerMode_v2", "mode");
    *mode = handle->pointer_mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    trace("cublasSetMathMode mode=%d", (int)mode);
    if (cublasStatus_t s = check_handle(handle, "cublasSetMathMode")) return s;
    handle->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
    trace("cublasGetMathMode");
    if (cublasStatus_t s = check_handle(handle, "cublasGetMathMode")) return s;
    if (!mode) return null_out("cublasGetMathMode", "mode");
    *mode = handle->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized (bad or destroyed handle)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an unsupported value or parameter was passed to the function";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "the function requires a feature absent from the device architecture";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal cuBLAS operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unknown cuBLAS status";
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                              const float* beta, float* C, int ldc) {
    const char* fn = "cublasSgemm_v2";
    const Gemm g{transa, transb, m, n, k, lda, ldb, ldc};
    if (cublasStatus_t s = check_gemm(fn, handle, g, alpha, beta, false, 1)) return s;
    Work w;
    return gemm_one(fn, g, *alpha, A, B, *beta, C, w);
}

// Batch i's operands start i * stride elements on (a stride of 0 shares that operand).
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float* alpha, const float* A, int lda,
                                         long long strideA, const float* B, int ldb, long long strideB,
                                         const float* beta, float* C, int ldc, long long strideC, int batchCount) {
    const char* fn = "cublasSgemmStridedBatched";
    const Gemm g{transa, transb, m, n, k, lda, ldb, ldc};
    if (cublasStatus_t s = check_gemm(fn, handle, g, alpha, beta, true, batchCount)) return s;
    Work w;
    for (int i = 0; i < batchCount; ++i)
        if (cublasStatus_t s = gemm_one(fn, g, *alpha, A ? A + i * strideA : nullptr, B ? B + i * strideB : nullptr,
                                        *beta, C ? C + i * strideC : nullptr, w))
            return s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                  int n, int k, const float* alpha, const float* const Aarray[], int lda,
                                  const float* const Barray[], int ldb, const float* beta, float* const Carray[],
                                  int ldc, int batchCount) {
    const char* fn = "cublasSgemmBatched";
    const Gemm g{transa, transb, m, n, k, lda, ldb, ldc};
    if (cublasStatus_t s = check_gemm(fn, handle, g, alpha, beta, true, batchCount)) return s;
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    // Like a null A or B, a null pointer array that would be read is refused rather than crashed on.
    const bool reads_ab = *alpha != 0.0f && k > 0;
    if (!Carray) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "Carray = NULL, expected batchCount pointers");
    if (reads_ab && !Aarray) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "Aarray = NULL, expected batchCount pointers");
    if (reads_ab && !Barray) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "Barray = NULL, expected batchCount pointers");
    Work w;
    for (int i = 0; i < batchCount; ++i)
        if (cublasStatus_t s = gemm_one(fn, g, *alpha, reads_ab ? Aarray[i] : nullptr, reads_ab ? Barray[i] : nullptr,
                                        *beta, Carray[i], w))
            return s;
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
