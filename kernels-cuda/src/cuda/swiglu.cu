// swiglu.cu: out = silu(gate) · up, elementwise over (rows, cols) (swiglu.wgsl).

#include "prelude.cuh"

struct SwiGluParams {
    unsigned int rows_sel; // STEP_N_TOKENS or STEP_N_OUTPUTS
    unsigned int cols;
    unsigned int gate; // arena index of gate (rows, cols)
    unsigned int up;   // arena index of up (rows, cols)
    unsigned int out;  // arena index of the output (rows, cols)
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const SwiGluParams& p = *reinterpret_cast<const SwiGluParams*>(params);
    unsigned int i = flat_index();
    if (i < step[p.rows_sel] * p.cols) {
        arena[p.out + i] = silu(arena[p.gate + i]) * arena[p.up + i];
    }
}
