// rope_kv_write.cu: RoPE of q and k and the KV page write in one pass (rope_kv_write.wgsl).
// Grid (n_heads + 2 · n_kv_heads, tokens): blocks below n_heads rotate one q head into
// q_out; the others store one rotated K head or one V head.

#include "prelude.cuh"
#include "kv_common.cuh"
#include "rope_common.cuh"

__device__ __forceinline__ float kv_src(const KvArgs& p, unsigned int which, unsigned int t, unsigned int h,
                                        unsigned int d) {
    unsigned int off = (t * p.n_kv_heads + h) * p.head_dim;
    if (which == 0u) {
        return rope_at(p.k + off, p.step, t, d, p.rope);
    }
    return p.v[off + d];
}

#include "kv_store.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ KvArgs a) {
    __shared__ float red[32]; // (warps) partial maxima
    unsigned int t = blockIdx.y;
    if (blockIdx.x < a.n_heads) {
        // Uniform across the block: no reduction on this path.
        unsigned int off = (t * a.n_heads + blockIdx.x) * a.head_dim;
        for (unsigned int d = threadIdx.x; d < a.head_dim; d += blockDim.x) {
            a.q_out[off + d] = rope_at(a.q + off, a.step, t, d, a.rope);
        }
        return;
    }
    unsigned int j = blockIdx.x - a.n_heads;
    kv_store(a, j / a.n_kv_heads, j % a.n_kv_heads, t, red);
}
