// qk_norm_rope_kv_write.wgsl: QK-norm (each head of q and of k RMS-normalised with its
// own weight of head_dim), RoPE of both and the KV page write in one pass. Grid
// (n_heads + 2 · n_kv_heads, tokens): workgroups below n_heads norm and rotate one q
// head into q_out; the others store one normed, rotated K head or one V head.

// The norm of the head being read: its weight (word index) and 1/rms.
var<private> norm_at: u32;
var<private> norm_inv: f32;

fn rope_src(head: u32, d: u32) -> f32 {
    return arena[head + d] * norm_inv * vector_at(norm_at + d);
}

// 1 / sqrt(mean(x²) + eps) over the head_dim values at arena index `head`.
fn head_inv_rms(head: u32, ln: Lanes) -> f32 {
    var sq = 0.0;
    for (var d = ln.lid; d < p.head_dim; d += WG) {
        let v = arena[head + d];
        sq += v * v;
    }
    return 1.0 / sqrt(wg_sum(sq, ln) / f32(p.head_dim) + p.eps);
}

fn kv_src(which: u32, t: u32, h: u32, d: u32) -> f32 {
    let off = (t * p.n_kv_heads + h) * p.head_dim;
    if (which == 0u) {
        return rope_at(p.k + off, t, d, p.rope);
    }
    return arena[p.v + off + d];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ln: Lanes) {
    let t = wg.y;
    if (wg.x < p.n_heads) {
        let off = (t * p.n_heads + wg.x) * p.head_dim;
        norm_at = p.q_norm;
        norm_inv = head_inv_rms(p.q + off, ln);
        for (var d = ln.lid; d < p.head_dim; d += WG) {
            arena[p.q_out + off + d] = rope_at(p.q + off, t, d, p.rope);
        }
        return;
    }
    let j = wg.x - p.n_heads;
    let which = j / p.n_kv_heads;
    let h = j % p.n_kv_heads;
    if (which == 0u) {
        norm_at = p.k_norm;
        norm_inv = head_inv_rms(p.k + (t * p.n_kv_heads + h) * p.head_dim, ln);
    }
    kv_store(which, h, t, ln);
}
