// Elementwise kernels: axpy, activations, dropout, bias broadcasts and small
// reductions. Every kernel walks its range with a grid-stride loop, so any
// launch configuration covers any size.

#include "common.cuh"

extern "C" {

__global__ void axpy(float* y, const float* x, float alpha, long long n)
{
    GRID_LOOP(i, n) y[i] += alpha * x[i];
}

__global__ void mul(const float* a, const float* b, float* out, long long n)
{
    GRID_LOOP(i, n) out[i] = a[i] * b[i];
}

// kind: 0 relu, 1 clip to [alpha, beta], 2 leakyRelu (slope alpha), 3 elu (alpha), 4 sigmoid, 5 tanh, 6 softPlus,
// 7 hardSigmoid (relu6(x + 3) / 6), 8 hardSwish (x * relu6(x + 3) / 6)
__device__ __forceinline__ float sigmoidf(float x)
{
    // split by sign so expf never overflows
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

__global__ void activationForward(const float* x, float* y, long long n, int kind, float alpha, float beta)
{
    GRID_LOOP(i, n)
    {
        float v = x[i], r;
        switch (kind)
        {
            // written so a NaN falls through every comparison and comes out unchanged (fminf/fmaxf
            // and "v > 0 ? v : 0" would turn it into a number)
            case 0: r = v < 0.0f ? 0.0f : v; break;
            case 1: r = v < alpha ? alpha : (v > beta ? beta : v); break;
            case 2: r = v > 0.0f ? v : alpha * v; break;
            case 3: r = v > 0.0f ? v : alpha * expm1f(v); break;
            case 4: r = sigmoidf(v); break;
            case 5: r = tanhf(v); break;
            case 7: { float t = v + 3.0f; r = t < 0.0f ? 0.0f : (t > 6.0f ? 1.0f : t / 6.0f); break; }
            // by pieces: 0 below -3 (-inf * 0 would be NaN), x above 3 (x * 6 / 6 may round); NaN falls through
            case 8: r = v < -3.0f ? 0.0f : (v > 3.0f ? v : v * (v + 3.0f) / 6.0f); break;
            default: r = log1pf(expf(-fabsf(v))) + fmaxf(v, 0.0f); break;
        }
        y[i] = r;
    }
}

__global__ void activationBackward(const float* x, const float* y, const float* dy, float* dx, long long n, int kind,
                                   float alpha, float beta)
{
    GRID_LOOP(i, n)
    {
        float v = x[i], g = dy[i], r;
        switch (kind)
        {
            // the gradient times the 0/1 mask, as the NumPy backend computes it: a NaN gradient stays NaN
            case 0: r = g * (v > 0.0f ? 1.0f : 0.0f); break;
            case 1: r = g * ((v > alpha && v < beta) ? 1.0f : 0.0f); break;
            case 2: r = v > 0.0f ? g : alpha * g; break;
            case 3: r = v > 0.0f ? g : g * (y[i] + alpha); break;
            case 4: r = g * y[i] * (1.0f - y[i]); break;
            case 5: r = g * (1.0f - y[i] * y[i]); break;
            // at the kinks (x = -3, 3) the outer piece's derivative, as PyTorch's
            case 7: r = g * ((v > -3.0f && v < 3.0f) ? (1.0f / 6.0f) : 0.0f); break;
            case 8: r = g * (v <= -3.0f ? 0.0f : (v >= 3.0f ? 1.0f : v / 3.0f + 0.5f)); break;
            default: r = g * sigmoidf(v); break;
        }
        dx[i] = r;
    }
}

// A counter-based hash (murmur3 finaliser over seed and index): reproducible for a seed, no state.
__device__ __forceinline__ unsigned int hashIndex(unsigned int seed, unsigned long long i)
{
    unsigned int h = seed ^ (unsigned int)(i * 0x9E3779B97F4A7C15ULL >> 32) ^ (unsigned int)i;
    h ^= h >> 16; h *= 0x85EBCA6BU;
    h ^= h >> 13; h *= 0xC2B2AE35U;
    h ^= h >> 16;
    return h;
}

__global__ void dropoutForward(const float* x, float* y, float* mask, long long n, float p, unsigned int seed)
{
    float scale = 1.0f / (1.0f - p);
    GRID_LOOP(i, n)
    {
        float u = (hashIndex(seed, (unsigned long long)i) >> 8) * (1.0f / 16777216.0f);   // [0, 1)
        float m = u >= p ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

// y (rows, cols) += b (cols) broadcast over rows; also (N, C, L) with rows = N*C... see addChannelBias
__global__ void addRowBias(float* y, const float* b, long long rows, int cols)
{
    GRID_LOOP(i, rows * cols) y[i] += b[i % cols];
}

// y (N, C, L) += b[c]
__global__ void addChannelBias(float* y, const float* b, int C, int L, long long total)
{
    GRID_LOOP(i, total) y[i] += b[(i / L) % C];
}

// out[j] += sum over rows of x[r, j], one thread per column (dense bias gradient)
__global__ void columnSum(const float* x, float* out, int rows, int cols)
{
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += blockDim.x * gridDim.x)
    {
        float s = 0.0f;
        for (int r = 0; r < rows; r++) s += x[(long long)r * cols + j];
        out[j] += s;
    }
}

// out[c] = beta * out[c] + sum over n, l of x[n, c, l]: one block per channel, a tree reduction in
// shared memory (no atomics, deterministic). blockDim.x must be a power of two <= 1024.
__global__ void channelSum(const float* x, float* out, int N, int C, int L, float beta)
{
    __shared__ float part[1024];
    int c = blockIdx.x;
    float s = 0.0f;
    for (long long k = threadIdx.x; k < (long long)N * L; k += blockDim.x)
    {
        long long n = k / L, l = k % L;
        s += x[(n * C + c) * L + l];
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1)
    {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[c] = beta * out[c] + part[0];
}

// Copy rows of a (outer, innerSrc) array into columns [offset, offset + innerSrc) of a (outer, innerDst)
// array, or back (toDst = 0): concatenation and splitting along any axis.
__global__ void copyBlock(float* dst, const float* src, long long outer, long long innerSrc, long long innerDst,
                          long long offset, int toDst)
{
    GRID_LOOP(i, outer * innerSrc)
    {
        long long o = i / innerSrc, k = i % innerSrc;
        if (toDst) dst[o * innerDst + offset + k] = src[i];
        else dst[i] = src[o * innerDst + offset + k];
    }
}

}
