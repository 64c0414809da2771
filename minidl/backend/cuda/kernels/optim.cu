// Optimizer update rules, fused elementwise and in place. Gradients are true
// gradients of the loss; g = grad + wc * param folds in L2 weight decay.

#include "common.cuh"

extern "C" {

__global__ void sgdUpdate(float* w, const float* grad, float lr, float wc, long long n)
{
    GRID_LOOP(i, n) w[i] -= lr * (grad[i] + wc * w[i]);
}

__global__ void momentumUpdate(float* w, const float* grad, float* mom, float lr, float momRate, float wc, long long n)
{
    GRID_LOOP(i, n)
    {
        float m = momRate * mom[i] - lr * (grad[i] + wc * w[i]);
        mom[i] = m;
        w[i] += m;
    }
}

__global__ void nesterovUpdate(float* w, const float* grad, float* mom, float lr, float momRate, float wc, long long n)
{
    GRID_LOOP(i, n)
    {
        float old = mom[i];
        float m = momRate * old - lr * (grad[i] + wc * w[i]);
        mom[i] = m;
        w[i] += (1.0f + momRate) * m - momRate * old;
    }
}

// lr already carries the bias correction alpha * sqrt(1 - beta2^t) / (1 - beta1^t)
__global__ void adamUpdate(float* w, const float* grad, float* mg, float* ms, float lr, float beta1, float beta2,
                           float epsilon, float wc, long long n)
{
    GRID_LOOP(i, n)
    {
        float g = grad[i] + wc * w[i];
        float m = beta1 * mg[i] + (1.0f - beta1) * g;
        float v = beta2 * ms[i] + (1.0f - beta2) * g * g;
        mg[i] = m;
        ms[i] = v;
        w[i] -= lr * m / (sqrtf(v) + epsilon);
    }
}

__global__ void rmspropUpdate(float* w, const float* grad, float* ms, float lr, float factor, float epsilon, float wc,
                              long long n)
{
    GRID_LOOP(i, n)
    {
        float g = grad[i] + wc * w[i];
        float v = factor * ms[i] + (1.0f - factor) * g * g;
        ms[i] = v;
        w[i] -= lr * g / (sqrtf(v) + epsilon);
    }
}

__global__ void adagradUpdate(float* w, const float* grad, float* h, float lr, float epsilon, float wc, long long n)
{
    GRID_LOOP(i, n)
    {
        float g = grad[i] + wc * w[i];
        float v = h[i] + g * g;
        h[i] = v;
        w[i] -= lr * g / (sqrtf(v) + epsilon);
    }
}

}
