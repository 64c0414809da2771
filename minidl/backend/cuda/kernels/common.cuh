// Shared by every kernel file (compiled with this folder on the include path).
#pragma once

// Walk [0, n) with a grid-stride loop, so any launch configuration covers any size.
#define GRID_LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
                             i += (long long)blockDim.x * gridDim.x)

// The output position along one axis whose window tap `tap` reads input position `pos`, or -1:
// out * stride - pad + tap * dilation == pos. Gather-style backward kernels (each input pixel
// sums what it fed into) use it instead of scattering with atomics.
__device__ __forceinline__ int tapSource(int pos, int pad, int tap, int dilation, int stride, int outSize)
{
    int t = pos + pad - tap * dilation;
    if (t < 0 || t % stride) return -1;
    int out = t / stride;
    return out < outSize ? out : -1;
}
