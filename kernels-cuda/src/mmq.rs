//! The prefill matmul of packed weights on the int8 tensor cores (`cuda/matmul_mmq.cu`,
//! llama.cpp's mmq): q8_1 activations ([`crate::matvec`]'s quantizer, once per launch,
//! RMSNorm folded in) times the packed weights ([`crate::repack`]) unpacked to int8 in
//! registers, `mma.sync` m16n8k32 s8 with each 32-value unit's integer tile scaled into
//! f32 accumulators. It takes the matvec's arguments ([`MatvecArgs`]): the lowering emits
//! one call per weight beside the matvec's, and the step's rows pick which one launches
//! (more than [`crate::matvec::MAX_TOKENS`] rows and a device with tensor cores: this one).
//!
//! A block is [`THREADS`] threads (8 warps) over [`ROWS`] weight rows × a tile of 128
//! tokens, or 64 for the GLUs (gate and up both accumulate), the types with an offset
//! term ([`has_offset`]) and steps of at most [`SMALL_STEP`] rows; grid (token tiles, row
//! tiles). Every packed type has a reader here (`cuda/mmq/<dtype>.cuh`): the lowering
//! emits this kernel for every matmul of a packed type.

use kiln_ir::DType;

use crate::args::KernelArgs;
use crate::matvec::{Epilogue, MatvecArgs, MatvecError};

/// The `.cu`/`.cuh` files of the kernel and its per-type readers.
pub const FILES: &[(&str, &str)] = &[
    ("matmul_mmq.cu", include_str!("cuda/matmul_mmq.cu")),
    ("matmul_wgmma.cu", include_str!("cuda/matmul_wgmma.cu")),
    ("mmq/q4_0.cuh", include_str!("cuda/mmq/q4_0.cuh")),
    ("mmq/q4_1.cuh", include_str!("cuda/mmq/q4_1.cuh")),
    ("mmq/q8_0.cuh", include_str!("cuda/mmq/q8_0.cuh")),
    ("mmq/q5_0.cuh", include_str!("cuda/mmq/q5_0.cuh")),
    ("mmq/q5_1.cuh", include_str!("cuda/mmq/q5_1.cuh")),
    ("mmq/q4_k.cuh", include_str!("cuda/mmq/q4_k.cuh")),
    ("mmq/q5_k.cuh", include_str!("cuda/mmq/q5_k.cuh")),
    ("mmq/q6_k.cuh", include_str!("cuda/mmq/q6_k.cuh")),
];

/// The weight types this kernel reads (a `mmq/<dtype>.cuh` each): every packed type.
pub const DTYPES: [DType; 8] = crate::repack::PACKED;

/// Whether the int8 tensor-core matmul reads `dtype`.
pub fn covers(dtype: DType) -> bool {
    DTYPES.contains(&dtype)
}

/// Threads of a block (matmul_mmq.cu: MQ_THREADS).
pub const THREADS: u32 = 256;
/// Weight rows of a block tile (matmul_mmq.cu: MQ_BN).
pub const ROWS: u32 = 128;
/// Token tiles: 128, and 64 for the GLUs, short steps and the types with an offset term;
/// halved (down to 32) where the grid would leave most SMs idle ([`tile_for`]).
pub const TILES: [u32; 3] = [32, 64, 128];
/// Steps of at most this many rows take the 64-token tile (a 128-token tile would be
/// more than half empty).
pub const SMALL_STEP: u32 = 96;

/// Whether a type's values have an offset term (Q4_1, Q5_1: q·d + m; Q4_K, Q5_K: a
/// sub-block's -dmin·m), whose m·s_x needs the
/// activations' s beside their d: twice the activation scales in registers, which at
/// 128 tokens spill, so those types take the 64-token tile.
pub fn has_offset(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K)
}

/// Whether `dtype` has the 128-token tile.
fn has_wide_tile(dtype: DType) -> bool {
    !has_offset(dtype)
}

