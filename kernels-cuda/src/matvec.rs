//! The decode matvec of quantized weights (`cuda/mv/`): int8 activations, integer dot
//! products, packed weights ([`crate::repack`]), token tiles up to 32.
//!
//! # How the lowering uses it
//!
//! Weights of a [`repack::is_packed`] type are uploaded as [`repack::pack`] made them (the
//! packed copy replaces the GGUF bytes). The plan gets one q8_1 scratch buffer of
//! [`q8_1_planes`]`(max_rows, max_k).bytes`, `max_rows` the largest step's rows (≤ 32 on
//! this path) and `max_k` the widest input of a quantized MatMul-family launch. A
//! MatMul-family launch (MatMul, RmsNormMatMul, MatMulAdd, MatMulSwiGlu,
//! RmsNormMatMulSwiGlu, MatMulGeGlu, RmsNormMatMulGeGlu) of packed weights whose step has at most [`MAX_TOKENS`] rows
//! becomes:
//!
//! 1. one quantization of its input: [`QUANTIZE_ENTRY`], or [`RMSNORM_QUANTIZE_ENTRY`]
//!    for the RmsNorm ops (`norm` = the f32 norm weight, `eps`), from the module
//!    [`quantize_source`], launched as [`quantize_launch`]`(max_rows)` with
//!    [`QuantizeArgs`] (`q`/`ds` = the scratch's planes at `k`, [`q8_1_planes`]);
//! 2. one matvec per weight of the launch (for MatMul's several weights, `out` moves to
//!    the weight's first column and `out_stride` is the output row's width; a GLU's gate
//!    and up are one matvec), from the module [`source`]`(dtype)`, launched as
//!    [`matvec_launch`]`(dtype, n, k, tokens, epilogue)` with [`MatvecArgs`]: `wq`/`ws`
//!    the quant and scale planes of the whole packed weight ([`repack::layout`]; the
//!    kernel finds a high plane at `wq + n · quant_row_bytes()`), `q`/`ds` the scratch.
//!
//! Both read the step's row count from `step[rows_sel]` ([`crate::sources`]' STEP_*
//! words), so their arguments are built once at load; the grid's token tiles (z) follow
//! the step's tokens, and blocks past the step's rows return at once. A token's result
//! does not depend on the tile it was computed in (the sums run in the same order).

use kiln_ir::DType;

use crate::args::{ConstPtr, KernelArgs, Ptr};
use crate::kernel_args;
use crate::repack;

pub mod twin;

#[cfg(test)]
mod tests;

/// The `.cu`/`.cuh` files of the matvec and the activation quantizer.
pub const FILES: &[(&str, &str)] = &[
    ("mv/common.cuh", include_str!("cuda/mv/common.cuh")),
    ("mv/q4_0.cuh", include_str!("cuda/mv/q4_0.cuh")),
    ("mv/q4_1.cuh", include_str!("cuda/mv/q4_1.cuh")),
    ("mv/q8_0.cuh", include_str!("cuda/mv/q8_0.cuh")),
    ("mv/matvec.cu", include_str!("cuda/mv/matvec.cu")),
    (
        "mv/quantize_q8_1.cu",
        include_str!("cuda/mv/quantize_q8_1.cu"),
    ),
    ("mv/unit_q4_0.cuh", include_str!("cuda/mv/unit_q4_0.cuh")),
    ("mv/unit_q4_1.cuh", include_str!("cuda/mv/unit_q4_1.cuh")),
    ("mv/unit_q8_0.cuh", include_str!("cuda/mv/unit_q8_0.cuh")),
    ("mv/bits.cuh", include_str!("cuda/mv/bits.cuh")),
    ("mv/groups.cuh", include_str!("cuda/mv/groups.cuh")),
    ("mv/dots.cuh", include_str!("cuda/mv/dots.cuh")),
    ("mv/q5_0.cuh", include_str!("cuda/mv/q5_0.cuh")),
    ("mv/q5_1.cuh", include_str!("cuda/mv/q5_1.cuh")),
    ("mv/q4_k.cuh", include_str!("cuda/mv/q4_k.cuh")),
    ("mv/q5_k.cuh", include_str!("cuda/mv/q5_k.cuh")),
    ("mv/q6_k.cuh", include_str!("cuda/mv/q6_k.cuh")),
    ("mv/unit_q5_0.cuh", include_str!("cuda/mv/unit_q5_0.cuh")),
    ("mv/unit_q5_1.cuh", include_str!("cuda/mv/unit_q5_1.cuh")),
    ("mv/unit_q4_k.cuh", include_str!("cuda/mv/unit_q4_k.cuh")),
    ("mv/unit_q5_k.cuh", include_str!("cuda/mv/unit_q5_k.cuh")),
    ("mv/unit_q6_k.cuh", include_str!("cuda/mv/unit_q6_k.cuh")),
];

