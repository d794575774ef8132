// matmul_add.wgsl: out = residual + x · Wᵀ, the residual added in the epilogue.

fn x4(t: u32, c: u32) -> vec4<f32> {
    return x_raw4(t, c);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    let tl = tile(wg, n_wg);
    let y = row_dots(p.w, tl, ln);
    let o = out_of(tl, ln.lid);
    if (o.live) {
        arena[o.at] = arena[o.at - p.out + p.res] + y[ln.lid];
    }
}
