//! out = residual + x · Wᵀ: the residual add in the matmul's epilogue.

use super::WeightMatrix;
use super::matmul::{Acts, matmuls_with};

pub fn matmul_add(w: WeightMatrix<'_>, x: &[f32], residual: &[f32], out: &mut [f32]) {
    let acts = Acts::new(w.dtype, x, w.cols);
    let n = w.rows;
    matmuls_with(&[(w, &acts)], &mut [out], |_, t, r, v| {
        residual[t * n + r] + v
    });
}
