//! out = residual + x · Wᵀ: the residual add in the matmul's epilogue.

use super::WeightMatrix;
use super::matmul::{Acts, matmul_with};

pub fn matmul_add(w: WeightMatrix<'_>, x: &[f32], residual: &[f32], out: &mut [f32]) {
    let acts = Acts::new(w.dtype, x, w.cols);
    let n = w.rows;
    matmul_with(w, &acts, out, |t, r, v| residual[t * n + r] + v);
}
