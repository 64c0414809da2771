// The kernel side of minidl's CPU execution of CUDA: CUDA's spellings for g++.
//
// The stand-in nvcc (tools/cudaemu/nvcc) compiles a .cu source with g++ after this header, into a
// shared object that the stand-in driver (driver.cpp) loads as the "cubin". Every CUDA thread of a
// block runs as a cooperative fiber on the host; the driver switches fibers at barriers, so
// __syncthreads and __shared__ keep their meaning. Blocks run one at a time.
//
// The driver and a kernel module talk through one struct, cuemu::Env, which the driver fills in
// (thread and block indices, the barrier entry points, the dynamic shared buffer) before it runs
// any thread of that module. Each module exports, per kernel, a cuemu::KernelInfo named
// cuemu_kernel_<name> that knows the kernel's parameter layout (read from its C++ signature), so a
// launch can check pycuda's packed argument buffer against it and unpack it into a real call.
#pragma once

#include "cuemu_abi.h"

// CUDA's math library overloads the C names for float in the global namespace (::exp(float) is
// float); libstdc++'s <math.h> does the same with its using-declarations
#include <math.h>

// one Env pointer per module; hidden so every module has its own
extern "C" __attribute__((visibility("hidden"))) cuemu::Env* cuemu_env;

#define threadIdx (cuemu_env->threadIdx)
#define blockIdx (cuemu_env->blockIdx)
#define blockDim (cuemu_env->blockDim)
#define gridDim (cuemu_env->gridDim)
#define warpSize 32
#define __syncthreads() (cuemu_env->syncthreads(__FILE__, __LINE__))
#define __syncwarp(...) (cuemu_env->syncwarp(__FILE__, __LINE__))

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
// static __shared__ data lives in one section per module, so the driver can poison it before each block
#define __shared__ static __attribute__((section("cuemu_shared")))
#define __constant__ static

// the device math library's names for what the host's libm computes (IEEE, no fast-math: the
// GPU intrinsics' reduced precision is not modelled)
#define __expf expf
#define __logf logf
#define __sinf sinf
#define __cosf cosf
#define __powf powf
#define __fdividef(a, b) ((a) / (b))
#define __saturatef(x) fminf(fmaxf((x), 0.0f), 1.0f)
inline void sincos(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline void sincospif(float x, float* s, float* c) { *s = sinf((float)M_PI * x); *c = cosf((float)M_PI * x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }
inline int __ffs(int v) { return __builtin_ffs(v); }
using std::isnan;
using std::isinf;
using std::isfinite;
using std::signbit;
using std::min;
using std::max;

// Blocks run one at a time and threads one at a time, so an atomic is a plain read-modify-write.
template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <typename T> inline T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <typename T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <typename T> inline T atomicMax(T* p, T v) { T old = *p; *p = old > v ? old : v; return old; }
template <typename T> inline T atomicMin(T* p, T v) { T old = *p; *p = old < v ? old : v; return old; }
template <typename T> inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }
inline void __threadfence() {}
inline void __threadfence_block() {}

#define CUEMU_DYNAMIC_SHARED(type) (reinterpret_cast<type*>(cuemu_env->dynamicShared))
#define CUEMU_WARP_PTR(type, init) cuemu::WarpPtr<type>((type*)(init), cuemu_env)
#define CUEMU_KERNEL(name) \
    extern "C" __attribute__((visibility("default"))) const cuemu::KernelInfo cuemu_kernel_##name = \
        cuemu::describe(#name, &name, &cuemu_env);
