// A CPU stand-in for the CUDA driver library (libcuda.so.1): the driver functions pycuda calls,
// implemented on host memory. Device pointers are host pointers; a "cubin" is a shared object
// built by the stand-in nvcc, loaded with dlopen; a launch runs the grid's blocks one at a time
// (fibers.cpp). Every other function of cuda.h is a generated stub (stubs.c, made by
// gen_stubs.py) that fails with CUDA_ERROR_NOT_SUPPORTED and names itself.
//
// Contexts are kept per OS thread, as the real driver keeps them, so code that forgets to make
// its context current on a new thread fails here as it would on a GPU.

#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "cuemu_abi.h"
#include "fibers.h"

#define API extern "C" __attribute__((visibility("default")))

namespace {

constexpr size_t STATIC_SHARED_LIMIT = 48 * 1024;
constexpr size_t SHARED_OPTIN_LIMIT = 227 * 1024;
constexpr size_t TOTAL_MEMORY = 16ull << 30;
constexpr int CC_MAJOR = 9, CC_MINOR = 0;
const char* const DEVICE_NAME = "minidl CPU emulator (cuemu)";

struct Context { int device; unsigned flags; bool primary; };
struct Module
{
    void* handle;
    int fd;  // kept open while loaded: glibc knows a library by its path, so /proc/self/fd/N must stay unique
    char* sharedBegin;
    char* sharedEnd;
    size_t sharedBytes() const { return sharedEnd - sharedBegin; }
};
struct Function
{
    const cuemu::KernelInfo* info;
    Module* module;
    int maxDynamicShared;
};
struct Event { std::chrono::steady_clock::time_point at; bool recorded; };

bool initialised = false;
Context primary{0, 0, true};
int primaryRefs = 0;
thread_local std::vector<Context*> stack;

std::mutex memoryLock;
std::map<uintptr_t, size_t> allocations;  // device (= host) address -> bytes
size_t allocated = 0;
std::recursive_mutex launchLock;

thread_local std::string lastDetail;
thread_local CUresult lastCode = CUDA_SUCCESS;
thread_local std::string errorText;

bool flag(const char* name, bool fallback)
{
    const char* v = getenv(name);
    if (!v || !*v) return fallback;
    return strcmp(v, "0") != 0;
}

bool poisonEnabled() { return flag("CUEMU_POISON", true); }
bool traceEnabled() { return flag("CUEMU_TRACE", false); }

CUresult fail(CUresult code, const char* fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    lastDetail = text;
    lastCode = code;
    if (flag("CUEMU_VERBOSE", true)) fprintf(stderr, "cuemu: %s\n", text);
    return code;
}

#define NEED_INIT() \
    do { if (!initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, "%s: cuInit was not called", __func__); } while (0)
#define NEED_CONTEXT() \
    do { NEED_INIT(); if (stack.empty()) return fail(CUDA_ERROR_INVALID_CONTEXT, \
        "%s: no context is current on this OS thread (contexts are per thread: push one first)", __func__); } while (0)

// the allocation holding [p, p + bytes), or end()
std::map<uintptr_t, size_t>::iterator holding(uintptr_t p, size_t bytes)
{
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin()) return allocations.end();
    --it;
    if (p + bytes > it->first + it->second) return allocations.end();
    return it;
}

CUresult checkDevice(const char* what, CUdeviceptr p, size_t bytes)
{
    std::lock_guard<std::mutex> guard(memoryLock);
    if (holding((uintptr_t)p, bytes) == allocations.end())
        return fail(CUDA_ERROR_INVALID_VALUE, "%s: [0x%llx, +%zu bytes) is not inside one device allocation", what,
                    (unsigned long long)p, bytes);
    return CUDA_SUCCESS;
}

void poison(void* p, size_t bytes)
{
    // all-ones bytes: NaN as a float or double, -1 as an integer
    if (poisonEnabled()) memset(p, 0xFF, bytes);
}

