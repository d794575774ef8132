// scale.cu: out = x · factor, elementwise over (rows, cols) (Gemma 3's embedding scale;
// scale.wgsl): x is `a`. A thread per value.

#include "prelude.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ BinaryArgs a) {
    unsigned int i = flat_index();
    if (i < a.step[a.rows_sel] * a.cols) {
        a.out[i] = a.a[i] * a.factor;
    }
}
