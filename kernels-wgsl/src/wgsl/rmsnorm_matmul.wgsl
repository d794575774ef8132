// rmsnorm_matmul.wgsl: RMSNorm folded into the matmul it feeds: each workgroup computes
// the 1/rms of its tokens, and the normed input is never stored.

fn x4(t: u32, c: u32) -> vec4<f32> {
    return x_normed4(t, c);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    let tl = tile(wg, n_wg);
    rms_tile(tl, ln);
    let y = row_dots(p.w, tl, ln);
    let o = out_of(tl, ln.lid);
    if (o.live) {
        arena[o.at] = y[ln.lid];
    }
}