int attribute(CUdevice_attribute a)
{
    switch (a)
    {
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: return 1024;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: return 65535;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return (int)STATIC_SHARED_LIMIT;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return (int)SHARED_OPTIN_LIMIT;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return 228 * 1024;
        case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
        case CU_DEVICE_ATTRIBUTE_MAX_PITCH: return 2147483647;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: return 65536;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: return 65536;
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return 1000000;
        case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return 1000000;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return 64;
        case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: return 512;
        case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: return 32;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return 1;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return 2048;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: return 32;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return CC_MAJOR;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return CC_MINOR;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
        case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: return 1;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: return 1;
        case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: return 1;
        case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: return 1;
        default: return 0;
    }
}

const char* codeName(CUresult c)
{
    switch (c)
    {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_DEINITIALIZED: return "CUDA_ERROR_DEINITIALIZED";
        case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        case CUDA_ERROR_CONTEXT_IS_DESTROYED: return "CUDA_ERROR_CONTEXT_IS_DESTROYED";
        default: return "CUDA_ERROR_UNKNOWN";
    }
}

const char* codeText(CUresult c)
{
    switch (c)
    {
        case CUDA_SUCCESS: return "no error";
        case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
        case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
        case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
        case CUDA_ERROR_DEINITIALIZED: return "driver shutting down";
        case CUDA_ERROR_NO_DEVICE: return "no CUDA-capable device is detected";
        case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
        case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
        case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
        case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
        case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
        case CUDA_ERROR_NOT_READY: return "device not ready";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
        case CUDA_ERROR_LAUNCH_FAILED: return "unspecified launch failure";
        case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
        case CUDA_ERROR_CONTEXT_IS_DESTROYED: return "context is destroyed";
        default: return "unknown error";
    }
}

}  // namespace

// ---- called by the generated stubs ----

API CUresult cuemuUnsupported(const char* name)
{
    return fail(CUDA_ERROR_NOT_SUPPORTED, "%s is not implemented by minidl's CPU stand-in driver", name);
}

// ---- errors, version, initialisation ----

