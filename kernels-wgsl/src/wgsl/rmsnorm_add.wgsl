// rmsnorm_add.wgsl: out = residual + h / sqrt(mean(h²) + eps) · weight (a post-norm and
// the residual add), one workgroup per row.

struct Params {
    rows_sel: u32,
    d: u32,
    x: u32,    // arena index of h (rows, d)
    out: u32,  // arena index of the output (rows, d)
    norm: u32, // word index of the weight in `weights`
    eps: f32,
    res: u32,  // arena index of the residual (rows, d)
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>, ln: Lanes) {
    let r = wg.y * n_wg.x + wg.x;
    let live = r < step[p.rows_sel];
    var sq = 0.0;
    if (live) {
        for (var c = ln.lid; c < p.d; c += WG) {
            let v = arena[p.x + r * p.d + c];
            sq += v * v;
        }
    }
    let scale = 1.0 / sqrt(wg_sum(sq, ln) / f32(p.d) + p.eps);
    if (live) {
        for (var c = ln.lid; c < p.d; c += WG) {
            let i = r * p.d + c;
            arena[p.out + i] = arena[p.res + i] + arena[p.x + i] * scale * vector_at(p.norm + c);
        }
    }
}
