// Gradient-norm helpers: scaling an array in place (gradient clipping).

#include "common.cuh"

extern "C" {

__global__ void scaleArray(float* x, float alpha, long long n)
{
    GRID_LOOP(i, n) x[i] *= alpha;
}

}
