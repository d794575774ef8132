// head_rmsnorm.cu: QK-norm (Qwen 3, Gemma 3): each head of d values of x (rows,
// heads·d) normalised like RMSNorm with one weight (d) shared by the heads
// (head_rmsnorm.wgsl). A row of heads is `heads` rows of d: one block per (row, head).

#include "prelude.cuh"
#include "weights/common.cuh"
#include "rmsnorm_common.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ RmsNormArgs a) {
    unsigned int r = blockIdx.y * gridDim.x + blockIdx.x;
    rmsnorm_row(a, r, r < a.step[a.rows_sel] * a.heads);
}
