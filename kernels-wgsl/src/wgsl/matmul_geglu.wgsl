// matmul_geglu.wgsl: out = gelu(x · Gateᵀ) · (x · Upᵀ); gate and up share the input
// and the epilogue.

fn x4(t: u32, c: u32) -> vec4<f32> {
    return x_raw4(t, c);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    let tl = tile(wg, n_wg);
    let g = row_dots(p.w, tl, ln);
    let u = row_dots(p.w2, tl, ln);
    let o = out_of(tl, ln.lid);
    if (o.live) {
        arena[o.at] = gelu_f16(g[ln.lid]) * u[ln.lid];
    }
}
