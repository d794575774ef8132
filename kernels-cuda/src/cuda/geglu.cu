// geglu.cu: out = gelu(gate) · up, elementwise over (rows, cols) (Gemma 3's FFN;
// geglu.wgsl): gate is `a`, up is `b`. A thread per value.

#include "prelude.cuh"
#include "gelu.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ BinaryArgs a) {
    unsigned int i = flat_index();
    if (i < a.step[a.rows_sel] * a.cols) {
        a.out[i] = gelu_f16(a.a[i]) * a.b[i];
    }
}
