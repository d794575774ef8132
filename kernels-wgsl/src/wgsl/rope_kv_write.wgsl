// rope_kv_write.wgsl: RoPE of q and k and the KV page write in one pass. Grid
// (n_heads + 2 · n_kv_heads, tokens): workgroups below n_heads rotate one q head into
// q_out; the others store one rotated K head or one V head.

fn kv_src(which: u32, t: u32, h: u32, d: u32) -> f32 {
    let off = (t * p.n_kv_heads + h) * p.head_dim;
    if (which == 0u) {
        return rope_at(p.k + off, t, d, p.rope);
    }
    return arena[p.v + off + d];
}
fn rope_src(head: u32, d: u32) -> f32 {
    return arena[head + d];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ln: Lanes) {
    let t = wg.y;
    if (wg.x < p.n_heads) {
        let off = (t * p.n_heads + wg.x) * p.head_dim;
        for (var d = ln.lid; d < p.head_dim; d += WG) {
            arena[p.q_out + off + d] = rope_at(p.q + off, t, d, p.rope);
        }
        return;
    }
    let j = wg.x - p.n_heads;
    kv_store(j / p.n_kv_heads, j % p.n_kv_heads, t, ln);
}