API CUresult cuGetErrorString(CUresult error, const char** pStr)
{
    if (!pStr) return CUDA_ERROR_INVALID_VALUE;
    errorText = codeText(error);
    if (error == lastCode && !lastDetail.empty()) errorText += " (cuemu: " + lastDetail + ")";
    *pStr = errorText.c_str();
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorName(CUresult error, const char** pStr)
{
    if (!pStr) return CUDA_ERROR_INVALID_VALUE;
    *pStr = codeName(error);
    return CUDA_SUCCESS;
}

API CUresult cuInit(unsigned int flags)
{
    if (flags) return fail(CUDA_ERROR_INVALID_VALUE, "cuInit: flags must be 0, got %u", flags);
    initialised = true;
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* version)
{
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = CUDA_VERSION;
    return CUDA_SUCCESS;
}

// ---- devices ----

API CUresult cuDeviceGetCount(int* count)
{
    NEED_INIT();
    *count = 1;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* device, int ordinal)
{
    NEED_INIT();
    if (ordinal != 0) return fail(CUDA_ERROR_INVALID_DEVICE, "cuDeviceGet: device %d does not exist (1 device)", ordinal);
    *device = 0;
    return CUDA_SUCCESS;
}

#define NEED_DEVICE(d) \
    do { NEED_INIT(); if ((d) != 0) return fail(CUDA_ERROR_INVALID_DEVICE, "%s: no device %d", __func__, (int)(d)); } while (0)

API CUresult cuDeviceGetName(char* name, int len, CUdevice dev)
{
    NEED_DEVICE(dev);
    snprintf(name, len, "%s", DEVICE_NAME);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem(size_t* bytes, CUdevice dev)
{
    NEED_DEVICE(dev);
    *bytes = TOTAL_MEMORY;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev)
{
    NEED_DEVICE(dev);
    *pi = attribute(attrib);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice dev)
{
    NEED_DEVICE(dev);
    *major = CC_MAJOR;
    *minor = CC_MINOR;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetPCIBusId(char* pciBusId, int len, CUdevice dev)
{
    NEED_DEVICE(dev);
    snprintf(pciBusId, len, "0000:00:00.0");
    return CUDA_SUCCESS;
}

// ---- contexts (a per-OS-thread stack, as in the real driver) ----

API CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev)
{
    NEED_DEVICE(dev);
    primaryRefs++;
    *pctx = reinterpret_cast<CUcontext>(&primary);
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    NEED_DEVICE(dev);
    if (primaryRefs == 0) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuDevicePrimaryCtxRelease: not retained");
    primaryRefs--;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int* flags, int* active)
{
    NEED_DEVICE(dev);
    *flags = primary.flags;
    *active = primaryRefs > 0;
    return CUDA_SUCCESS;
}

API CUresult cuCtxCreate(CUcontext* pctx, CUctxCreateParams*, unsigned int flags, CUdevice dev)
{
    NEED_DEVICE(dev);
    Context* c = new Context{dev, flags, false};
    stack.push_back(c);
    *pctx = reinterpret_cast<CUcontext>(c);
    return CUDA_SUCCESS;
}

API CUresult cuCtxDestroy(CUcontext ctx)
{
    NEED_INIT();
    Context* c = reinterpret_cast<Context*>(ctx);
    if (!c || c->primary) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxDestroy: not a created context");
    stack.erase(std::remove(stack.begin(), stack.end(), c), stack.end());
    delete c;
    return CUDA_SUCCESS;
}

API CUresult cuCtxPushCurrent(CUcontext ctx)
{
    NEED_INIT();
    if (!ctx) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxPushCurrent: null context");
    stack.push_back(reinterpret_cast<Context*>(ctx));
    return CUDA_SUCCESS;
}

API CUresult cuCtxPopCurrent(CUcontext* pctx)
{
    NEED_INIT();
    if (stack.empty()) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxPopCurrent: no context is current on this thread");
    if (pctx) *pctx = reinterpret_cast<CUcontext>(stack.back());
    stack.pop_back();
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(CUcontext* pctx)
{
    NEED_INIT();
    *pctx = stack.empty() ? nullptr : reinterpret_cast<CUcontext>(stack.back());
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext ctx)
{
    NEED_INIT();
    if (!ctx)
    {
        if (!stack.empty()) stack.pop_back();
        return CUDA_SUCCESS;
    }
    if (stack.empty()) stack.push_back(reinterpret_cast<Context*>(ctx));
    else stack.back() = reinterpret_cast<Context*>(ctx);
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice* device)
{
    NEED_CONTEXT();
    *device = stack.back()->device;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetApiVersion(CUcontext, unsigned int* version)
{
    NEED_INIT();
    *version = 3020;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize(void)
{
    NEED_CONTEXT();
    return CUDA_SUCCESS;  // every operation already ran to completion
}

API CUresult cuCtxGetFlags(unsigned int* flags)
{
    NEED_CONTEXT();
    *flags = stack.back()->flags;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetLimit(size_t* value, CUlimit limit)
{
    NEED_CONTEXT();
    *value = limit == CU_LIMIT_STACK_SIZE ? 1024 : 0;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetLimit(CUlimit, size_t)
{
    NEED_CONTEXT();
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCacheConfig(CUfunc_cache* config)
{
    NEED_CONTEXT();
    *config = CU_FUNC_CACHE_PREFER_NONE;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCacheConfig(CUfunc_cache)
{
    NEED_CONTEXT();
    return CUDA_SUCCESS;
}

// ---- memory ----

API CUresult cuMemAlloc(CUdeviceptr* dptr, size_t bytesize)
{
    NEED_CONTEXT();
    if (bytesize == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc: 0 bytes requested");
    void* p = nullptr;
    // exactly the bytes asked for, so an AddressSanitizer run sees one past the end
    if (posix_memalign(&p, 256, bytesize) != 0 || !p)
        return fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc: %zu bytes", bytesize);
    poison(p, bytesize);
    std::lock_guard<std::mutex> guard(memoryLock);
    allocations[(uintptr_t)p] = bytesize;
    allocated += bytesize;
    *dptr = (CUdeviceptr)p;
    if (traceEnabled()) fprintf(stderr, "cuemu: cuMemAlloc %zu -> %p\n", bytesize, p);
    return CUDA_SUCCESS;
}

API CUresult cuMemFree(CUdeviceptr dptr)
{
    NEED_CONTEXT();
    std::lock_guard<std::mutex> guard(memoryLock);
    auto it = allocations.find((uintptr_t)dptr);
    if (it == allocations.end())
        return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree: 0x%llx is not an allocation", (unsigned long long)dptr);
    allocated -= it->second;
    allocations.erase(it);
    free((void*)dptr);
    return CUDA_SUCCESS;
}

API CUresult cuMemGetInfo(size_t* freeBytes, size_t* total)
{
    NEED_CONTEXT();
    std::lock_guard<std::mutex> guard(memoryLock);
    *total = TOTAL_MEMORY;
    *freeBytes = allocated < TOTAL_MEMORY ? TOTAL_MEMORY - allocated : 0;
    return CUDA_SUCCESS;
}

API CUresult cuMemGetAddressRange(CUdeviceptr* base, size_t* size, CUdeviceptr dptr)
{
    NEED_CONTEXT();
    std::lock_guard<std::mutex> guard(memoryLock);
    auto it = holding((uintptr_t)dptr, 1);
    if (it == allocations.end())
        return fail(CUDA_ERROR_NOT_FOUND, "cuMemGetAddressRange: 0x%llx is in no allocation", (unsigned long long)dptr);
    if (base) *base = (CUdeviceptr)it->first;
    if (size) *size = it->second;
    return CUDA_SUCCESS;
}

API CUresult cuMemAllocHost(void** pp, size_t bytesize)
{
    NEED_CONTEXT();
    *pp = malloc(bytesize ? bytesize : 1);
    return *pp ? CUDA_SUCCESS : fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAllocHost: %zu bytes", bytesize);
}

API CUresult cuMemHostAlloc(void** pp, size_t bytesize, unsigned int)
{
    return cuMemAllocHost(pp, bytesize);
}

API CUresult cuMemFreeHost(void* p)
{
    NEED_INIT();
    free(p);
    return CUDA_SUCCESS;
}

API CUresult cuMemHostGetDevicePointer(CUdeviceptr* pdptr, void* p, unsigned int)
{
    NEED_CONTEXT();
    *pdptr = (CUdeviceptr)p;
    return CUDA_SUCCESS;
}

API CUresult cuMemHostRegister(void*, size_t, unsigned int)
{
    NEED_CONTEXT();
    return CUDA_SUCCESS;
}

API CUresult cuMemHostUnregister(void*)
{
    NEED_CONTEXT();
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t bytes)
{
    NEED_CONTEXT();
    if (bytes == 0) return CUDA_SUCCESS;
    if (CUresult r = checkDevice("cuMemcpyHtoD destination", dst, bytes)) return r;
    memcpy((void*)dst, src, bytes);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t bytes)
{
    NEED_CONTEXT();
    if (bytes == 0) return CUDA_SUCCESS;
    if (CUresult r = checkDevice("cuMemcpyDtoH source", src, bytes)) return r;
    memcpy(dst, (const void*)src, bytes);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t bytes)
{
    NEED_CONTEXT();
    if (bytes == 0) return CUDA_SUCCESS;
    if (CUresult r = checkDevice("cuMemcpyDtoD source", src, bytes)) return r;
    if (CUresult r = checkDevice("cuMemcpyDtoD destination", dst, bytes)) return r;
    memmove((void*)dst, (const void*)src, bytes);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream)
{
    return cuMemcpyHtoD(dst, src, bytes);
}

API CUresult cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream)
{
    return cuMemcpyDtoH(dst, src, bytes);
}

API CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream)
{
    return cuMemcpyDtoD(dst, src, bytes);
}

API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t bytes)
{
    NEED_CONTEXT();
    memmove((void*)dst, (const void*)src, bytes);
    return CUDA_SUCCESS;
}

namespace {

// where a 2-D copy's side starts: host and device (and unified) memory are all host memory here
CUresult planeBase(const char* side, CUmemorytype type, const void* host, CUdeviceptr device, char** base)
{
    switch (type)
    {
        case CU_MEMORYTYPE_HOST: *base = (char*)host; return CUDA_SUCCESS;
        case CU_MEMORYTYPE_DEVICE: case CU_MEMORYTYPE_UNIFIED: *base = (char*)device; return CUDA_SUCCESS;
        default: return fail(CUDA_ERROR_NOT_SUPPORTED, "cuMemcpy2D: %s memory type %d (CUDA arrays are not emulated)",
                             side, (int)type);
    }
}

}  // namespace

API CUresult cuMemcpy2D(const CUDA_MEMCPY2D* p)
{
    NEED_CONTEXT();
    char *src = nullptr, *dst = nullptr;
    if (CUresult r = planeBase("source", p->srcMemoryType, p->srcHost, p->srcDevice, &src)) return r;
    if (CUresult r = planeBase("destination", p->dstMemoryType, p->dstHost, p->dstDevice, &dst)) return r;
    if (p->WidthInBytes > p->srcPitch || p->WidthInBytes > p->dstPitch)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuMemcpy2D: width %zu bytes over a pitch (%zu, %zu)", p->WidthInBytes,
                    p->srcPitch, p->dstPitch);
    for (size_t row = 0; row < p->Height; row++)
        memmove(dst + (p->dstY + row) * p->dstPitch + p->dstXInBytes, src + (p->srcY + row) * p->srcPitch +
                p->srcXInBytes, p->WidthInBytes);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpy2DUnaligned(const CUDA_MEMCPY2D* p) { return cuMemcpy2D(p); }
API CUresult cuMemcpy2DAsync(const CUDA_MEMCPY2D* p, CUstream) { return cuMemcpy2D(p); }

template <typename T> CUresult fill(const char* what, CUdeviceptr dst, T value, size_t n)
{
    NEED_CONTEXT();
    if (n == 0) return CUDA_SUCCESS;
    if (CUresult r = checkDevice(what, dst, n * sizeof(T))) return r;
    T* p = reinterpret_cast<T*>(dst);
    std::fill(p, p + n, value);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) { return fill("cuMemsetD8", dst, v, n); }
API CUresult cuMemsetD16(CUdeviceptr dst, unsigned short v, size_t n) { return fill("cuMemsetD16", dst, v, n); }
API CUresult cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) { return fill("cuMemsetD32", dst, v, n); }
API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream) { return cuMemsetD8(dst, v, n); }
API CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream) { return cuMemsetD16(dst, v, n); }
API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream) { return cuMemsetD32(dst, v, n); }

// ---- streams and events: every operation is synchronous ----

API CUresult cuStreamCreate(CUstream* phStream, unsigned int)
{
    NEED_CONTEXT();
    *phStream = reinterpret_cast<CUstream>(new char[1]);
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy(CUstream hStream)
{
    NEED_INIT();
    delete[] reinterpret_cast<char*>(hStream);
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(CUstream) { NEED_CONTEXT(); return CUDA_SUCCESS; }
API CUresult cuStreamQuery(CUstream) { NEED_CONTEXT(); return CUDA_SUCCESS; }
API CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { NEED_CONTEXT(); return CUDA_SUCCESS; }

API CUresult cuEventCreate(CUevent* phEvent, unsigned int)
{
    NEED_CONTEXT();
    *phEvent = reinterpret_cast<CUevent>(new Event{{}, false});
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy(CUevent e)
{
    NEED_INIT();
    delete reinterpret_cast<Event*>(e);
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(CUevent e, CUstream)
{
    NEED_CONTEXT();
    Event* ev = reinterpret_cast<Event*>(e);
    ev->at = std::chrono::steady_clock::now();
    ev->recorded = true;
    return CUDA_SUCCESS;
}

API CUresult cuEventSynchronize(CUevent) { NEED_CONTEXT(); return CUDA_SUCCESS; }
API CUresult cuEventQuery(CUevent) { NEED_CONTEXT(); return CUDA_SUCCESS; }

API CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end)
{
    NEED_CONTEXT();
    Event* a = reinterpret_cast<Event*>(start);
    Event* b = reinterpret_cast<Event*>(end);
    if (!a->recorded || !b->recorded) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: event not recorded");
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return CUDA_SUCCESS;
}

// ---- modules: a "cubin" is a shared object from the stand-in nvcc ----

API CUresult cuModuleLoadData(CUmodule* module, const void* image)
{
    NEED_CONTEXT();
    const unsigned char* bytes = static_cast<const unsigned char*>(image);
    if (!bytes || memcmp(bytes, "\x7f" "ELF", 4) != 0)
        return fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: the image is not an ELF shared object");
    // the image's size: ELF64's section header table ends it
    const unsigned long long shoff = *reinterpret_cast<const unsigned long long*>(bytes + 0x28);
    const unsigned short shentsize = *reinterpret_cast<const unsigned short*>(bytes + 0x3A);
    const unsigned short shnum = *reinterpret_cast<const unsigned short*>(bytes + 0x3C);
    const size_t size = shoff + (size_t)shentsize * shnum;
    int fd = memfd_create("cuemu-module", 0);
    if (fd < 0 || write(fd, bytes, size) != (ssize_t)size)
        return fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: could not stage the image");
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle)
    {
        close(fd);
        return fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: %s", dlerror());
    }
    if (!dlsym(handle, "cuemu_module_abi_1"))
    {
        dlclose(handle);
        close(fd);
        return fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: not a module built by the stand-in nvcc "
                    "(a real cubin? clear pycuda's cache)");
    }
    Module* m = new Module{handle, fd, nullptr, nullptr};
    auto bounds = reinterpret_cast<void (*)(char**, char**)>(dlsym(handle, "cuemu_shared_section"));
    bounds(&m->sharedBegin, &m->sharedEnd);
    *module = reinterpret_cast<CUmodule>(m);
    return CUDA_SUCCESS;
}

API CUresult cuModuleLoadDataEx(CUmodule* module, const void* image, unsigned int, CUjit_option*, void**)
{
    return cuModuleLoadData(module, image);
}

API CUresult cuModuleUnload(CUmodule hmod)
{
    NEED_INIT();
    Module* m = reinterpret_cast<Module*>(hmod);
    std::lock_guard<std::recursive_mutex> guard(launchLock);
    dlclose(m->handle);
    close(m->fd);
    delete m;
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(CUfunction* hfunc, CUmodule hmod, const char* name)
{
    NEED_CONTEXT();
    Module* m = reinterpret_cast<Module*>(hmod);
    std::string symbol = std::string("cuemu_kernel_") + name;
    auto info = static_cast<const cuemu::KernelInfo*>(dlsym(m->handle, symbol.c_str()));
    if (!info) return fail(CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction: no kernel '%s' in the module", name);
    *hfunc = reinterpret_cast<CUfunction>(new Function{info, m, (int)(STATIC_SHARED_LIMIT - m->sharedBytes())});
    return CUDA_SUCCESS;
}

API CUresult cuFuncGetAttribute(int* pi, CUfunction_attribute attrib, CUfunction hfunc)
{
    NEED_INIT();
    Function* f = reinterpret_cast<Function*>(hfunc);
    switch (attrib)
    {
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
        case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *pi = (int)f->module->sharedBytes(); break;
        case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = 32; break;
        case CU_FUNC_ATTRIBUTE_PTX_VERSION: case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = CC_MAJOR * 10 + CC_MINOR; break;
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = f->maxDynamicShared; break;
        default: *pi = 0;
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
{
    NEED_INIT();
    Function* f = reinterpret_cast<Function*>(hfunc);
    if (attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
    {
        if (value < 0 || (size_t)value + f->module->sharedBytes() > SHARED_OPTIN_LIMIT)
            return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncSetAttribute: %d bytes of dynamic shared memory (+%zu static) "
                        "is over the %zu-byte opt-in limit", value, f->module->sharedBytes(), SHARED_OPTIN_LIMIT);
        f->maxDynamicShared = value;
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetCacheConfig(CUfunction, CUfunc_cache) { NEED_INIT(); return CUDA_SUCCESS; }
API CUresult cuFuncSetSharedMemConfig(CUfunction, CUsharedconfig) { NEED_INIT(); return CUDA_SUCCESS; }

API CUresult cuFuncSetBlockShape(CUfunction, int x, int y, int z)
{
    NEED_INIT();
    if (x < 1 || y < 1 || z < 1) return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncSetBlockShape: (%d, %d, %d)", x, y, z);
    return CUDA_SUCCESS;
}

// ---- launch ----

namespace {

cuemu::Env env;
std::vector<char> dynamicShared;

enum class Order { FORWARD, REVERSE, INTERLEAVED };

Order blockOrder()
{
    const char* v = getenv("CUEMU_BLOCK_ORDER");
    if (!v || !*v || !strcmp(v, "forward")) return Order::FORWARD;
    if (!strcmp(v, "reverse")) return Order::REVERSE;
    if (!strcmp(v, "interleaved")) return Order::INTERLEAVED;
    fprintf(stderr, "cuemu: CUEMU_BLOCK_ORDER=%s is not one of forward, reverse, interleaved; using forward\n", v);
    return Order::FORWARD;
}

// the k-th block to run, of n: forward, reverse, or from both ends inwards (0, n-1, 1, n-2, ...)
unsigned long long nthBlock(Order order, unsigned long long k, unsigned long long n)
{
    switch (order)
    {
        case Order::REVERSE: return n - 1 - k;
        case Order::INTERLEAVED: return k % 2 ? n - 1 - k / 2 : k / 2;
        default: return k;
    }
}

std::string layout(const cuemu::KernelInfo* info, size_t* total)
{
    size_t at = 0;
    for (int i = 0; i < info->nparams; i++)
    {
        at = (at + info->aligns[i] - 1) / info->aligns[i] * info->aligns[i];
        at += info->sizes[i];
    }
    *total = at;
    return info->codes;
}

// the parameter buffer, from pycuda's packed `extra` or from kernelParams
CUresult gatherArguments(const cuemu::KernelInfo* info, void** params, void** extra, std::vector<char>& args)
{
    size_t expected;
    std::string codes = layout(info, &expected);
    if (extra)
    {
        const char* buffer = nullptr;
        size_t size = (size_t)-1;
        for (void** e = extra; *e != CU_LAUNCH_PARAM_END; e += 2)
        {
            if (e[0] == CU_LAUNCH_PARAM_BUFFER_POINTER) buffer = static_cast<const char*>(e[1]);
            else if (e[0] == CU_LAUNCH_PARAM_BUFFER_SIZE) size = *static_cast<size_t*>(e[1]);
            else return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): unknown entry in extra", info->name);
        }
        if (!buffer || size == (size_t)-1)
            return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): extra lacks the buffer or its size", info->name);
        if (size != expected)
            return fail(CUDA_ERROR_INVALID_VALUE,
                        "cuLaunchKernel(%s): the arguments take %zu bytes, but the kernel's %d parameters (%s: P pointer, "
                        "i int, q long long, f float, ...) take %zu: an argument's type does not match its parameter",
                        info->name, size, info->nparams, codes.c_str(), expected);
        args.assign(buffer, buffer + size);
        return CUDA_SUCCESS;
    }
    args.assign(expected, 0);
    size_t at = 0;
    for (int i = 0; i < info->nparams; i++)
    {
        at = (at + info->aligns[i] - 1) / info->aligns[i] * info->aligns[i];
        if (!params || !params[i])
            return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): parameter %d missing", info->name, i);
        memcpy(args.data() + at, params[i], info->sizes[i]);
        at += info->sizes[i];
    }
    return CUDA_SUCCESS;
}

}  // namespace

API CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                            unsigned int by, unsigned int bz, unsigned int sharedMemBytes, CUstream, void** kernelParams,
                            void** extra)
{
    NEED_CONTEXT();
    Function* fn = reinterpret_cast<Function*>(f);
    const cuemu::KernelInfo* info = fn->info;
    const char* name = info->name;
    if (bx < 1 || by < 1 || bz < 1 || bx > 1024 || by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > 1024)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): block (%u, %u, %u) is over the device limits "
                    "(x, y <= 1024, z <= 64, x*y*z <= 1024)", name, bx, by, bz);
    if (gx < 1 || gy < 1 || gz < 1 || gx > 2147483647u || gy > 65535 || gz > 65535)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): grid (%u, %u, %u) is over the device limits "
                    "(x <= 2^31-1, y, z <= 65535)", name, gx, gy, gz);
    if (fn->module->sharedBytes() > STATIC_SHARED_LIMIT)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): the module's static shared memory (%zu bytes) is over "
                    "48 KB", name, fn->module->sharedBytes());
    if (sharedMemBytes > (unsigned)fn->maxDynamicShared)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel(%s): %u bytes of dynamic shared memory, over the %d "
                    "allowed (48 KB less static shared; raise with cuFuncSetAttribute)", name, sharedMemBytes,
                    fn->maxDynamicShared);
    std::vector<char> packed;
    if (CUresult r = gatherArguments(info, kernelParams, extra, packed)) return r;
    std::vector<std::max_align_t> args(info->argsBytes / sizeof(std::max_align_t) + 1);
    info->unpack(packed.data(), args.data());

    std::lock_guard<std::recursive_mutex> guard(launchLock);
    *info->env = &env;
    env.blockDim = dim3(bx, by, bz);
    env.gridDim = dim3(gx, gy, gz);
    dynamicShared.assign(sharedMemBytes ? sharedMemBytes : 1, 0);
    env.dynamicShared = sharedMemBytes ? dynamicShared.data() : nullptr;
    cuemu::Launch launch{info, args.data(), dim3(bx, by, bz)};
    const Order order = blockOrder();
    const auto started = std::chrono::steady_clock::now();
    const unsigned long long blocks = (unsigned long long)gx * gy * gz;
    std::string error;
    for (unsigned long long k = 0; k < blocks; k++)
    {
        unsigned long long b = nthBlock(order, k, blocks);
        env.blockIdx = uint3{(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / ((unsigned long long)gx * gy))};
        // shared memory starts each block as garbage on a GPU: poison it, so a read before a write shows
        poison(fn->module->sharedBegin, fn->module->sharedBytes());
        poison(dynamicShared.data(), sharedMemBytes);
        if (!cuemu::runBlock(env, launch, error))
            return fail(CUDA_ERROR_LAUNCH_FAILED, "kernel %s, block (%u,%u,%u): %s", name, env.blockIdx.x,
                        env.blockIdx.y, env.blockIdx.z, error.c_str());
    }
    if (traceEnabled())
        fprintf(stderr, "cuemu: launch %s grid (%u,%u,%u) block (%u,%u,%u) shared %u: %.3f ms\n", name, gx, gy, gz, bx,
                by, bz, sharedMemBytes,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    return CUDA_SUCCESS;
}

// ---- the legacy attach/detach pair (pycuda detaches the contexts it holds at exit) ----

API CUresult cuCtxAttach(CUcontext* pctx, unsigned int flags)
{
    NEED_CONTEXT();
    if (flags) return fail(CUDA_ERROR_INVALID_VALUE, "cuCtxAttach: flags must be 0");
    *pctx = reinterpret_cast<CUcontext>(stack.back());
    return CUDA_SUCCESS;
}

API CUresult cuCtxDetach(CUcontext ctx)
{
    NEED_INIT();
    Context* c = reinterpret_cast<Context*>(ctx);
    if (!stack.empty() && stack.back() == c) stack.pop_back();
    return CUDA_SUCCESS;
}
