// add.cu: out = a + b, elementwise over (rows, cols) (add.wgsl). A thread per value.

#include "prelude.cuh"

struct AddParams {
    unsigned int rows_sel; // STEP_N_TOKENS or STEP_N_OUTPUTS
    unsigned int cols;
    unsigned int a;   // arena index of a (rows, cols)
    unsigned int b;   // arena index of b (rows, cols)
    unsigned int out; // arena index of the output (rows, cols)
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const AddParams& p = *reinterpret_cast<const AddParams*>(params);
    unsigned int i = flat_index();
    if (i < step[p.rows_sel] * p.cols) {
        arena[p.out + i] = arena[p.a + i] + arena[p.b + i];
    }
}
