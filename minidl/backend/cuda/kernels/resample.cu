// Upsampling and padding. Forward: one thread per output pixel, reading its source(s). Backward: one
// thread per input pixel, gathering the gradients of exactly the outputs that read it (no atomics, so
// deterministic, and a NaN reaches only the pixels the forward's formula ties it to). Arrays are
// (P, H, W) planes, P = N*C.

#include "common.cuh"

#define PAD_CONSTANT 0
#define PAD_REFLECT 1
#define PAD_REPLICATE 2

// PyTorch's align_corners=False taps of output position o along an axis of n inputs upsampled by s:
// the source coordinate (o + 0.5)/s - 0.5, clamped at 0, is num / (2s) for the integer num below,
// so the rows and weights come from integers (as the NumPy backend computes them).
struct LinearTap
{
    int i0, i1;
    float l0, l1;
};

__device__ __forceinline__ LinearTap linearTap(int o, int s, int n)
{
    int num = max(2 * o + 1 - s, 0);
    LinearTap t;
    t.i0 = num / (2 * s);
    t.i1 = min(t.i0 + 1, n - 1);
    t.l1 = (float)(num - t.i0 * 2 * s) / (float)(2 * s);
    t.l0 = 1.0f - t.l1;
    return t;
}

// The weight with which input position i enters output o's taps, and whether it enters at all (a
// tap of weight 0 still counts: the forward multiplies it in).
__device__ __forceinline__ bool tapWeight(LinearTap t, int i, float* weight)
{
    *weight = (t.i0 == i ? t.l0 : 0.0f) + (t.i1 == i ? t.l1 : 0.0f);
    return t.i0 == i || t.i1 == i;
}

// The input position that padded position o copies along an axis of n inputs with `before` padded
// positions ahead of them; -1 for the constant border.
__device__ __forceinline__ int padSource(int o, int n, int before, int mode)
{
    int i = o - before;
    if (i >= 0 && i < n) return i;
    if (mode == PAD_CONSTANT) return -1;
    if (mode == PAD_REFLECT) return i < 0 ? -i : 2 * (n - 1) - i;
    return i < 0 ? 0 : n - 1;
}

// The padded positions along an axis that copy input position i, as up to three ranges [lo, hi) in
// increasing order (the left border's, i's own, the right border's); returns how many.
__device__ __forceinline__ int padTargets(int i, int n, int before, int after, int mode, int* lo, int* hi)
{
    int k = 0;
    if (mode == PAD_REFLECT && i >= 1 && i <= before) { lo[k] = before - i; hi[k++] = before - i + 1; }
    if (mode == PAD_REPLICATE && i == 0) { lo[k] = 0; hi[k++] = before; }
    lo[k] = before + i; hi[k++] = before + i + 1;
    int m = n - 1 - i;   // distance from the last input position
    if (mode == PAD_REFLECT && m >= 1 && m <= after) { lo[k] = before + n - 1 + m; hi[k++] = before + n + m; }
    if (mode == PAD_REPLICATE && m == 0) { lo[k] = before + n; hi[k++] = before + n + after; }
    return k;
}

