// kv_write.wgsl: store the step's k and v rows in their KV page slots. Grid
// (2 · n_kv_heads, tokens): K heads, then V heads.

fn kv_src(which: u32, t: u32, h: u32, d: u32) -> f32 {
    let row = select(p.k, p.v, which == 1u) + (t * p.n_kv_heads + h) * p.head_dim;
    return arena[row + d];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ln: Lanes) {
    kv_store(wg.x / p.n_kv_heads, wg.x % p.n_kv_heads, wg.y, ln);
}
