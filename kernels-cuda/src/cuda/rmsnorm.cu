// rmsnorm.cu: out = x / sqrt(mean(x²) + eps) · weight, one block of WG threads per row
// (rmsnorm.wgsl).

#include "prelude.cuh"
#include "weights/common.cuh"
#include "rmsnorm_common.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ RmsNormArgs a) {
    unsigned int r = blockIdx.y * gridDim.x + blockIdx.x;
    rmsnorm_row(a, r, r < a.step[a.rows_sel]);
}
