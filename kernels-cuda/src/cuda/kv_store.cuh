// kv_store.cuh: one token's K or V of one KV head into its page slot (kv_store.wgsl): FP8
// E4M3 with scale = max|x| / 448 (so the largest value uses the whole range), or F16. The
// op file defines kv_src(p, which, t, h, d), the value to store. A block of
// WG threads per (head, token); every thread must call it.

__device__ __forceinline__ void kv_store(const KvArgs& p, unsigned int which, unsigned int h, unsigned int t,
                                         float* red) {
    const unsigned int* __restrict__ step = p.step;
    unsigned char* kv = p.kv;
    unsigned int hd = p.head_dim;
    float m = 0.0f;
    for (unsigned int d = threadIdx.x; d < hd; d += blockDim.x) {
        m = fmaxf(m, fabsf(kv_src(p, which, t, h, d)));
    }
    float amax = block_max(m, red);
    unsigned int pos = step[step[STEP_POSITIONS] + t];
    unsigned int page = page_of(p, t, pos);
    unsigned int slot = pos % p.page_size;
    unsigned int* words = reinterpret_cast<unsigned int*>(kv + values_at(p, page, slot, h, which));
#if KV_FP8
    float scale = amax > 0.0f ? amax / FP8_MAX : 1.0f;
    for (unsigned int w = threadIdx.x; w < hd / 4u; w += blockDim.x) {
        float v0 = kv_src(p, which, t, h, 4u * w) / scale;
        float v1 = kv_src(p, which, t, h, 4u * w + 1u) / scale;
        float v2 = kv_src(p, which, t, h, 4u * w + 2u) / scale;
        float v3 = kv_src(p, which, t, h, 4u * w + 3u) / scale;
        words[w] = fp8x2_encode(v0, v1) | (fp8x2_encode(v2, v3) << 16);
    }
    if (threadIdx.x == 0u) {
        *reinterpret_cast<float*>(kv + scale_at(p, page, slot, h, which)) = scale;
    }
#else
    (void)amax;
    for (unsigned int w = threadIdx.x; w < hd / 2u; w += blockDim.x) {
        words[w] = pack_f16x2(kv_src(p, which, t, h, 2u * w), kv_src(p, which, t, h, 2u * w + 1u));
    }
#endif
}
