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

// One block per output channel: every thread sums its share of (n, oy, ox) positions for all KH*KW
// taps (and the bias) in registers, then the block reduces each tap in shared memory. No atomics.
// blockDim.x must be a power of two <= 128 (128 keeps a 9x9 kernel under 48 KB of shared memory).
__global__ void depthwiseBackwardParams(const float* x, const float* dy, float* wgrad, float* bgrad, int N, int C,
                                        int H, int W, int PH, int PW, int HO, int WO)
{
    __shared__ float part[KH * KW + 1][128];
    int co = blockIdx.x, c = co / M;
    float acc[KH * KW + 1];
    #pragma unroll
    for (int t = 0; t <= KH * KW; t++) acc[t] = 0.0f;

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
    #pragma unroll
    for (int t = 0; t <= KH * KW; t++) part[t][threadIdx.x] = acc[t];
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1)
    {
        if (threadIdx.x < half)
        {
            #pragma unroll
            for (int t = 0; t <= KH * KW; t++) part[t][threadIdx.x] += part[t][threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x < KH * KW) wgrad[co * KH * KW + threadIdx.x] += part[threadIdx.x][0];
    if (threadIdx.x == 0 && bgrad != 0) bgrad[co] += part[KH * KW][0];
}

}
