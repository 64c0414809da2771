// The interface between the stand-in driver (driver.cpp, fibers.cpp) and a kernel module built by the
// stand-in nvcc: the Env a launch fills in, and the KernelInfo each kernel exports. Kernel sources
// see it through cuemu.h.
#pragma once


#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 { unsigned int x, y, z; };

struct dim3
{
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace cuemu {

struct Env
{
    uint3 threadIdx, blockIdx;
    dim3 blockDim, gridDim;
    void* dynamicShared;
    void (*syncthreads)(const char* file, int line);
    void (*syncwarp)(const char* file, int line);
};

// a kernel's parameter type as a letter: pointers 'P', then int kinds by size and signedness, floats
template <typename T> constexpr char typeCode()
{
    if (std::is_pointer<T>::value) return 'P';
    if (std::is_same<T, float>::value) return 'f';
    if (std::is_same<T, double>::value) return 'd';
    if (std::is_integral<T>::value)
    {
        const bool s = std::is_signed<T>::value;
        switch (sizeof(T))
        {
            case 1: return s ? 'b' : 'B';
            case 2: return s ? 'h' : 'H';
            case 4: return s ? 'i' : 'I';
            case 8: return s ? 'q' : 'Q';
        }
    }
    return 'x';  // a struct passed by value: checked by size only
}

constexpr int MAX_PARAMS = 64;

struct KernelInfo
{
    const char* name;
    int nparams;
    unsigned sizes[MAX_PARAMS];
    unsigned aligns[MAX_PARAMS];
    char codes[MAX_PARAMS + 1];
    // the parameters as a call needs them: unpacked once per launch from pycuda's buffer (native
    // alignment, parameters in order) into `argsBytes` bytes of storage, then one call per thread
    unsigned argsBytes;
    void (*unpack)(const char* buffer, void* args);
    void (*call)(const void* kernel, const void* args);
    const void* kernel;
    Env** env;  // the module's Env pointer, set by the driver before any launch
};

template <typename... Args> struct Invoker
{
    using Tuple = std::tuple<typename std::decay<Args>::type...>;

    template <std::size_t... I> static void unpackAll(const char* buffer, Tuple* out, std::index_sequence<I...>)
    {
        constexpr std::size_t n = sizeof...(Args);
        constexpr std::size_t sizes[n + 1] = {sizeof(Args)..., 0};
        constexpr std::size_t aligns[n + 1] = {alignof(Args)..., 1};
        std::size_t offsets[n + 1] = {};
        std::size_t at = 0;
        for (std::size_t i = 0; i < n; i++)
        {
            at = (at + aligns[i] - 1) / aligns[i] * aligns[i];
            offsets[i] = at;
            at += sizes[i];
        }
        ((void)std::memcpy(&std::get<I>(*out), buffer + offsets[I], sizeof(Args)), ...);
        (void)offsets;
    }

    static void unpack(const char* buffer, void* args)
    {
        unpackAll(buffer, new (args) Tuple(), std::index_sequence_for<Args...>{});
    }

    template <std::size_t... I> static void callWith(const void* kernel, const Tuple& t, std::index_sequence<I...>)
    {
        reinterpret_cast<void (*)(Args...)>(const_cast<void*>(kernel))(std::get<I>(t)...);
    }

    static void call(const void* kernel, const void* args)
    {
        callWith(kernel, *static_cast<const Tuple*>(args), std::index_sequence_for<Args...>{});
    }
};

template <typename... Args> KernelInfo describe(const char* name, void (*kernel)(Args...), Env** env)
{
    KernelInfo info{name, (int)sizeof...(Args), {sizeof(Args)...}, {alignof(Args)...}, {typeCode<Args>()..., 0},
                    (unsigned)sizeof(typename Invoker<Args...>::Tuple), &Invoker<Args...>::unpack,
                    &Invoker<Args...>::call, (const void*)kernel, env};
    return info;
}

// volatile T* in warp-synchronous code (pycuda's reductions): each store is one step of a warp in
// lockstep. Every thread of the warp reads its operands, then all write, then all go on, as the
// warp's single instruction would; fibers running one after another would otherwise see each
// other's half-finished steps.
template <typename T> struct WarpRef
{
    T* p;
    Env* env;
    operator T() const { return *p; }
    WarpRef& operator=(T v)
    {
        env->syncwarp(__FILE__, __LINE__);
        *p = v;
        env->syncwarp(__FILE__, __LINE__);
        return *this;
    }
    WarpRef& operator=(const WarpRef& other) { return *this = (T)other; }
};

template <typename T> struct WarpPtr
{
    T* p;
    Env* env;
    WarpPtr(T* q, Env* e) : p(q), env(e) {}
    WarpRef<T> operator[](long long i) const { return WarpRef<T>{p + i, env}; }
    WarpRef<T> operator*() const { return WarpRef<T>{p, env}; }
};

}  // namespace cuemu
