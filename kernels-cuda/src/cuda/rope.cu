// rope.cu: out = rope(x), x (tokens, heads·head_dim), a thread per value (rope.wgsl).

#include "prelude.cuh"
#include "rope_common.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ RopeArgs a) {
    const unsigned int* __restrict__ step = a.step;
    unsigned int i = flat_index();
    if (i < step[STEP_N_TOKENS] * a.width) {
        unsigned int t = i / a.width;
        unsigned int c = i % a.width;
        unsigned int d = c % a.head_dim;
        a.out[i] = rope_at(a.x + (i - d), step, t, d, a.table);
    }
}