/// The token tile of a step of `rows` rows over `n` weight rows on `sm_count` SMs: 128,
/// or 64 (the GLUs, short steps, the types with an offset term), halved while the grid
/// would fill fewer than half the SMs (a SmolLM2-sized matrix is 5 to 12 row tiles: at
/// 512 tokens, 20 to 96 blocks for 132 SMs), down to 32.
pub fn tile_for(dtype: DType, rows: u32, n: u32, epilogue: Epilogue, sm_count: u32) -> u32 {
    let mut tile = if epilogue.gated() || rows <= SMALL_STEP || !has_wide_tile(dtype) {
        64
    } else {
        128
    };
    let blocks = |tile: u32| rows.max(1).div_ceil(tile) * n.max(1).div_ceil(ROWS);
    while tile > TILES[0] && 2 * blocks(tile) < sm_count {
        tile /= 2;
    }
    tile
}

/// The entry point of a variant: `matmul_mmq_q4_0_t128`, `matmul_mmq_q4_1_t64_swiglu`.
pub fn entry(dtype: DType, tile: u32, epilogue: Epilogue) -> String {
    format!("matmul_mmq_{}_t{tile}{}", dtype.name(), epilogue.suffix())
}

/// The (tile, epilogue) of every entry a module may have, in the order of the entry
/// indices (variant.rs): the 32- and 64-token tiles' four epilogues each, then the
/// 128-token tile's store and add (the GLUs accumulate gate and up: 64 tokens at most).
pub fn variants() -> impl Iterator<Item = (u32, Epilogue)> {
    TILES.into_iter().flat_map(|t| {
        Epilogue::ALL
            .into_iter()
            .filter(move |&e| t <= 64 || !e.gated())
            .map(move |e| (t, e))
    })
}

/// How many of [`variants`] the module of `dtype` has (a prefix: without the 128-token
/// tile, the 32- and 64-token tiles' eight).
pub fn variant_count(dtype: DType) -> usize {
    let all = variants().count();
    if has_wide_tile(dtype) {
        all
    } else {
        variants().filter(|&(t, _)| t <= 64).count()
    }
}

/// The entries of [`source`]`(dtype)`.
pub fn entries(dtype: DType) -> Vec<String> {
    variants()
        .take(variant_count(dtype))
        .map(|(t, e)| entry(dtype, t, e))
        .collect()
}

/// The module of every entry of `dtype`: MatvecArgs' declaration, matmul_mmq.cu with
/// the type's reader, then one entry per (tile, epilogue).
pub fn source(dtype: DType) -> Result<String, MatvecError> {
    if !covers(dtype) {
        return Err(MatvecError::Dtype(dtype));
    }
    let mut out = format!(
        "// kiln matmul_mmq {}\n{}",
        dtype.name(),
        MatvecArgs::c_decl()
    );
    let reader = format!("mmq/{}.cuh", dtype.name());
    let mut seen = Vec::new();
    crate::matvec::expand_with(
        "matmul_mmq.cu",
        ("mmq/weights.cuh", &reader),
        &mut seen,
        &mut out,
    );
    // The warpgroup-MMA matmul, on the same stages and reader (sm_90a; a trap elsewhere).
    crate::matvec::expand_with(
        "matmul_wgmma.cu",
        ("mmq/weights.cuh", &reader),
        &mut seen,
        &mut out,
    );
    out.push_str("// ---- entries\n");
    for (tile, epilogue) in variants().take(variant_count(dtype)) {
        out.push_str(&format!(
            "extern \"C\" __global__ void __launch_bounds__(MQ_THREADS, {}) {}(const __grid_constant__ MatvecArgs a) {{\n    \
             mq_matmul<{tile}u, {}>(a);\n}}\n",
            min_blocks(dtype, epilogue),
            entry(dtype, tile, epilogue),
            epilogue.code()
        ));
    }
    for epilogue in Epilogue::ALL {
        out.push_str(&format!(
            "extern \"C\" __global__ void __launch_bounds__(MQ_THREADS, 1) {}(const __grid_constant__ MatvecArgs a) {{\n    \
             wg_matmul<{}>(a);\n}}\n",
            wgmma_entry(dtype, epilogue),
            epilogue.code()
        ));
    }
    Ok(out)
}

