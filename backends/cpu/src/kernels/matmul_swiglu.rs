//! out = silu(x · Gateᵀ) · (x · Upᵀ): gate and up share the input and the epilogue.

use super::WeightMatrix;
use super::matmul::{self, Acts, matmuls_with};
use super::swiglu::silu;
use crate::pool;

pub fn matmul_swiglu(gate: WeightMatrix<'_>, up: WeightMatrix<'_>, x: &[f32], out: &mut [f32]) {
    matmul_gated(gate, up, x, out, silu);
}

/// out = act(x · Gateᵀ) · (x · Upᵀ), the gated units (SwiGLU, GeGLU) of every FFN.
pub(super) fn matmul_gated(
    gate: WeightMatrix<'_>,
    up: WeightMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    act: fn(f32) -> f32,
) {
    let acts = Acts::new(gate.dtype, x, gate.cols);
    let up_acts;
    let up_acts = if matmul::same_acts(up.dtype, gate.dtype) {
        &acts
    } else {
        up_acts = Acts::new(up.dtype, x, up.cols);
        &up_acts
    };
    let n_tokens = x.len() / gate.cols;
    let n_ff = gate.rows;
    let g = &mut out[..n_tokens * n_ff]; // (tokens, n_ff) the gate
    let mut u = vec![0.0f32; n_tokens * n_ff]; // (tokens, n_ff) the up projection
    matmuls_with(
        &[(gate, &acts), (up, up_acts)],
        &mut [g, &mut u],
        |_, _, _, v| v,
    );
    // out = act(gate) · up, a token row per task.
    let mut rows: Vec<(&mut [f32], &[f32])> = out
        .chunks_exact_mut(n_ff)
        .zip(u.chunks_exact(n_ff))
        .collect();
    pool::for_each_mut(&mut rows, |_, (o_row, u_row)| {
        for (o, &u) in o_row.iter_mut().zip(*u_row) {
            *o = act(*o) * u;
        }
    });
}
