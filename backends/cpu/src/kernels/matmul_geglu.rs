//! out = gelu_tanh(x · Gateᵀ) · (x · Upᵀ): gate and up share the input and the epilogue.

use super::WeightMatrix;
use super::geglu::gelu_tanh;
use super::matmul_swiglu::matmul_gated;

pub fn matmul_geglu(gate: WeightMatrix<'_>, up: WeightMatrix<'_>, x: &[f32], out: &mut [f32]) {
    matmul_gated(gate, up, x, out, gelu_tanh);
}