/// Tokens of a block tile of the warpgroup-MMA matmul (matmul_wgmma.cu: WG_BT, wgmma's
/// M); its rows are [`ROWS`] (two warpgroups of N = 64) and its block [`THREADS`].
pub const WGMMA_TOKENS: u32 = 64;

/// The warpgroup-MMA matmul's entry of an epilogue: `matmul_wgmma_q4_0_swiglu`.
pub fn wgmma_entry(dtype: DType, epilogue: Epilogue) -> String {
    format!("matmul_wgmma_{}{}", dtype.name(), epilogue.suffix())
}

/// Bytes between core matrices of the warpgroup-MMA matmul's f16 tiles adjacent in K
/// (matmul_wgmma.cu: WG_LBO) and in rows (WG_SBO: 32 columns, 4 core matrices).
const WGMMA_LBO: u32 = 144;
const WGMMA_SBO: u32 = 4 * WGMMA_LBO + 16;

/// Dynamic shared memory of the warpgroup-MMA matmul (matmul_wgmma.cu: WgBuf): two f16
/// buffers of the activations (64 tokens × 32) and of each weight (128 rows × 32, the GLUs'
/// gate and up) in wgmma's core-matrix layout; its cp.async stages are static.
pub fn wgmma_shared_bytes(epilogue: Epilogue) -> u32 {
    let weights = if epilogue.gated() { 2 } else { 1 };
    2 * (WGMMA_TOKENS / 8 + weights * ROWS / 8) * WGMMA_SBO
}

/// The launch of the warpgroup-MMA matmul (sm_90a only, where the lowering picks it over
/// [`launch`]): one block a 64-token × 128-row tile.
pub fn wgmma_launch(
    dtype: DType,
    n: u32,
    k: u32,
    rows: u32,
    epilogue: Epilogue,
) -> Result<MmqLaunch, MatvecError> {
    let l = launch(dtype, n, k, rows, epilogue, 0)?;
    Ok(MmqLaunch {
        entry: wgmma_entry(dtype, epilogue),
        grid: [rows.max(1).div_ceil(WGMMA_TOKENS), n.div_ceil(ROWS), 1],
        block: l.block,
        tile: WGMMA_TOKENS,
    })
}

/// Blocks an SM must hold at once (`__launch_bounds__`): 2, which caps a thread at 128
/// registers (65,536 an SM over 2 × 256 threads) and puts two blocks' copies and
/// multiplications side by side; 1 for the K-quants' GLUs, whose gate and up
/// accumulators beside the sub-block scales' decoding spill at 128.
pub fn min_blocks(dtype: DType, epilogue: Epilogue) -> u32 {
    if epilogue.gated() && dtype.block_len() == 256 {
        1
    } else {
        2
    }
}

/// Where an int8 tensor-core matmul runs: its entry, grid and block (static shared
/// memory only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmqLaunch {
    pub entry: String,
    /// (token tiles, row tiles, 1).
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub tile: u32,
}

