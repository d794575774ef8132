//! CPU kernels, one fused op per file (the same stems as kernels-cuda and kernels-wgsl).
//! Each takes plain slices; shapes were checked by the IR verifier and the step check.

pub mod add;
pub mod add_bias;
pub mod attention;
pub mod embed;
pub mod geglu;
pub mod head_rmsnorm;
pub mod kv_write;
pub mod matmul;
pub mod matmul_add;
pub mod matmul_geglu;
pub mod matmul_swiglu;
pub mod qk_norm_rope_kv_write;
pub mod rmsnorm;
pub mod rmsnorm_add;
pub mod rmsnorm_matmul;
pub mod rmsnorm_matmul_geglu;
pub mod rmsnorm_matmul_swiglu;
pub mod rope;
pub mod rope_kv_write;
pub mod scale;
pub mod select_rows;
pub mod swiglu;

use kiln_ir::DType;

/// A weight matrix as stored: `rows` rows of `cols` values in `dtype`'s block layout.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    pub fn row_bytes(&self) -> usize {
        self.bytes.len() / self.rows
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.bytes[r * rb..(r + 1) * rb]
    }
}
