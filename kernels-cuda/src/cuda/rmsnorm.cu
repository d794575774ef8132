// rmsnorm.cu: out = x / sqrt(mean(x²) + eps) · weight, one block of WG threads per row
// (rmsnorm.wgsl).

#include "prelude.cuh"
#include "weights/common.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ RmsNormArgs a) {
    const unsigned int* __restrict__ step = a.step;
    __shared__ float red[32]; // (warps) partial sums
    unsigned int r = blockIdx.y * gridDim.x + blockIdx.x;
    bool live = r < step[a.rows_sel];
    float sq = 0.0f;
    if (live) {
        for (unsigned int c = threadIdx.x; c < a.d; c += blockDim.x) {
            float v = a.x[r * a.d + c];
            sq += v * v;
        }
    }
    // Every thread reaches the block reduction, live or not.
    float scale = 1.0f / sqrtf(block_sum(sq, red) / (float)a.d + a.eps);
    if (live) {
        for (unsigned int c = threadIdx.x; c < a.d; c += blockDim.x) {
            a.out[r * a.d + c] = a.x[r * a.d + c] * scale * vector_at(a.weight, c);
        }
    }
}