extern "C" {

__global__ void upsampleNearest(const float* x, float* y, long long P, int H, int W, int SH, int SW)
{
    int HO = H * SH, WO = W * SW;
    long long total = P * HO * WO;
    GRID_LOOP(idx, total)
    {
        int ox = idx % WO, oy = (idx / WO) % HO;
        long long p = idx / ((long long)HO * WO);
        y[idx] = x[(p * H + oy / SH) * W + ox / SW];
    }
}

// each input pixel sums its SH x SW block, row by row (the NumPy backend's order)
__global__ void upsampleNearestBackward(const float* dy, float* dx, long long P, int H, int W, int SH, int SW)
{
    int HO = H * SH, WO = W * SW;
    long long total = P * H * W;
    GRID_LOOP(idx, total)
    {
        int ix = idx % W, iy = (idx / W) % H;
        long long p = idx / ((long long)H * W);
        const float* block = dy + (p * HO + (long long)iy * SH) * WO + ix * SW;
        float s = 0.0f;
        for (int r = 0; r < SH; r++)
            for (int t = 0; t < SW; t++)
                s += block[r * WO + t];
        dx[idx] = s;
    }
}

// PyTorch's order: l0h * (l0w*x00 + l1w*x01) + l1h * (l0w*x10 + l1w*x11)
__global__ void upsampleBilinear(const float* x, float* y, long long P, int H, int W, int SH, int SW)
{
    int HO = H * SH, WO = W * SW;
    long long total = P * HO * WO;
    GRID_LOOP(idx, total)
    {
        int ox = idx % WO, oy = (idx / WO) % HO;
        const float* xp = x + (idx / ((long long)HO * WO)) * H * W;
        LinearTap th = linearTap(oy, SH, H), tw = linearTap(ox, SW, W);
        const float* r0 = xp + th.i0 * W;
        const float* r1 = xp + th.i1 * W;
        y[idx] = th.l0 * (tw.l0 * r0[tw.i0] + tw.l1 * r0[tw.i1]) + th.l1 * (tw.l0 * r1[tw.i0] + tw.l1 * r1[tw.i1]);
    }
}

// Input row iy is a tap of output rows in [(iy - 1)*SH, (iy + 2)*SH) only (sources move 1/SH a row).
__global__ void upsampleBilinearBackward(const float* dy, float* dx, long long P, int H, int W, int SH, int SW)
{
    int HO = H * SH, WO = W * SW;
    long long total = P * H * W;
    GRID_LOOP(idx, total)
    {
        int ix = idx % W, iy = (idx / W) % H;
        const float* g = dy + (idx / ((long long)H * W)) * HO * WO;
        float s = 0.0f;
        for (int oy = max(0, (iy - 1) * SH); oy < min(HO, (iy + 2) * SH); oy++)
        {
            float wh;
            if (!tapWeight(linearTap(oy, SH, H), iy, &wh)) continue;
            for (int ox = max(0, (ix - 1) * SW); ox < min(WO, (ix + 2) * SW); ox++)
            {
                float ww;
                if (tapWeight(linearTap(ox, SW, W), ix, &ww)) s += wh * ww * g[(long long)oy * WO + ox];
            }
        }
        dx[idx] = s;
    }
}

__global__ void pad2d(const float* x, float* y, long long P, int H, int W, int top, int bottom, int left, int right,
                      int mode, float value)
{
    int HO = H + top + bottom, WO = W + left + right;
    long long total = P * HO * WO;
    GRID_LOOP(idx, total)
    {
        int ox = idx % WO, oy = (idx / WO) % HO;
        long long p = idx / ((long long)HO * WO);
        int iy = padSource(oy, H, top, mode), ix = padSource(ox, W, left, mode);
        y[idx] = (iy < 0 || ix < 0) ? value : x[(p * H + iy) * W + ix];
    }
}

// Sums column by column, each column's rows first (the NumPy backend folds the rows, then the
// columns, in increasing order): the same additions in the same order.
__global__ void pad2dBackward(const float* dy, float* dx, long long P, int H, int W, int top, int bottom, int left,
                              int right, int mode)
{
    int HO = H + top + bottom, WO = W + left + right;
    long long total = P * H * W;
    GRID_LOOP(idx, total)
    {
        int ix = idx % W, iy = (idx / W) % H;
        const float* g = dy + (idx / ((long long)H * W)) * HO * WO;
        int ylo[3], yhi[3], xlo[3], xhi[3];
        int ny = padTargets(iy, H, top, bottom, mode, ylo, yhi);
        int nx = padTargets(ix, W, left, right, mode, xlo, xhi);
        float s = 0.0f;
        for (int a = 0; a < nx; a++)
            for (int ox = xlo[a]; ox < xhi[a]; ox++)
            {
                float column = 0.0f;
                for (int b = 0; b < ny; b++)
                    for (int oy = ylo[b]; oy < yhi[b]; oy++)
                        column += g[(long long)oy * WO + ox];
                s += column;
            }
        dx[idx] = s;
    }
}

}
