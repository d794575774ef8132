//! RMSNorm, gate/up matmuls and GeGLU in one op.

use super::WeightMatrix;
use super::geglu::gelu_tanh;
use super::rmsnorm_matmul_swiglu::rmsnorm_matmul_gated;

pub fn rmsnorm_matmul_geglu(
    x: &[f32],
    norm: &[f32],
    eps: f32,
    gate: WeightMatrix<'_>,
    up: WeightMatrix<'_>,
    out: &mut [f32],
) {
    rmsnorm_matmul_gated(x, (norm, eps), gate, up, out, gelu_tanh);
}
