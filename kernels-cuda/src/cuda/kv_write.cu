// kv_write.cu: store the step's k and v rows in their KV page slots (kv_write.wgsl).
// Grid (2 · n_kv_heads, tokens): K heads, then V heads; blocks of WG threads.

#include "prelude.cuh"
#include "kv_common.cuh"

__device__ __forceinline__ float kv_src(const KvArgs& p, unsigned int which, unsigned int t, unsigned int h,
                                        unsigned int d) {
    const float* row = (which == 1u ? p.v : p.k) + (t * p.n_kv_heads + h) * p.head_dim;
    return row[d];
}

#include "kv_store.cuh"

extern "C" __global__ void KILN_MAIN(const __grid_constant__ KvArgs a) {
    __shared__ float red[32]; // (warps) partial maxima
    kv_store(a, blockIdx.x / a.n_kv_heads, blockIdx.x % a.n_kv_heads, blockIdx.y, red);
}
