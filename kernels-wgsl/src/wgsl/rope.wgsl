// rope.wgsl: out = rope(x), x (tokens, heads·head_dim), one thread per value.

struct Params {
    width: u32,    // heads · head_dim
    head_dim: u32,
    x: u32,
    out: u32,
    table: u32,    // the RoPE geometry (STEP_ROPE_DIR entry)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;
fn rope_src(head: u32, d: u32) -> f32 {
    return arena[head + d];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat_index(wg, n_wg, lid);
    if (i < step[STEP_N_TOKENS] * p.width) {
        let t = i / p.width;
        let c = i % p.width;
        let d = c % p.head_dim;
        arena[p.out + i] = rope_at(p.x + i - d, t, d, p.table);
    }
}