/// The weight types the matvec reads (those [`repack`] packs).
pub const DTYPES: [DType; 8] = repack::PACKED;

/// Token tiles: the step's tokens are covered by tiles of the smallest of these that
/// holds them all (then tiles of the largest, [`max_tile`]).
pub const TILES: [u32; 6] = [1, 2, 4, 8, 16, 32];

/// Most rows a step may have on this path; longer steps take the tensor-core matmul.
pub const MAX_TOKENS: u32 = 32;

/// Threads of a matvec block (4 warps splitting the rows' blocks).
pub const MATVEC_THREADS: u32 = 128;

/// Threads of a quantization block (one block per activation row).
pub const QUANTIZE_THREADS: u32 = 256;

/// The activation quantizer's entries (module [`quantize_source`]).
pub const QUANTIZE_ENTRY: &str = "quantize_q8_1";
pub const RMSNORM_QUANTIZE_ENTRY: &str = "rmsnorm_quantize_q8_1";

kernel_args! {
    /// A matvec's arguments: out = epilogue(x · Wᵀ) for the step's rows.
    MatvecArgs {
        /// (n, k / 32, 16 or 32) the weight's quant plane (the gate for a GLU); its high
        /// plane, where the type has one, follows it (repack::layout).
        wq: ConstPtr<u8>,
        /// Its scale plane: per GGUF block f16 d, half2 (d, m) (Q4_1, Q5_1), or a
        /// K-quant super-block's record; the 32-value types' in groups of 4 rows
        /// (repack's module doc, `mv/groups.cuh`).
        ws: ConstPtr<u8>,
        /// The up weight's planes (SwiGLU, GeGLU), else 0.
        w2q: ConstPtr<u8>,
        w2s: ConstPtr<u8>,
        /// (rows, k) int8 activation quants.
        q: ConstPtr<i8>,
        /// (rows, k / 32) (f16 d, int16 Σq) of the activation blocks.
        ds: ConstPtr<u32>,
        /// (rows, out_stride) the residual (MatMulAdd; may be `out`), else 0.
        res: ConstPtr<f32>,
        /// (rows, out_stride) the output; column 0 is the weight's row 0.
        out: Ptr<f32>,
        /// The step buffer; `step[rows_sel]` rows.
        step: ConstPtr<u32>,
        /// Weight rows (output columns) of this launch.
        n: u32,
        /// Input columns, a multiple of the weight's block (32 or 256).
        k: u32,
        out_stride: u32,
        rows_sel: u32,
        /// 1: the gated epilogue is GeGLU (gelu(gate) · up), else SwiGLU.
        gelu: u32,
        pad: u32,
    }
}

kernel_args! {
    /// The activation quantizer's arguments (both entries).
    QuantizeArgs {
        /// (rows, x_stride) f32 input rows.
        x: ConstPtr<f32>,
        /// (k) the RMSNorm weight (rmsnorm_quantize_q8_1), else 0.
        norm: ConstPtr<f32>,
        /// The step buffer; `step[rows_sel]` rows.
        step: ConstPtr<u32>,
        /// (rows, k) int8 quants out.
        q: Ptr<i8>,
        /// (rows, k / 32) (f16 d, int16 Σq) out.
        ds: Ptr<u32>,
        /// Columns, a multiple of 32.
        k: u32,
        /// Floats from one input row to the next.
        x_stride: u32,
        rows_sel: u32,
        eps: f32,
    }
}

