//! The tensor-core peak kernel of the CUDA backend's ceilings (`Backend::ceilings`,
//! `kiln bench --kernels`): `cuda/peak_mma.cu`, independent `mma.sync` m16n8k16 f16
//! chains on registers on every SM.

use crate::args::{KernelArgs, Ptr};
use crate::kernel_args;
use crate::launch::Launch;
use crate::variant::Entry;

/// The kernel's symbol.
pub const PEAK_SYMBOL: &str = "peak_mma_f16";

/// What the peak is measured with (`Ceilings::matmul_what`).
pub const PEAK_WHAT: &str = "mma.sync f16";

/// Independent mma chains per warp and iteration (peak_mma.cu: PEAK_CHAINS).
pub const PEAK_CHAINS: u64 = 8;

/// FLOP of one m16n8k16 mma: 16 · 8 · 16 multiply-adds, two each.
pub const FLOP_PER_MMA: u64 = 2 * 16 * 8 * 16;

/// Threads of a block (4 warps), and blocks per SM (enough warps to hide the mma latency).
pub const PEAK_THREADS: u32 = 128;
pub const PEAK_BLOCKS_PER_SM: u32 = 4;

kernel_args! {
    /// peak_mma.cu's arguments.
    PeakArgs {
        /// (blocks · PEAK_THREADS) one sum per thread, so the chains stay live.
        out: Ptr<f32>,
        /// Iterations of PEAK_CHAINS mma per warp.
        iters: u32,
        pad: u32,
    }
}

/// The module: the argument struct, then peak_mma.cu.
pub fn peak_source() -> String {
    format!(
        "// kiln tensor-core peak\n{}// ---- ptx.cuh\n{}// ---- peak_mma.cu\n{}",
        PeakArgs::c_decl(),
        include_str!("cuda/ptx.cuh"),
        include_str!("cuda/peak_mma.cu")
    )
}

/// The launch on a device of `sm_count` multiprocessors.
pub fn peak_launch(sm_count: u32) -> Launch {
    Launch {
        entry: Entry::Main,
        grid: [sm_count.max(1) * PEAK_BLOCKS_PER_SM, 1, 1],
        block: [PEAK_THREADS, 1, 1],
        shared_bytes: 0,
    }
}

/// Bytes of the output buffer of [`peak_launch`].
pub fn peak_out_bytes(l: &Launch) -> u64 {
    u64::from(l.grid[0]) * u64::from(l.block[0]) * 4
}

/// FLOP one launch of `l` with `iters` iterations does.
pub fn peak_flop(l: &Launch, iters: u32) -> f64 {
    let warps = u64::from(l.grid[0]) * u64::from(l.block[0] / 32);
    (warps * u64::from(iters) * PEAK_CHAINS * FLOP_PER_MMA) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_declares_the_args_and_counts_4096_flop_an_mma() {
        let src = peak_source();
        assert!(src.contains("struct PeakArgs {") && src.contains(PEAK_SYMBOL));
        assert!(src.contains(&format!("#define PEAK_CHAINS {PEAK_CHAINS}\n")));
        assert_eq!(FLOP_PER_MMA, 4096);
        let l = peak_launch(132);
        assert_eq!(l.grid[0], 528);
        assert_eq!(peak_flop(&l, 10), (528 * 4 * 10 * 8 * 4096) as f64);
    }
}
