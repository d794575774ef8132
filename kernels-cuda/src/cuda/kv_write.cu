// kv_write.cu: store the step's k and v rows in their KV page slots (kv_write.wgsl).
// Grid (2 · n_kv_heads, tokens): K heads, then V heads; blocks of WG threads.

#include "prelude.cuh"
#include "kv_common.cuh"

__device__ __forceinline__ float kv_src(const KvParams& p, const float* arena, const unsigned int* __restrict__ step,
                                        unsigned int which, unsigned int t, unsigned int h, unsigned int d) {
    (void)step;
    unsigned int row = (which == 1u ? p.v : p.k) + (t * p.n_kv_heads + h) * p.head_dim;
    return arena[row + d];
}

#include "kv_store.cuh"

KILN_KERNEL {
    KILN_UNUSED_ARGS
    const KvParams& p = *reinterpret_cast<const KvParams*>(params);
    __shared__ float red[32]; // (warps) partial maxima
    kv_store(p, arena, kv, step, blockIdx.x / p.n_kv_heads, blockIdx.x % p.n_kv_heads, blockIdx.y, red);
}
