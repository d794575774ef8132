// head_rmsnorm.wgsl: QK-norm: every head of head_dim values of x (rows, heads·head_dim)
// normalised like RMSNorm with one weight (head_dim) shared by the heads. One workgroup
// per (row, head): grid (heads, rows).

struct Params {
    rows_sel: u32,
    head_dim: u32,
    x: u32,     // arena index of the input (rows, heads·head_dim)
    out: u32,   // arena index of the output (rows, heads·head_dim)
    norm: u32,  // word index of the weight (head_dim) in `weights`
    eps: f32,
    heads: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ln: Lanes) {
    let live = wg.y < step[p.rows_sel];
    let base = (wg.y * p.heads + wg.x) * p.head_dim;
    var sq = 0.0;
    if (live) {
        for (var c = ln.lid; c < p.head_dim; c += WG) {
            let v = arena[p.x + base + c];
            sq += v * v;
        }
    }
    let scale = 1.0 / sqrt(wg_sum(sq, ln) / f32(p.head_dim) + p.eps);
    if (live) {
        for (var c = ln.lid; c < p.head_dim; c += WG) {
            arena[p.out + base + c] = arena[p.x + base + c] * scale * vector_at(p.norm + c);
        }
    }
}
