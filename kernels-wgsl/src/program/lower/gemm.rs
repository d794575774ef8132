//! The tiled GEMM (gemm_core.wgsl) beside a matmul-family dispatch: which steps take it,
//! and its dispatch. The matrix-vector tiles read every weight once per 8 rows of a step
//! and every input once per weight row; the GEMM reads a weight once per 64 rows and an
//! input once per 64 weight rows. From 16 rows on, the matrix-vector kernel would read
//! the weights twice or more, and the GEMM's partial tile costs no more than its
//! threads past the step's rows, which skip their sums. A launch of the int8 path's
//! packed types (matvec_q8.rs) keeps that path's steps of up to 32 rows: the GEMM takes
//! the larger ones (`with_matvec_q8` raises its `min_rows`, and its f32 matvec runs
//! none).
//!
//! On devices with cooperative matrices the f16 variants of these kernels multiply their
//! tiles as such (gemm_tiles_coop.wgsl; `Capabilities::gemm_coop`, chosen in
//! `Builder::pipeline`): the same dispatches, params and grids.

use kiln_ir::DType;
use kiln_ir::graph::Rows;

use super::Builder;
use crate::program::{Dispatch, Grid};

/// Steps of at least this many rows take the GEMM; smaller ones the matrix-vector tiles.
pub const GEMM_MIN_ROWS: u32 = 16;
/// Rows (tokens) of a GEMM tile (gemm_core.wgsl: GEMM_BT).
pub const GEMM_ROWS: u32 = 64;
/// Weight rows of a GEMM tile (gemm_core.wgsl: GEMM_BS): its output columns, or half of
/// them when it pairs gate and up.
const GEMM_SLOTS: u32 = 64;

/// The GEMM twin of a matmul-family kernel, and whether it pairs gate and up rows.
fn twin(op: &str) -> Option<(&'static str, bool)> {
    Some(match op {
        "matmul" => ("gemm", false),
        "matmul_add" => ("gemm_add", false),
        "matmul_swiglu" => ("gemm_swiglu", true),
        "matmul_geglu" => ("gemm_geglu", true),
        "rmsnorm_matmul" => ("rmsnorm_gemm", false),
        "rmsnorm_matmul_swiglu" => ("rmsnorm_gemm_swiglu", true),
        "rmsnorm_matmul_geglu" => ("rmsnorm_gemm_geglu", true),
        _ => return None,
    })
}

impl Builder<'_> {
    /// A matmul-family dispatch of `weight`, with its GEMM twin when the plan has steps
    /// of [`GEMM_MIN_ROWS`] rows or more: the same params block and weights window, the
    /// matrix-vector tiles left the smaller steps.
    pub(super) fn with_gemm(&mut self, mut matvec: Dispatch, weight: DType) -> Vec<Dispatch> {
        let Grid::Matmul { rows, n, .. } = matvec.grid else {
            return vec![matvec];
        };
        let op = self.pipelines[matvec.pipeline].variant.op;
        let Some((gemm, gated)) = twin(op) else {
            return vec![matvec];
        };
        let largest = match rows {
            Rows::Tokens => self.plan.max_tokens,
            Rows::Outputs => self.plan.max_outputs,
        };
        if largest < GEMM_MIN_ROWS as usize {
            return vec![matvec];
        }
        matvec.grid = Grid::Matmul {
            rows,
            n,
            max_rows: GEMM_MIN_ROWS - 1,
        };
        let cols = if gated { GEMM_SLOTS / 2 } else { GEMM_SLOTS };
        let tiled = Dispatch {
            pipeline: self.pipeline(gemm, Some(weight)),
            grid: Grid::Gemm {
                rows,
                tiles: n.div_ceil(cols),
                min_rows: GEMM_MIN_ROWS,
            },
            ..matvec.clone()
        };
        vec![matvec, tiled]
    }
}
