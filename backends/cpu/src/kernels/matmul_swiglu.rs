//! out = silu(x · Gateᵀ) · (x · Upᵀ): gate and up share the input and the epilogue.

use super::WeightMatrix;
use super::matmul::{Acts, matmuls_rows_by_tokens};
use super::swiglu::silu;

pub fn matmul_swiglu(gate: WeightMatrix<'_>, up: WeightMatrix<'_>, x: &[f32], out: &mut [f32]) {
    let acts = Acts::new(gate.dtype, x, gate.cols);
    let up_acts;
    let up_acts = if up.dtype == gate.dtype {
        &acts
    } else {
        up_acts = Acts::new(up.dtype, x, up.cols);
        &up_acts
    };
    let mut ys = matmuls_rows_by_tokens(&[(gate, &acts), (up, up_acts)]);
    let u = ys.pop().expect("up"); // (n_ff, tokens)
    let g = ys.pop().expect("gate"); // (n_ff, tokens)
    let n_tokens = g.len() / gate.rows;
    for (t, o_row) in out.chunks_exact_mut(gate.rows).enumerate().take(n_tokens) {
        for (r, o) in o_row.iter_mut().enumerate() {
            let i = r * n_tokens + t;
            *o = silu(g[i]) * u[i];
        }
    }
}