/// The launch for `n` weight rows, `k` columns and a step of `rows` rows on a device of
/// `sm_count` SMs.
pub fn launch(
    dtype: DType,
    n: u32,
    k: u32,
    rows: u32,
    epilogue: Epilogue,
    sm_count: u32,
) -> Result<MmqLaunch, MatvecError> {
    if !covers(dtype) {
        return Err(MatvecError::Dtype(dtype));
    }
    if k == 0 || !k.is_multiple_of(dtype.block_len() as u32) {
        return Err(MatvecError::K(k));
    }
    if n == 0 {
        return Err(MatvecError::NoRows);
    }
    let tile = tile_for(dtype, rows, n, epilogue, sm_count);
    Ok(MmqLaunch {
        entry: entry(dtype, tile, epilogue),
        grid: [rows.max(1).div_ceil(tile), n.div_ceil(ROWS), 1],
        block: [THREADS, 1, 1],
        tile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wgmma_launches_tile_64_tokens_by_128_rows() {
        // Odd shapes: 70 tokens → 2 token tiles, 67 rows → 1 row tile; 4096 rows → 32.
        let l = wgmma_launch(DType::Q4_K, 67, 256, 70, Epilogue::Store).unwrap();
        assert_eq!(
            (l.entry.as_str(), l.grid, l.block),
            ("matmul_wgmma_q4_k", [2, 1, 1], [THREADS, 1, 1])
        );
        let l = wgmma_launch(DType::Q8_0, 4096, 4096, 512, Epilogue::GeGlu).unwrap();
        assert_eq!(l.entry, "matmul_wgmma_q8_0_geglu");
        assert_eq!(l.grid, [8, 32, 1]);
        // k not a multiple of the type's block, no rows: the int8 launch's errors.
        assert!(wgmma_launch(DType::Q4_K, 67, 96, 70, Epilogue::Store).is_err());
        assert!(wgmma_launch(DType::Q4_0, 0, 64, 70, Epilogue::Store).is_err());
        // Two f16 buffers of 8 + 16 (or 8 + 2 · 16) core-matrix row groups of 592 bytes
        // (cuda-report: the kernels' dynamic shared memory).
        assert_eq!(wgmma_shared_bytes(Epilogue::Add), 28_416);
        assert_eq!(wgmma_shared_bytes(Epilogue::SwiGlu), 47_360);
        // Every module has the four entries.
        for dtype in DTYPES {
            let src = source(dtype).unwrap();
            for e in Epilogue::ALL {
                assert!(
                    src.contains(&format!(" {}(", wgmma_entry(dtype, e))),
                    "{dtype} {e:?}"
                );
            }
        }
    }

    #[test]
    fn tiles_shrink_until_the_grid_fills_half_the_sms() {
        let store = Epilogue::Store;
        // Llama-3-8B's 4096 rows at 512 tokens: 32 row tiles × 4 = 128 blocks of 128.
        assert_eq!(tile_for(DType::Q4_0, 512, 4096, store, 132), 128);
        // SmolLM2's 960 QKV rows: 8 row tiles; 32 blocks of 128, 64 of 64, 128 of 32.
        assert_eq!(tile_for(DType::Q4_0, 512, 960, store, 132), 32);
        // Its 1536-row GLU: 12 × 8 = 96 blocks of 64.
        assert_eq!(tile_for(DType::Q4_0, 512, 1536, Epilogue::SwiGlu, 132), 64);
        // Types with an offset term start at 64; short steps too.
        assert_eq!(tile_for(DType::Q4_1, 4096, 4096, store, 132), 64);
        assert_eq!(tile_for(DType::Q8_0, 96, 4096, store, 64), 64);
        // ... whose 2 × 32 blocks would fill fewer than 66 of 132 SMs: 32.
        assert_eq!(tile_for(DType::Q8_0, 96, 4096, store, 132), 32);
        // Never below 32, whatever the device; a device of one SM keeps the large tiles.
        assert_eq!(tile_for(DType::Q6_K, 40, 67, store, 132), 32);
        assert_eq!(tile_for(DType::Q6_K, 512, 67, store, 1), 128);
        assert_eq!(tile_for(DType::Q6_K, 512, 67, store, 0), 128);
        // Every tile chosen has its entry.
        for dtype in DTYPES {
            for e in Epilogue::ALL {
                for (rows, n, sm) in [(33, 67, 132), (512, 4096, 132), (512, 67, 1), (97, 67, 1)] {
                    let t = tile_for(dtype, rows, n, e, sm);
                    assert!(
                        variants().take(variant_count(dtype)).any(|v| v == (t, e)),
                        "{dtype} {t} {e:?}"
                    );
                }
            }
        }
    }
}
