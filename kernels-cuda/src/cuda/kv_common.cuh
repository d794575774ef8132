// kv_common.cuh: the page addressing of the KV kernels (kv_write, rope_kv_write,
// attention; their arguments are KvArgs), as kv_common.wgsl. Pages follow kiln_ir::kv_layout: per
// layer, K values (T, H, D), V values, then for FP8 K scales (T, H) f32 and V scales.
// The variant header defines KV_FP8 (0 or 1) and KV_VALUE_BYTES (1 or 2).

// The step-buffer index of the block table of token t's sequence in this layer's KV
// group (block tables group-major: group g's table of sequence s is entry g·n_seqs + s).
__device__ __forceinline__ unsigned int table_of(const KvArgs& p, unsigned int t) {
    const unsigned int* __restrict__ step = p.step;
    unsigned int seq = step[step[STEP_SEQ] + t];
    return step[step[STEP_TABLES] + p.kv_group * step[STEP_N_SEQS] + seq];
}

// The page of token t's sequence that holds position pos, in this layer's KV group.
__device__ __forceinline__ unsigned int page_of(const KvArgs& p, unsigned int t, unsigned int pos) {
    return p.step[table_of(p, t) + pos / p.page_size];
}

// Byte offset of a page: 64-bit, as a cache may exceed 4 GiB (32 sequences × 8k tokens of
// a Llama-3-8B shape hold 17 GB); offsets within a page are 32-bit (lower.rs checks).
__device__ __forceinline__ unsigned long long page_at(const KvArgs& p, unsigned int page) {
    return (unsigned long long)page * p.page_bytes;
}

// Byte offset of the values of (page, slot, KV head h); which: 0 = K, 1 = V.
__device__ __forceinline__ unsigned long long values_at(const KvArgs& p, unsigned int page, unsigned int slot,
                                                        unsigned int h, unsigned int which) {
    return page_at(p, page) + (p.layer_base + which * p.v_base + (slot * p.n_kv_heads + h) * p.head_dim * KV_VALUE_BYTES);
}

// Byte offset of the FP8 scale of (page, slot, KV head h).
__device__ __forceinline__ unsigned long long scale_at(const KvArgs& p, unsigned int page, unsigned int slot,
                                                       unsigned int h, unsigned int which) {
    return page_at(p, page) + (p.layer_base + (which == 1u ? p.vs_base : p.ks_base) + (slot * p.n_kv_heads + h) * 4u);
}

// The first position a query at position n - 1 attends to: n - window under a sliding
// window (the KV manager keeps the pages from there on; the ones before may be gone),
// else 0.
__device__ __forceinline__ unsigned int window_start(const KvArgs& p, unsigned int n) {
    return p.window > 0u && n > p.window ? n - p.window : 0u;
}
