// Direct depthwise convolution, specialised at compile time on the kernel
// size, stride, dilation and channel multiplier (defines KH, KW, SH, SW, DH,
// DW, M) so the tap loops unroll. Output channel c*M + m reads input channel c.
// W is (C*M, 1, KH, KW).

#ifndef KH
#define KH 3
#endif
#ifndef KW
#define KW 3
#endif
#ifndef SH
#define SH 1
#endif
#ifndef SW
#define SW 1
#endif
#ifndef DH
#define DH 1
#endif
#ifndef DW
#define DW 1
#endif
#ifndef M
#define M 1
#endif

#include "common.cuh"

extern "C" {

// one thread per output element (n, c*M + m, oy, ox)
__global__ void depthwiseForward(const float* x, const float* w, const float* b, float* y, int N, int C, int H,
                                 int W, int PH, int PW, int HO, int WO, int useBias)
{
    long long total = (long long)N * C * M * HO * WO;
    GRID_LOOP(idx, total)
    {
        long long r = idx;
        int ox = r % WO; r /= WO;
        int oy = r % HO; r /= HO;
        int co = r % (C * M);
        long long n = r / (C * M);
        int c = co / M;
        const float* xc = x + (n * C + c) * H * W;
        const float* wc = w + co * KH * KW;
        float s = useBias ? b[co] : 0.0f;
        #pragma unroll
        for (int i = 0; i < KH; i++)
        {
            int iy = oy * SH - PH + i * DH;
            if (iy < 0 || iy >= H) continue;
            #pragma unroll
            for (int j = 0; j < KW; j++)
            {
                int ix = ox * SW - PW + j * DW;
                if (ix >= 0 && ix < W) s += xc[iy * W + ix] * wc[i * KW + j];
            }
        }
        y[idx] = s;
    }
}

// one thread per input element (n, c, iy, ix): gathers from every output that read it
__global__ void depthwiseBackwardData(const float* dy, const float* w, float* dx, int N, int C, int H, int W,
                                      int PH, int PW, int HO, int WO)
{
    long long total = (long long)N * C * H * W;
    GRID_LOOP(idx, total)
    {
        long long r = idx;
        int ix = r % W; r /= W;
        int iy = r % H; r /= H;
        int c = r % C;
        long long n = r / C;
        float s = 0.0f;
        #pragma unroll
        for (int i = 0; i < KH; i++)
        {
            int oy = tapSource(iy, PH, i, DH, SH, HO);
            if (oy < 0) continue;
            #pragma unroll
            for (int j = 0; j < KW; j++)
            {
                int ox = tapSource(ix, PW, j, DW, SW, WO);
                if (ox < 0) continue;
                #pragma unroll
                for (int m = 0; m < M; m++)
                {
                    int co = c * M + m;
                    s += dy[((n * C * M + co) * HO + oy) * WO + ox] * w[(co * KH + i) * KW + j];
                }
            }
        }
        dx[idx] = s;
    }
}

// One block per output channel: every thread sums its share of the (n, oy, ox) positions for all
// KH*KW taps and the bias in registers (acc), then the block adds up the threads' sums, PARAM_TILE
// values at a time, through one fixed shared buffer, so the shared memory used does not grow with
// the kernel size. No atomics. blockDim.x must be a power of two, at most PARAM_BLOCK.
#define PARAM_VALUES (KH * KW + 1)   // acc[t]: tap t = i * KW + j for t < KH*KW, then the bias
#define PARAM_TILE 32
#ifndef PARAM_BLOCK
#define PARAM_BLOCK 128
#endif

__global__ void depthwiseBackwardParams(const float* x, const float* dy, float* wgrad, float* bgrad, int N, int C,
                                        int H, int W, int PH, int PW, int HO, int WO)
{
    __shared__ float part[PARAM_TILE][PARAM_BLOCK];   // 16 KB at 128 threads, whatever KH and KW
    int co = blockIdx.x, c = co / M;
    float acc[PARAM_VALUES];
    #pragma unroll
    for (int t = 0; t < PARAM_VALUES; t++) acc[t] = 0.0f;

    long long positions = (long long)N * HO * WO;
    for (long long p = threadIdx.x; p < positions; p += blockDim.x)
    {
        int ox = p % WO;
        int oy = (p / WO) % HO;
        long long n = p / ((long long)HO * WO);
        float g = dy[((n * C * M + co) * HO + oy) * WO + ox];
        const float* xc = x + (n * C + c) * H * W;
        #pragma unroll
        for (int i = 0; i < KH; i++)
        {
            int iy = oy * SH - PH + i * DH;
            #pragma unroll
            for (int j = 0; j < KW; j++)
            {
                int ix = ox * SW - PW + j * DW;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc[i * KW + j] += g * xc[iy * W + ix];
            }
        }
        acc[KH * KW] += g;
    }

    // Values t0 .. t0 + PARAM_TILE - 1 per pass. The pass count and the halving steps are the same
    // for every thread of the block, so each thread reaches every barrier; the tile loop unrolls,
    // so acc is indexed by constants and stays in registers.
    #pragma unroll
    for (int t0 = 0; t0 < PARAM_VALUES; t0 += PARAM_TILE)
    {
        #pragma unroll
        for (int k = 0; k < PARAM_TILE; k++)
            if (t0 + k < PARAM_VALUES) part[k][threadIdx.x] = acc[t0 + k];
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half >>= 1)
        {
            if (threadIdx.x < half)
            {
                #pragma unroll
                for (int k = 0; k < PARAM_TILE; k++)
                    if (t0 + k < PARAM_VALUES) part[k][threadIdx.x] += part[k][threadIdx.x + half];
            }
            __syncthreads();
        }
        // part[k][0] now holds value t0 + k summed over the block
        for (int k = threadIdx.x; k < PARAM_TILE; k += blockDim.x)
        {
            int t = t0 + k;
            if (t < KH * KW) wgrad[co * KH * KW + t] += part[k][0];
            else if (t == KH * KW && bgrad != 0) bgrad[co] += part[k][0];
        }
        __syncthreads();   // the next pass overwrites part
    }
}

}
