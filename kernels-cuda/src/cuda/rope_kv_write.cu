// rope_kv_write.cu: RoPE of q and k and the KV page write in one pass (rope_kv_write.wgsl).
// Grid (n_heads + 2 · n_kv_heads, tokens): blocks below n_heads rotate one q head into
// q_out; the others store one rotated K head or one V head.

#include "prelude.cuh"
#include "kv_common.cuh"
#include "rope_common.cuh"

__device__ __forceinline__ float kv_src(const KvParams& p, const float* arena, const unsigned int* __restrict__ step,
                                        unsigned int which, unsigned int t, unsigned int h, unsigned int d) {
    unsigned int off = (t * p.n_kv_heads + h) * p.head_dim;
    if (which == 0u) {
        return rope_at(arena, step, p.k + off, t, d, p.rope);
    }
    return arena[p.v + off + d];
}

#include "kv_store.cuh"

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const KvParams& p = *reinterpret_cast<const KvParams*>(params);
    __shared__ float red[32]; // (warps) partial maxima
    unsigned int t = blockIdx.y;
    if (blockIdx.x < p.n_heads) {
        // Uniform across the block: no reduction on this path.
        unsigned int off = (t * p.n_heads + blockIdx.x) * p.head_dim;
        for (unsigned int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
            arena[p.q_out + off + d] = rope_at(arena, step, p.q + off, t, d, p.rope);
        }
        return;
    }
    unsigned int j = blockIdx.x - p.n_heads;
    kv_store(p, arena, kv, step, j / p.n_kv_heads, j % p.n_kv_heads, t, red);
}
