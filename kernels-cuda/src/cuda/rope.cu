// rope.cu: out = rope(x), x (tokens, heads·head_dim), a thread per value (rope.wgsl).

#include "prelude.cuh"
#include "rope_common.cuh"

struct RopeParams {
    unsigned int width;    // heads · head_dim
    unsigned int head_dim;
    unsigned int x;   // arena index of x (tokens, width)
    unsigned int out; // arena index of the output (tokens, width)
    unsigned int table; // the RoPE geometry (STEP_ROPE_DIR entry)
};

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const RopeParams& p = *reinterpret_cast<const RopeParams*>(params);
    unsigned int i = flat_index();
    if (i < step[STEP_N_TOKENS] * p.width) {
        unsigned int t = i / p.width;
        unsigned int c = i % p.width;
        unsigned int d = c % p.head_dim;
        arena[p.out + i] = rope_at(arena, step, p.x + i - d, t, d, p.table);
    }
}
