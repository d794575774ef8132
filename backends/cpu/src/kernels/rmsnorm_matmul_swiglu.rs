//! RMSNorm, gate/up matmuls and SwiGLU in one op.

use super::WeightMatrix;
use super::matmul_swiglu::matmul_swiglu;
use super::rmsnorm::rmsnorm;

pub fn rmsnorm_matmul_swiglu(
    x: &[f32],
    norm: &[f32],
    eps: f32,
    gate: WeightMatrix<'_>,
    up: WeightMatrix<'_>,
    out: &mut [f32],
) {
    let mut normed = vec![0.0f32; x.len()]; // (tokens, d)
    rmsnorm(x, norm, eps, &mut normed);
    matmul_swiglu(gate, up, &normed, out);
}
