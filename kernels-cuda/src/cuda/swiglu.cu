// swiglu.cu: out = silu(gate) · up, elementwise over (rows, cols) (swiglu.wgsl): gate
// is `a`, up is `b`.

#include "prelude.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ BinaryArgs a) {
    unsigned int i = flat_index();
    if (i < a.step[a.rows_sel] * a.cols) {
        a.out[i] = silu(a.a[i]) * a.b[i];
    }
}
