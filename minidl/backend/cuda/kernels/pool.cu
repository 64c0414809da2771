// Max and average 2-D pooling. Forward: one thread per output; backward: one
// thread per input pixel gathering from the windows that contain it (no atomics).

#include "common.cuh"

extern "C" {

// indices[out] = i*KW + j of the winning tap; padding never wins. A NaN wins (the first one), as
// NumPy's max and argmax propagate it: a comparison alone would never select it.
__global__ void maxPoolForward(const float* x, float* y, int* indices, int N, int C, int H, int W, int KH, int KW,
                               int SH, int SW, int PH, int PW, int HO, int WO)
{
    long long total = (long long)N * C * HO * WO;
    GRID_LOOP(idx, total)
    {
        int ox = idx % WO, oy = (idx / WO) % HO;
        long long nc = idx / ((long long)HO * WO);
        const float* xc = x + nc * H * W;
        float best = -INFINITY;
        int arg = 0;
        for (int i = 0; i < KH; i++)
        {
            int iy = oy * SH - PH + i;
            if (iy < 0 || iy >= H) continue;
            for (int j = 0; j < KW; j++)
            {
                int ix = ox * SW - PW + j;
                if (ix < 0 || ix >= W) continue;
                float v = xc[iy * W + ix];
                if (v > best || (v != v && best == best)) { best = v; arg = i * KW + j; }
            }
        }
        y[idx] = best;
        indices[idx] = arg;
    }
}

__global__ void maxPoolBackward(const float* dy, const int* indices, float* dx, int N, int C, int H, int W, int KH,
                                int KW, int SH, int SW, int PH, int PW, int HO, int WO)
{
    long long total = (long long)N * C * H * W;
    GRID_LOOP(idx, total)
    {
        int ix = idx % W, iy = (idx / W) % H;
        long long nc = idx / ((long long)H * W);
        float s = 0.0f;
        for (int i = 0; i < KH; i++)
        {
            int oy = tapSource(iy, PH, i, 1, SH, HO);
            if (oy < 0) continue;
            for (int j = 0; j < KW; j++)
            {
                int ox = tapSource(ix, PW, j, 1, SW, WO);
                if (ox < 0) continue;
                long long o = (nc * HO + oy) * WO + ox;
                if (indices[o] == i * KW + j) s += dy[o];
            }
        }
        dx[idx] = s;
    }
}

__device__ __forceinline__ float poolDivisor(int oy, int ox, int H, int W, int KH, int KW, int SH, int SW, int PH,
                                             int PW, int includePad)
{
    if (includePad) return (float)(KH * KW);
    int y0 = oy * SH - PH, x0 = ox * SW - PW;
    int hs = min(y0 + KH, H) - max(y0, 0), ws = min(x0 + KW, W) - max(x0, 0);
    return (float)(hs * ws);
}

__global__ void avgPoolForward(const float* x, float* y, int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                               int PH, int PW, int HO, int WO, int includePad)
{
    long long total = (long long)N * C * HO * WO;
    GRID_LOOP(idx, total)
    {
        int ox = idx % WO, oy = (idx / WO) % HO;
        long long nc = idx / ((long long)HO * WO);
        const float* xc = x + nc * H * W;
        float s = 0.0f;
        for (int i = 0; i < KH; i++)
        {
            int iy = oy * SH - PH + i;
            if (iy < 0 || iy >= H) continue;
            for (int j = 0; j < KW; j++)
            {
                int ix = ox * SW - PW + j;
                if (ix >= 0 && ix < W) s += xc[iy * W + ix];
            }
        }
        y[idx] = s / poolDivisor(oy, ox, H, W, KH, KW, SH, SW, PH, PW, includePad);
    }
}

__global__ void avgPoolBackward(const float* dy, float* dx, int N, int C, int H, int W, int KH, int KW, int SH,
                                int SW, int PH, int PW, int HO, int WO, int includePad)
{
    long long total = (long long)N * C * H * W;
    GRID_LOOP(idx, total)
    {
        int ix = idx % W, iy = (idx / W) % H;
        long long nc = idx / ((long long)H * W);
        float s = 0.0f;
        for (int i = 0; i < KH; i++)
        {
            int oy = tapSource(iy, PH, i, 1, SH, HO);
            if (oy < 0) continue;
            for (int j = 0; j < KW; j++)
            {
                int ox = tapSource(ix, PW, j, 1, SW, WO);
                if (ox < 0) continue;
                s += dy[(nc * HO + oy) * WO + ox] / poolDivisor(oy, ox, H, W, KH, KW, SH, SW, PH, PW, includePad);
            }
        }
        dx[idx] = s;
    }
}

}
