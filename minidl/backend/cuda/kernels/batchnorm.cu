// Batch normalisation over (N, L) per channel of x (N, C, L), L = H*W.
// Reductions run one block per channel with a shared-memory tree (no atomics);
// blockDim.x must be a power of two <= 1024.

#include "common.cuh"

__device__ float blockSum(float v, float* part)
{
    part[threadIdx.x] = v;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1)
    {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    float total = part[0];
    __syncthreads();
    return total;
}

// Mean and biased variance of channel c of x (N, C, L) over the block (two passes); every thread
// gets them.
__device__ void channelMoments(const float* x, int c, int N, int C, int L, float* part, float* mu, float* v)
{
    long long count = (long long)N * L;
    float s = 0.0f;
    for (long long k = threadIdx.x; k < count; k += blockDim.x)
        s += x[((k / L) * C + c) * L + k % L];
    float m = blockSum(s, part) / count;
    float q = 0.0f;
    for (long long k = threadIdx.x; k < count; k += blockDim.x)
    {
        float d = x[((k / L) * C + c) * L + k % L] - m;
        q += d * d;
    }
    *mu = m;
    *v = blockSum(q, part) / count;
}

extern "C" {

// Batch mean and biased variance (two passes, so no cancellation), and the running-statistics update.
__global__ void bnStats(const float* x, float* mean, float* var, float* runMean, float* runVar, int N, int C, int L,
                        float factor)
{
    __shared__ float part[1024];
    int c = blockIdx.x;
    long long count = (long long)N * L;
    float mu, v;
    channelMoments(x, c, N, C, L, part, &mu, &v);
    if (threadIdx.x == 0)
    {
        mean[c] = mu;
        var[c] = v;
        float unbiased = count > 1 ? v * count / (count - 1) : v;
        runMean[c] = (1.0f - factor) * runMean[c] + factor * mu;
        runVar[c] = (1.0f - factor) * runVar[c] + factor * unbiased;
    }
}

// The batch statistics alone (synchronised batch norm combines them across processes first).
__global__ void bnMoments(const float* x, float* mean, float* var, int N, int C, int L)
{
    __shared__ float part[1024];
    int c = blockIdx.x;
    float mu, v;
    channelMoments(x, c, N, C, L, part, &mu, &v);
    if (threadIdx.x == 0) { mean[c] = mu; var[c] = v; }
}

// The running-statistics update of bnStats for statistics taken over count values per channel.
__global__ void bnUpdateRunning(float* runMean, float* runVar, const float* mean, const float* var, int C,
                                long long count, float factor)
{
    GRID_LOOP(c, C)
    {
        float unbiased = count > 1 ? var[c] * count / (count - 1) : var[c];
        runMean[c] = (1.0f - factor) * runMean[c] + factor * mean[c];
        runVar[c] = (1.0f - factor) * runVar[c] + factor * unbiased;
    }
}

__global__ void bnApply(const float* x, float* y, const float* scale, const float* bias, const float* mean,
                        const float* var, float epsilon, int C, int L, long long total)
{
    GRID_LOOP(i, total)
    {
        int c = (i / L) % C;
        y[i] = (x[i] - mean[c]) * (scale[c] * rsqrtf(var[c] + epsilon)) + bias[c];
    }
}

// dbias[c] = sum dy, dscale[c] = sum dy * xhat
__global__ void bnBackwardReduce(const float* x, const float* dy, const float* mean, const float* var, float epsilon,
                                 float* dscale, float* dbias, int N, int C, int L)
{
    __shared__ float part[1024];
    int c = blockIdx.x;
    long long count = (long long)N * L;
    float mu = mean[c], inv = rsqrtf(var[c] + epsilon);
    float sg = 0.0f, sgx = 0.0f;
    for (long long k = threadIdx.x; k < count; k += blockDim.x)
    {
        long long i = ((k / L) * C + c) * L + k % L;
        sg += dy[i];
        sgx += dy[i] * (x[i] - mu) * inv;
    }
    float tg = blockSum(sg, part);
    float tgx = blockSum(sgx, part);
    if (threadIdx.x == 0) { dbias[c] = tg; dscale[c] = tgx; }
}

__global__ void bnBackwardData(const float* x, const float* dy, float* dx, const float* scale, const float* mean,
                               const float* var, const float* dscale, const float* dbias, float epsilon, int C, int L,
                               long long count, int useBatchStats, long long total)
{
    GRID_LOOP(i, total)
    {
        int c = (i / L) % C;
        float inv = rsqrtf(var[c] + epsilon), a = scale[c] * inv;
        if (useBatchStats)
        {
            float xhat = (x[i] - mean[c]) * inv;
            dx[i] = a * (dy[i] - (dbias[c] + xhat * dscale[c]) / count);
        }
        else dx[i] = a * dy[i];
    }
}

}