/// What a matvec does with the dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// out = x · Wᵀ (MatMul, RmsNormMatMul).
    Store,
    /// out = res + x · Wᵀ (MatMulAdd).
    Add,
    /// out = silu(x · Gateᵀ) · (x · Upᵀ) (MatMulSwiGlu, RmsNormMatMulSwiGlu).
    SwiGlu,
    /// out = gelu(x · Gateᵀ) · (x · Upᵀ), llama.cpp's f16-rounded tanh GELU (gelu.cuh;
    /// MatMulGeGlu, RmsNormMatMulGeGlu).
    GeGlu,
}

impl Epilogue {
    pub const ALL: [Epilogue; 4] = [
        Epilogue::Store,
        Epilogue::Add,
        Epilogue::SwiGlu,
        Epilogue::GeGlu,
    ];

    /// Whether it reads two weights (gate and up).
    pub fn gated(self) -> bool {
        matches!(self, Epilogue::SwiGlu | Epilogue::GeGlu)
    }

    /// The entry name's suffix (`""`, `"_add"`, `"_swiglu"`, `"_geglu"`).
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Epilogue::Store => "",
            Epilogue::Add => "_add",
            Epilogue::SwiGlu => "_swiglu",
            Epilogue::GeGlu => "_geglu",
        }
    }

    /// The kernels' epilogue code (mv/matvec.cu, matmul_mmq.cu: MV_STORE ...).
    pub(crate) fn code(self) -> &'static str {
        match self {
            Epilogue::Store => "MV_STORE",
            Epilogue::Add => "MV_ADD",
            Epilogue::SwiGlu => "MV_SWIGLU",
            Epilogue::GeGlu => "MV_GEGLU",
        }
    }
}

/// A matvec the kernels cannot run.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatvecError {
    #[error("the matvec does not read {0} weights")]
    Dtype(DType),
    #[error("matvec: k = {0} is not a positive multiple of the weight's block")]
    K(u32),
    #[error("matvec: no rows (n = 0)")]
    NoRows,
}

/// Rows of a block for a token tile: each activation block read serves as many rows as
/// fit while a lane's accumulators (weights × rows × tokens) stay at most 32 registers
/// and its weight blocks of one step at most 4. A K-quant's unit holds its super-block's
/// 16-byte scale record while the loads are in flight: its gated tiles of 8 tokens take
/// one row (two rows spill at 128 registers).
pub fn rows_per_block(dtype: DType, tile: u32, epilogue: Epilogue) -> u32 {
    let weights = if epilogue.gated() { 2 } else { 1 };
    let rows = (32 / (tile * weights)).min(4 / weights).clamp(1, 4);
    if dtype.block_len() == 256 && epilogue.gated() && tile >= 8 {
        1
    } else {
        rows
    }
}

/// Blocks an SM must hold at once (`__launch_bounds__`), which caps the registers
/// (65,536 an SM over 128 threads a block): 80 a thread at 1 token (24 warps an SM, many
/// loads in flight for the bandwidth-bound decode), 96 at 2, 128 above (the batch
/// tiles, bound by dp4a rather than memory).
pub fn min_blocks(tile: u32) -> u32 {
    match tile {
        1 => 6,
        2 => 5,
        _ => 4,
    }
}

/// The entry point of a variant: `matvec_q4_0_t8`, `matvec_q4_1_t1_swiglu`.
pub fn entry(dtype: DType, tile: u32, epilogue: Epilogue) -> String {
    format!("matvec_{}_t{tile}{}", dtype.name(), epilogue.suffix())
}

/// The largest token tile of an epilogue: 32, but 16 for the GLUs, whose 64 accumulators
/// at 32 tokens (gate and up) do not fit in registers: a gated step of 17-32 tokens runs
/// as two tiles of 16 and reads its weights twice (from L2 when it holds them).
pub fn max_tile(epilogue: Epilogue) -> u32 {
    if epilogue.gated() { 16 } else { MAX_TOKENS }
}

/// The token tile a step of `tokens` rows runs with.
pub fn tile_for(tokens: u32, epilogue: Epilogue) -> u32 {
    let max = max_tile(epilogue);
    TILES
        .into_iter()
        .find(|&t| t >= tokens.min(max))
        .unwrap_or(max)
}

/// Where a matvec runs: its entry, grid and block (no dynamic shared memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatvecLaunch {
    pub entry: String,
    /// (row groups, 1, token tiles).
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub tile: u32,
}

