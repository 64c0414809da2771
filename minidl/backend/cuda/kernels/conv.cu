// im2col / col2im for the general convolution (GEMMs run in cuBLAS).
//
// cols is (N, C, kh, kw, Ho, Wo) = (N, G, K, L) with K = C/G*kh*kw, L = Ho*Wo:
// cols[n, c, i, j, y, x] = x[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw] (0 outside the image).
// col2im gathers instead of scattering: each input pixel sums the column entries
// that read it, so no atomics are needed and the result is deterministic.

#include "common.cuh"

extern "C" {

__global__ void im2col(const float* x, float* cols, int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW, int HO, int WO)
{
    long long total = (long long)N * C * KH * KW * HO * WO;
    GRID_LOOP(idx, total)
    {
        long long r = idx;
        int ox = r % WO; r /= WO;
        int oy = r % HO; r /= HO;
        int j = r % KW; r /= KW;
        int i = r % KH; r /= KH;
        int c = r % C;
        long long n = r / C;
        int iy = oy * SH - PH + i * DH, ix = ox * SW - PW + j * DW;
        cols[idx] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[((n * C + c) * H + iy) * W + ix] : 0.0f;
    }
}

__global__ void col2im(const float* cols, float* dx, int N, int C, int H, int W, int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW, int HO, int WO)
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
        for (int i = 0; i < KH; i++)
        {
            int oy = tapSource(iy, PH, i, DH, SH, HO);
            if (oy < 0) continue;
            for (int j = 0; j < KW; j++)
            {
                int ox = tapSource(ix, PW, j, DW, SW, WO);
                if (ox < 0) continue;
                s += cols[((((n * C + c) * KH + i) * KW + j) * HO + oy) * WO + ox];
            }
        }
        dx[idx] = s;
    }
}

}
