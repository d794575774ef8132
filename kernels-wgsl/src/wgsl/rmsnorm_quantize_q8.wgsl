// rmsnorm_quantize_q8.wgsl: RMSNorm folded into the quantization of an RmsNormMatMul*
// launch's input: x · (1 / rms(x)) · norm, quantized (quantize_core.wgsl); the normed
// rows are never stored as f32.

fn quant_src(t: u32, c: u32, scale: f32) -> f32 {
    return x_at(t, c) * scale * vector_at(p.norm + c);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, ln: Lanes) {
    let t = wg.x;
    if (t >= step[p.rows_sel]) {
        return; // the same for the whole workgroup
    }
    var sq = 0.0;
    for (var c = ln.lid; c < p.k; c += WG) {
        let v = x_at(t, c);
        sq += v * v;
    }
    let total = wg_sum(sq, ln);
    quantize_row(t, ln.lid, 1.0 / sqrt(total / f32(p.k) + p.eps));
}
