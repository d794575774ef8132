// kv_common.cuh: the parameters and page addressing of the KV kernels (kv_write,
// rope_kv_write, attention), as kv_common.wgsl. Pages follow kiln_ir::kv_layout: per
// layer, K values (T, H, D), V values, then for FP8 K scales (T, H) f32 and V scales.
// The variant header defines KV_FP8 (0 or 1) and KV_VALUE_BYTES (1 or 2).

struct KvParams {
    unsigned int q;          // arena index of q (tokens, n_heads · head_dim)
    unsigned int q_out;      // arena index of the rotated q / the attention output
    unsigned int k;          // arena index of k (tokens, n_kv_heads · head_dim)
    unsigned int v;          // arena index of v
    unsigned int n_heads;
    unsigned int n_kv_heads;
    unsigned int head_dim;
    unsigned int page_size;  // tokens per page
    unsigned int page_bytes;
    unsigned int layer_base; // byte offset of this layer within a page
    unsigned int v_base;     // byte offset of the V values within a layer
    unsigned int ks_base;    // byte offset of the K scales within a layer
    unsigned int vs_base;    // byte offset of the V scales within a layer
    float scale;             // softmax scale (1 / sqrt(head_dim) unless the model sets another)
    unsigned int kv_group;   // the KV group whose block tables hold this layer's pages
    unsigned int window;     // sliding window (0: none); the CUDA kernels run none yet
    unsigned int rope;       // the RoPE geometry of rope_kv_write (STEP_ROPE_DIR entry)
    unsigned int q_norm;     // word index of the QK-norm weights (no CUDA kernel yet)
    unsigned int k_norm;
    float eps;
};

// The page of token t's sequence that holds position pos, in this layer's KV group
// (block tables group-major: group g's table of sequence s is entry g·n_seqs + s).
__device__ __forceinline__ unsigned int page_of(const KvParams& p, const unsigned int* __restrict__ step,
                                                unsigned int t, unsigned int pos) {
    unsigned int seq = step[step[STEP_SEQ] + t];
    unsigned int table = step[step[STEP_TABLES] + p.kv_group * step[STEP_N_SEQS] + seq];
    return step[table + pos / p.page_size];
}

// Byte offset of the values of (page, slot, KV head h); which: 0 = K, 1 = V.
__device__ __forceinline__ unsigned int values_at(const KvParams& p, unsigned int page, unsigned int slot,
                                                  unsigned int h, unsigned int which) {
    return page * p.page_bytes + p.layer_base + which * p.v_base + (slot * p.n_kv_heads + h) * p.head_dim * KV_VALUE_BYTES;
}

// Byte offset of the FP8 scale of (page, slot, KV head h).
__device__ __forceinline__ unsigned int scale_at(const KvParams& p, unsigned int page, unsigned int slot,
                                                 unsigned int h, unsigned int which) {
    return page * p.page_bytes + p.layer_base + (which == 1u ? p.vs_base : p.ks_base) + (slot * p.n_kv_heads + h) * 4u;
}
