//! out = x / sqrt(mean(x²) + eps) · weight, per row. x, out: (rows, len(weight)).

pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let sum_sq: f32 = kiln_ir::quant::dot_f32(xr, xr);
        let scale = 1.0 / (sum_sq / d as f32 + eps).sqrt();
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(weight) {
            *o = xv * scale * wv;
        }
    }
}
