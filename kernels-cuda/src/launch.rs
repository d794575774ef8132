//! The launch geometry of each dispatch: which entry, how many blocks of how many
//! threads, how much dynamic shared memory. The Program's [`Grid`] says what a dispatch
//! covers; the CUDA kernels choose their own blocks for the matmuls (a warp per output
//! row, or tensor-core tiles) and mirror the WGSL workgroups for everything else.

use kiln_kernels_wgsl::Grid;
use kiln_kernels_wgsl::program::Count;

use kiln_kernels_wgsl::Variant;

use crate::sources::{ENTRY, MMA_ENTRY, has_tensor_cores, is_matmul};

/// Threads of a block that mirrors a WGSL workgroup (prelude.cuh: WG).
pub const WG: u32 = 64;
/// Tokens of a matrix-vector tile (prelude.cuh: TILE_T).
pub const TILE_T: u32 = 8;
/// Output rows of a matrix-vector block: one per warp (matmul_core.cuh: MV_WARPS).
pub const MV_ROWS: u32 = 4;
/// Warp width of every NVIDIA GPU (the backend refuses a device that says otherwise).
pub const WARP: u32 = 32;
/// Tokens × output columns of a tensor-core block tile (matmul_mma.cu: MMA_BT, MMA_BN).
pub const MMA_TOKENS: u32 = 64;
pub const MMA_COLS: u32 = 64;
/// Warps of a tensor-core block (matmul_mma.cu: MMA_WARPS).
pub const MMA_WARPS: u32 = 4;
/// Steps of more rows than this take the tensor-core kernel (when the device has one).
pub const MATVEC_MAX_ROWS: u32 = TILE_T;
/// Threads of an argmax block (one block per logits row).
pub const ARGMAX_THREADS: u32 = 256;
/// The largest grid y and z (CUDA's limit; x goes to 2^31 - 1).
const MAX_GRID_YZ: u32 = 65535;

/// One kernel launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub entry: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

fn resolve(rows: Count, n_tokens: u32, n_outputs: u32) -> u32 {
    match rows {
        Count::Tokens => n_tokens,
        Count::Outputs => n_outputs,
    }
}

/// The launch of a dispatch of variant `v` over `grid` for a step of `n_tokens` tokens
/// and `n_outputs` output rows, or None when there is nothing to run. `tensor_cores`: the
/// device runs mma.sync m16n8k16 (sm_80+); steps of more than [`MATVEC_MAX_ROWS`] rows
/// then take the tensor-core kernel of a quantized matmul.
pub fn launch(
    v: &Variant,
    grid: &Grid,
    n_tokens: u32,
    n_outputs: u32,
    tensor_cores: bool,
) -> Option<Launch> {
    let l = match *grid {
        Grid::Matmul { rows, n } if is_matmul(v.op) => {
            let rows = resolve(rows, n_tokens, n_outputs);
            if tensor_cores && has_tensor_cores(v) && rows > MATVEC_MAX_ROWS {
                Launch {
                    entry: MMA_ENTRY,
                    grid: [n.div_ceil(MMA_COLS), 1, rows.div_ceil(MMA_TOKENS)],
                    block: [MMA_WARPS * WARP, 1, 1],
                    shared_bytes: 0,
                }
            } else {
                Launch {
                    entry: ENTRY,
                    grid: [n.div_ceil(MV_ROWS), 1, rows.div_ceil(TILE_T)],
                    block: [MV_ROWS * WARP, 1, 1],
                    shared_bytes: 0,
                }
            }
        }
        // Everything else runs the WGSL workgroups as blocks of WG threads.
        _ => Launch {
            entry: ENTRY,
            grid: grid.workgroups(n_tokens, n_outputs),
            block: [WG, 1, 1],
            shared_bytes: 0,
        },
    };
    // Program::new keeps steps to 65535 tokens, so y and z stay within CUDA's limits.
    debug_assert!(l.grid[1] <= MAX_GRID_YZ && l.grid[2] <= MAX_GRID_YZ);
    l.grid.iter().all(|&g| g > 0).then_some(l)
}

/// The launch of the argmax kernel over `rows` logits rows.
pub fn argmax_launch(rows: u32) -> Option<Launch> {
    (rows > 0).then_some(Launch {
        entry: crate::sources::ARGMAX_ENTRY,
        grid: [rows, 1, 1],
        block: [ARGMAX_THREADS, 1, 1],
        shared_bytes: 0,
    })
}
