// rmsnorm.cu: out = x / sqrt(mean(x²) + eps) · weight, one block of WG threads per row
// (rmsnorm.wgsl).

#include "prelude.cuh"
#include "weights/common.cuh"

struct RmsNormParams {
    unsigned int rows_sel; // STEP_N_TOKENS or STEP_N_OUTPUTS
    unsigned int d;
    unsigned int x;    // arena index of the input (rows, d)
    unsigned int out;  // arena index of the output (rows, d)
    unsigned int norm; // word index of the weight (d) in `weights`
    float eps;
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const RmsNormParams& p = *reinterpret_cast<const RmsNormParams*>(params);
    __shared__ float red[32]; // (warps) partial sums
    unsigned int r = blockIdx.y * gridDim.x + blockIdx.x;
    bool live = r < step[p.rows_sel];
    float sq = 0.0f;
    if (live) {
        for (unsigned int c = threadIdx.x; c < p.d; c += blockDim.x) {
            float v = arena[p.x + r * p.d + c];
            sq += v * v;
        }
    }
    // Every thread reaches the block reduction, live or not.
    float scale = 1.0f / sqrtf(block_sum(sq, red) / (float)p.d + p.eps);
    if (live) {
        for (unsigned int c = threadIdx.x; c < p.d; c += blockDim.x) {
            arena[p.out + r * p.d + c] = arena[p.x + r * p.d + c] * scale * vector_at(weights, p.norm + c);
        }
    }
}