/// The launch of a matvec of `n` weight rows, `k` columns, for a step of `tokens` rows.
pub fn matvec_launch(
    dtype: DType,
    n: u32,
    k: u32,
    tokens: u32,
    epilogue: Epilogue,
) -> Result<MatvecLaunch, MatvecError> {
    if !repack::is_packed(dtype) {
        return Err(MatvecError::Dtype(dtype));
    }
    if k == 0 || !k.is_multiple_of(dtype.block_len() as u32) {
        return Err(MatvecError::K(k));
    }
    if n == 0 {
        return Err(MatvecError::NoRows);
    }
    let tile = tile_for(tokens, epilogue);
    let rows = rows_per_block(dtype, tile, epilogue);
    Ok(MatvecLaunch {
        entry: entry(dtype, tile, epilogue),
        grid: [n.div_ceil(rows), 1, tokens.max(1).div_ceil(tile)],
        block: [MATVEC_THREADS, 1, 1],
        tile,
    })
}

/// The grid and block of a quantization for up to `max_rows` rows (blocks past the
/// step's rows return at once).
pub fn quantize_launch(max_rows: u32) -> ([u32; 3], [u32; 3]) {
    ([max_rows.max(1), 1, 1], [QUANTIZE_THREADS, 1, 1])
}

/// The q8_1 scratch of `rows` activation rows of `k` columns: quants (rows, k) at 0,
/// (f16 d, int16 Σq) (rows, k / 32) at `scales_offset`; both 16-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q8_1Planes {
    pub scales_offset: u64,
    pub bytes: u64,
}

/// The scratch planes for `rows` rows of `k` columns (`k` a multiple of 32).
pub fn q8_1_planes(rows: u32, k: u32) -> Q8_1Planes {
    let quants = u64::from(rows) * u64::from(k);
    let scales = u64::from(rows) * u64::from(k / 32) * 4;
    Q8_1Planes {
        scales_offset: quants.next_multiple_of(16),
        bytes: (quants.next_multiple_of(16) + scales).next_multiple_of(16),
    }
}

/// Append `name` with its `#include "x"` lines expanded (each file once), `mv/weights.cuh`
/// standing for `weights`.
fn expand(name: &str, weights: &str, seen: &mut Vec<&'static str>, out: &mut String) {
    expand_with(name, ("mv/weights.cuh", weights), seen, out);
}

