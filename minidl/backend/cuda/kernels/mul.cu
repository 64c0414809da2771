// The Mul module's kernels: a product whose second factor may hold one value per map (broadcast over
// the map's positions), and the per-map dot product its backward needs for that factor.

#include "common.cuh"

extern "C" {

// y[i] = a[i] * b[i / span]: span 1 for two arrays of one shape, H*W for b (N, C, 1, 1) against
// a (N, C, H, W) (element n*C + c of b covers the span of a's plane (n, c))
__global__ void mulSpan(const float* a, const float* b, float* y, long long n, long long span)
{
    GRID_LOOP(i, n) y[i] = a[i] * b[i / span];
}

// out[p] = sum over l < span of x[p*span + l] * y[p*span + l]: one block per plane, a tree reduction
// in shared memory (no atomics, deterministic). blockDim.x must be a power of two <= 1024.
__global__ void planeDot(const float* x, const float* y, float* out, long long span)
{
    __shared__ float part[1024];
    long long base = (long long)blockIdx.x * span;
    float s = 0.0f;
    for (long long l = threadIdx.x; l < span; l += blockDim.x) s += x[base + l] * y[base + l];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1)
    {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

}
