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
//! Not here yet (issue 17): cooperative matrices. naga 30 parses them in WGSL behind
//! `enable wgpu_cooperative_matrix;` (`coop_mat8x8` / `coop_mat16x16<f16 | f32, A | B |
//! C>`, `coopLoad[T]`, `coopStore[T]`, `coopMultiplyAdd`; validation needs
//! `Capabilities::COOPERATIVE_MATRIX`) and writes SPV_KHR_cooperative_matrix (subgroup
//! scope, the Vulkan memory model). The path is a `gemm_coop` twin of `gemm_core` (the
//! same dequantized tiles in workgroup memory, as f16: gemm_tiles_f16.wgsl's, each token
//! and weight unit of 8 columns scaled by a power of two so they cannot overflow, though
//! a 16-deep multiply-add needs one weight scale per 16 columns; 16×16×16 multiply-adds into f32
//! accumulators, what NVIDIA and AMD report), chosen by a `Capabilities` flag that the
//! Vulkan backend sets from vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR (that
//! configuration at subgroup scope, VK_KHR_cooperative_matrix and vulkanMemoryModel
//! enabled), this GEMM the fallback. wgpu 30's EXPERIMENTAL_COOPERATIVE_MATRIX checks
//! only 8×8 f32 on Vulkan, which NVIDIA and AMD do not offer. Lavapipe here (Mesa 22.3)
//! has no VK_KHR_cooperative_matrix, so CI could not run such a kernel.

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
