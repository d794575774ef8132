// add_bias.cu: out = x + bias on every row (Qwen 2's q/k/v biases), elementwise over
// (rows, cols) (add_bias.wgsl): x is `a`, the bias (cols) `b`. A thread per value.

#include "prelude.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ BinaryArgs a) {
    unsigned int i = flat_index();
    if (i < a.step[a.rows_sel] * a.cols) {
        a.out[i] = a.a[i] + a.b[i % a.cols];
    }
}
