// add.cu: out = a + b, elementwise over (rows, cols) (add.wgsl). A thread per value.

#include "prelude.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ BinaryArgs a) {
    unsigned int i = flat_index();
    if (i < a.step[a.rows_sel] * a.cols) {
        a.out[i] = a.a[i] + a.b[i];
    }
}
