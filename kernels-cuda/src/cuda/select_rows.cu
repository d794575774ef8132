// select_rows.cu: out (outputs, cols) = rows `output_rows` of x (tokens, cols)
// (select_rows.wgsl).

#include "prelude.cuh"

struct SelectRowsParams {
    unsigned int cols;
    unsigned int x;   // arena index of x (tokens, cols)
    unsigned int out; // arena index of the output (outputs, cols)
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const SelectRowsParams& p = *reinterpret_cast<const SelectRowsParams*>(params);
    unsigned int i = flat_index();
    if (i < step[STEP_N_OUTPUTS] * p.cols) {
        unsigned int o = i / p.cols;
        unsigned int row = step[step[STEP_OUT_ROWS] + o];
        arena[p.out + i] = arena[p.x + row * p.cols + i % p.cols];
    }
}
