//! RMSNorm folded into the matmul(s) it feeds: the normed rows go straight into the
//! activation quantizer and are never stored in the arena.

use super::WeightMatrix;
use super::matmul::matmul_multi;
use super::rmsnorm::rmsnorm;

pub fn rmsnorm_matmul(
    x: &[f32],
    norm: &[f32],
    eps: f32,
    weights: &[WeightMatrix<'_>],
    outs: &mut [&mut [f32]],
) {
    let mut normed = vec![0.0f32; x.len()]; // (tokens, d)
    rmsnorm(x, norm, eps, &mut normed);
    matmul_multi(weights, &normed, outs);
}
