//! RMSNorm, gate/up matmuls and SwiGLU in one op.

use super::WeightMatrix;
use super::matmul_swiglu::matmul_gated;
use super::rmsnorm::rmsnorm;
use super::swiglu::silu;

pub fn rmsnorm_matmul_swiglu(
    x: &[f32],
    norm: &[f32],
    eps: f32,
    gate: WeightMatrix<'_>,
    up: WeightMatrix<'_>,
    out: &mut [f32],
) {
    rmsnorm_matmul_gated(x, (norm, eps), gate, up, out, silu);
}

/// RMSNorm (weight, eps), then the gated unit with activation `act`.
pub(super) fn rmsnorm_matmul_gated(
    x: &[f32],
    (norm, eps): (&[f32], f32),
    gate: WeightMatrix<'_>,
    up: WeightMatrix<'_>,
    out: &mut [f32],
    act: fn(f32) -> f32,
) {
    let mut normed = vec![0.0f32; x.len()]; // (tokens, d)
    rmsnorm(x, norm, eps, &mut normed);
    matmul_gated(gate, up, &normed, out, act);
}
