//! A sublayer's output normalised and added to the residual (Gemma's post-norms):
//! out = residual + rmsnorm(h) · weight. h, residual, out: (rows, len(weight)).

use super::rmsnorm::rmsnorm;

pub fn rmsnorm_add(h: &[f32], residual: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rmsnorm(h, weight, eps, out);
    for (o, &r) in out.iter_mut().zip(residual) {
        *o += r;
    }
}