/// Append `name` (a file of this path, [`crate::mmq`]'s or [`crate::sources`]') with its
/// `#include "x"` lines expanded (each file once), `stand_in.0` standing for `stand_in.1`.
pub(crate) fn expand_with(
    name: &str,
    stand_in: (&str, &str),
    seen: &mut Vec<&'static str>,
    out: &mut String,
) {
    let name = if name == stand_in.0 { stand_in.1 } else { name };
    let Some((name, text)) = FILES
        .iter()
        .chain(crate::mmq::FILES)
        .chain(crate::sources::FILES)
        .find(|(n, _)| *n == name)
    else {
        // Every include names an embedded file (the tests assemble every module).
        out.push_str(&format!("#error \"no file {name}\"\n"));
        return;
    };
    if seen.contains(name) {
        return;
    }
    seen.push(name);
    out.push_str(&format!("// ---- {name}\n"));
    for line in text.lines() {
        let include = line
            .trim()
            .strip_prefix("#include")
            .map(str::trim)
            .and_then(|l| l.strip_prefix('"')?.strip_suffix('"'));
        match include {
            Some(inc) => expand_with(inc, stand_in, seen, out),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

/// The module of every matvec of `dtype`: each tile × epilogue, entries [`entries`].
pub fn source(dtype: DType) -> Result<String, MatvecError> {
    if !repack::is_packed(dtype) {
        return Err(MatvecError::Dtype(dtype));
    }
    let mut out = format!("// kiln matvec {}\n{}", dtype.name(), MatvecArgs::c_decl());
    expand(
        "mv/matvec.cu",
        &format!("mv/{}.cuh", dtype.name()),
        &mut Vec::new(),
        &mut out,
    );
    out.push_str("// ---- entries\n");
    for (tile, epilogue) in variants() {
        out.push_str(&format!(
            "extern \"C\" __global__ void __launch_bounds__(MV_THREADS, {}) {}(const MatvecArgs a) {{\n    \
             mv_matvec<{tile}u, {}u, {}>(a);\n}}\n",
            min_blocks(tile),
            entry(dtype, tile, epilogue),
            rows_per_block(dtype, tile, epilogue),
            epilogue.code()
        ));
    }
    Ok(out)
}

/// The (tile, epilogue) of every matvec of a weight type: each tile of [`TILES`] up to
/// [`max_tile`].
pub fn variants() -> impl Iterator<Item = (u32, Epilogue)> {
    TILES.into_iter().flat_map(|t| {
        Epilogue::ALL
            .into_iter()
            .filter(move |&e| t <= max_tile(e))
            .map(move |e| (t, e))
    })
}

/// The entries of [`source`]`(dtype)`.
pub fn entries(dtype: DType) -> Vec<String> {
    variants().map(|(t, e)| entry(dtype, t, e)).collect()
}

/// The module of the activation quantizer: [`QUANTIZE_ENTRY`], [`RMSNORM_QUANTIZE_ENTRY`].
pub fn quantize_source() -> String {
    let mut out = format!("// kiln quantize_q8_1\n{}", QuantizeArgs::c_decl());
    expand("mv/quantize_q8_1.cu", "", &mut Vec::new(), &mut out);
    out
}

/// The packed-layout dequantizer of `dtype` for kernels that read 8 values a unit (the
/// embedding): the file to include in place of `weights/<dtype>.cuh`, after
/// `prelude.cuh` and `weights/common.cuh`. It defines `PackedW` (planes and blocks per
/// row), `unit_cols(u)` and `pw_unit(w, row, u)`, w_unit's values.
pub fn unit_file(dtype: DType) -> Result<&'static str, MatvecError> {
    match dtype {
        DType::Q4_0 => Ok("mv/unit_q4_0.cuh"),
        DType::Q4_1 => Ok("mv/unit_q4_1.cuh"),
        DType::Q8_0 => Ok("mv/unit_q8_0.cuh"),
        DType::Q5_0 => Ok("mv/unit_q5_0.cuh"),
        DType::Q5_1 => Ok("mv/unit_q5_1.cuh"),
        DType::Q4_K => Ok("mv/unit_q4_k.cuh"),
        DType::Q5_K => Ok("mv/unit_q5_k.cuh"),
        DType::Q6_K => Ok("mv/unit_q6_k.cuh"),
        _ => Err(MatvecError::Dtype(dtype)),
    }
}

/// A module that compiles [`unit_file`]`(dtype)` after the prelude (entry `unit_check`,
/// which only proves it compiles: NVRTC checks it in tests/tests/cuda_nvrtc.rs).
pub fn unit_check_source(dtype: DType) -> Result<String, MatvecError> {
    let unit = unit_file(dtype)?;
    let mut out = format!("// kiln packed unit check {}\n", dtype.name());
    let mut seen = Vec::new();
    for f in ["prelude.cuh", "weights/common.cuh", unit] {
        expand(f, "", &mut seen, &mut out);
    }
    out.push_str(
        "extern \"C\" __global__ void unit_check(PackedW w, float* out) {\n    \
         W8 v = pw_unit(w, blockIdx.x, threadIdx.x);\n    \
         u32x2 c = unit_cols(threadIdx.x);\n    \
         out[c.x] = v.lo.x + v.lo.w;\n    out[c.y] = v.hi.y + v.hi.z;\n}\n",
    );
    Ok(out)
}

/// Every module of this path as (name, source, entries): what NVRTC and the
/// disassembly checks compile.
pub fn modules() -> Vec<(String, String, Vec<String>)> {
    let mut m: Vec<(String, String, Vec<String>)> = DTYPES
        .into_iter()
        .filter_map(|d| {
            let src = source(d).ok()?;
            Some((format!("matvec_{}", d.name()), src, entries(d)))
        })
        .collect();
    m.push((
        "quantize_q8_1".into(),
        quantize_source(),
        vec![QUANTIZE_ENTRY.into(), RMSNORM_QUANTIZE_ENTRY.into()],
    ));
    for d in DTYPES {
        if let Ok(src) = unit_check_source(d) {
            m.push((
                format!("unit_check_{}", d.name()),
                src,
                vec!["unit_check".into()],
            ));
        }
    }
    m
}
