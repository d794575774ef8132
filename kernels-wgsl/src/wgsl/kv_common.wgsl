// kv_common.wgsl: the parameters and page addressing of the KV kernels (kv_write,
// rope_kv_write, attention). Pages follow kiln_ir::kv_layout: per layer, K values
// (T, H, D), V values, then for FP8 K scales (T, H) f32 and V scales. The variant
// header defines KV_FP8 and KV_VALUE_BYTES.

struct Params {
    q: u32,          // arena index of q (tokens, n_heads · head_dim)
    q_out: u32,      // arena index of the rotated q / the attention output
    k: u32,          // arena index of k (tokens, n_kv_heads · head_dim)
    v: u32,          // arena index of v
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    page_size: u32,  // tokens per page
    page_bytes: u32,
    layer_base: u32, // byte offset of this layer within a page
    v_base: u32,     // byte offset of the V values within a layer
    ks_base: u32,    // byte offset of the K scales within a layer
    vs_base: u32,    // byte offset of the V scales within a layer
    scale: f32,      // softmax scale (1 / sqrt(head_dim) unless the model sets another)
    kv_group: u32,   // the KV group whose block tables hold this layer's pages
    window: u32,     // sliding window: attend to positions > pos - window; 0: none
    rope: u32,       // the RoPE geometry of rope_kv_write (STEP_ROPE_DIR entry)
    q_norm: u32,     // word index of the QK-norm weights (head_dim each) in `weights`
    k_norm: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

// The page of token t's sequence that holds position pos, in this layer's KV group
// (block tables group-major: group g's table of sequence s is entry g·n_seqs + s).
fn page_of(t: u32, pos: u32) -> u32 {
    let seq = step[step[STEP_SEQ] + t];
    let table = step[step[STEP_TABLES] + p.kv_group * step[STEP_N_SEQS] + seq];
    return step[table + pos / p.page_size];
}

// Byte offset of the values of (page, slot, KV head h); which: 0 = K, 1 = V.
fn values_at(page: u32, slot: u32, h: u32, which: u32) -> u32 {
    return page * p.page_bytes + p.layer_base + which * p.v_base + (slot * p.n_kv_heads + h) * p.head_dim * KV_VALUE_BYTES;
}

// Byte offset of the FP8 scale of (page, slot, KV head h).
fn scale_at(page: u32, slot: u32, h: u32, which: u32) -> u32 {
    return page * p.page_bytes + p.layer_base + select(p.ks_base, p.vs_base, which == 1u) + (slot * p.n_kv_heads + h) * 4u;
}
