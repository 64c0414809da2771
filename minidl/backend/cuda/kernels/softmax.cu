// Softmax over axis 1 of (N, C, L) and the losses. Each loss kernel writes
// its per-row or per-element share of the batch mean into `part`; the host side
// sums `part` on the device (pycuda's reduction), so nothing syncs.

#include "common.cuh"

extern "C" {

// one thread per (n, l) column of C values
__global__ void softmaxForward(const float* x, float* y, int N, int C, int L)
{
    GRID_LOOP(k, (long long)N * L)
    {
        long long base = (k / L) * C * L + k % L;
        float m = -INFINITY;
        for (int c = 0; c < C; c++) m = fmaxf(m, x[base + (long long)c * L]);
        float s = 0.0f;
        for (int c = 0; c < C; c++) { float e = expf(x[base + (long long)c * L] - m); y[base + (long long)c * L] = e; s += e; }
        float inv = 1.0f / s;
        for (int c = 0; c < C; c++) y[base + (long long)c * L] *= inv;
    }
}

__global__ void softmaxBackward(const float* y, const float* dy, float* dx, int N, int C, int L)
{
    GRID_LOOP(k, (long long)N * L)
    {
        long long base = (k / L) * C * L + k % L;
        float dot = 0.0f;
        for (int c = 0; c < C; c++) dot += dy[base + (long long)c * L] * y[base + (long long)c * L];
        for (int c = 0; c < C; c++) dx[base + (long long)c * L] = y[base + (long long)c * L] * (dy[base + (long long)c * L] - dot);
    }
}

// scores (N, C), labels (N): grad = (softmax - onehot) / N, part[n] = -log softmax[label] / N
__global__ void crossEntropy(const float* scores, const int* labels, float* grad, float* part, int N, int C)
{
    GRID_LOOP(n, (long long)N)
    {
        const float* s = scores + n * C;
        float m = -INFINITY;
        for (int c = 0; c < C; c++) m = fmaxf(m, s[c]);
        float total = 0.0f;
        for (int c = 0; c < C; c++) total += expf(s[c] - m);
        int label = labels[n];
        float invN = 1.0f / N, invTotal = 1.0f / total;
        for (int c = 0; c < C; c++)
            grad[n * C + c] = (expf(s[c] - m) * invTotal - (c == label ? 1.0f : 0.0f)) * invN;
        part[n] = (logf(total) - (s[label] - m)) * invN;
    }
}

__global__ void classificationErrors(const float* scores, const int* labels, float* part, int N, int C)
{
    GRID_LOOP(n, (long long)N)
    {
        const float* s = scores + n * C;
        int best = 0;
        // the first NaN is the argmax, as in NumPy, so a NaN score never counts as a right answer
        for (int c = 1; c < C; c++)
            if (s[c] > s[best] || (s[c] != s[c] && s[best] == s[best])) best = c;
        part[n] = best != labels[n] ? 1.0f : 0.0f;
    }
}

// kind: 0 mse, 1 bce on logits, 2 smooth L1; `invN` = 1 / batch size
__global__ void elementLoss(const float* pred, const float* target, float* grad, float* part, long long total,
                            float invN, int kind)
{
    GRID_LOOP(i, total)
    {
        float p = pred[i], t = target[i], d = p - t;
        if (kind == 0) { grad[i] = d * invN; part[i] = 0.5f * d * d * invN; }
        else if (kind == 1)
        {
            float e = expf(-fabsf(p));
            float sig = p >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            grad[i] = (sig - t) * invN;
            part[i] = (log1pf(e) + fmaxf(p, 0.0f) - t * p) * invN;
        }
        else
        {
            float a = fabsf(d);
            // clamped by comparisons, so a NaN difference stays NaN (fminf/fmaxf would make it +-1)
            grad[i] = (d < -1.0f ? -1.0f : (d > 1.0f ? 1.0f : d)) * invN;
            part[i] = (a < 1.0f ? 0.5f * d * d : a - 0.5f) * invN;
        }
    }
}

}
