// select_rows.cu: out (outputs, cols) = rows `output_rows` of x (tokens, cols)
// (select_rows.wgsl).

#include "prelude.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ SelectRowsArgs a) {
    const unsigned int* __restrict__ step = a.step;
    unsigned int i = flat_index();
    if (i < step[STEP_N_OUTPUTS] * a.cols) {
        unsigned int o = i / a.cols;
        unsigned int row = step[step[STEP_OUT_ROWS] + o];
        a.out[i] = a.x[row * a.cols + i % a.cols];
    }
}
