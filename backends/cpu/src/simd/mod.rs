//! SIMD block dot products: quantized weight rows times quantized activation rows.
//!
//! Weights stay in their GGUF blocks; activations are quantized per token to Q8_0 (for
//! Q4_0, Q5_0 and Q8_0 weights), Q8_1 (Q4_1, Q5_1) or Q8_K (the K-quants Q4_K, Q5_K,
//! Q6_K) with `kiln_ir::quant::{q8_0, q8_1, q8_k}::quantize_row`, as llama.cpp's CPU
//! backend does ([`Format::quantize_acts`]). Every kernel here has a scalar twin in
//! `kiln_ir::quant`; the tests hold them together.
//!
//! | weights × activations | one row (twin) | rows × one token | rows × tokens |
//! |---|---|---|---|
//! | Q4_0 × Q8_0 | [`vec_dot_q4_0_q8_0`] | [`dot_rows_q4_0_q8_0`] | [`dot_rows_tokens_q4_0_q8_0`] |
//! | Q4_1 × Q8_1 | [`vec_dot_q4_1_q8_1`] | [`dot_rows_q4_1_q8_1`] | [`dot_rows_tokens_q4_1_q8_1`] |
//! | Q8_0 × Q8_0 | [`vec_dot_q8_0_q8_0`] | [`dot_rows_q8_0_q8_0`] | [`dot_rows_tokens_q8_0_q8_0`] |
//! | any [`Format`] | [`vec_dot`] | [`dot_rows`] | [`dot_rows_tokens`] |
//!
//! The new formats (Q5_0 × Q8_0, Q5_1 × Q8_1, Q4_K / Q5_K / Q6_K × Q8_K) are reached
//! through the generic entry points, with their twins `kiln_ir::quant::vec_dot_q5_0_q8_0`,
//! `vec_dot_q5_1_q8_1`, `vec_dot_q4_k_q8_k`, `vec_dot_q5_k_q8_k`, `vec_dot_q6_k_q8_k`.
//!
//! The multi-row forms are what the matmul calls: they keep a tile of weight rows and
//! tokens in registers, so each activation block is decoded once per tile of rows and
//! each weight block once per tile of tokens.
//!
//! Dispatch: on x86_64 the first call checks for AVX2, FMA and F16C (and AVX-512 VNNI
//! with VL, or AVX-VNNI)
//! (`is_x86_feature_detected!`) and caches the chosen kernel in a `OnceLock`; without
//! them, and on other architectures, every entry point runs the scalar twins.
//! [`active_isa`] says which one runs.
//!
//! Results: each block's integer dot is exact in both paths; only the order of the f32
//! accumulation of the scaled block terms differs, so a result agrees with its twin to
//! a few ulps of the sum of the terms' magnitudes.
//!
//! Precondition on activations: their quants lie in -127..=127, as the kiln_ir
//! quantizers produce them. The AVX2 Q8_0 × Q8_0 kernel multiplies with ggml's sign
//! trick, which gets a product wrong when an activation quant is -128 and its weight
//! is negative (the result is wrong, never unsafe). Weight quants may be any byte.

use std::sync::OnceLock;

use kiln_ir::DType;
use kiln_ir::quant::{q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k};

pub use stage::{ActBlocks, StageTask, Staged};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod stage;
#[cfg(test)]
mod tests;

/// Dot product of one Q4_0 row with one Q8_0 activation row (SIMD twin of
/// `kiln_ir::quant::vec_dot_q4_0_q8_0`).
///
/// Precondition, as for the twin: both rows hold the same number of whole blocks
/// (debug assertion); otherwise the shorter one sets the number of blocks dotted.
pub fn vec_dot_q4_0_q8_0(row: &[u8], act: &[u8]) -> f32 {
    vec_dot(Format::Q4_0, row, act)
}

/// Dot product of one Q4_1 row with one Q8_1 activation row (SIMD twin of
/// `kiln_ir::quant::vec_dot_q4_1_q8_1`). Precondition as for [`vec_dot_q4_0_q8_0`].
pub fn vec_dot_q4_1_q8_1(row: &[u8], act: &[u8]) -> f32 {
    vec_dot(Format::Q4_1, row, act)
}

/// Dot product of one Q8_0 row with one Q8_0 activation row (SIMD twin of
/// `kiln_ir::quant::vec_dot_q8_0_q8_0`). Precondition as for [`vec_dot_q4_0_q8_0`].
pub fn vec_dot_q8_0_q8_0(row: &[u8], act: &[u8]) -> f32 {
    vec_dot(Format::Q8_0, row, act)
}

/// `out[r] = dot(row r, act)` for `n_rows` consecutive Q4_0 rows of `row_bytes` bytes
/// each (`rows`: (n_rows, row_bytes)) and one Q8_0 activation row of as many blocks.
///
/// Panics if `row_bytes` is not a whole number of blocks, if `rows` is shorter than
/// `n_rows * row_bytes`, if `act` is not exactly one row of the same number of blocks,
/// or if `out` is shorter than `n_rows`. Only `out[..n_rows]` is written.
pub fn dot_rows_q4_0_q8_0(
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    act: &[u8],
    out: &mut [f32],
) {
    dot_rows(Format::Q4_0, rows, row_bytes, n_rows, act, out);
}

/// [`dot_rows_q4_0_q8_0`] for Q4_1 rows and a Q8_1 activation row.
pub fn dot_rows_q4_1_q8_1(
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    act: &[u8],
    out: &mut [f32],
) {
    dot_rows(Format::Q4_1, rows, row_bytes, n_rows, act, out);
}

/// [`dot_rows_q4_0_q8_0`] for Q8_0 rows and a Q8_0 activation row.
pub fn dot_rows_q8_0_q8_0(
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    act: &[u8],
    out: &mut [f32],
) {
    dot_rows(Format::Q8_0, rows, row_bytes, n_rows, act, out);
}

/// `out[t * out_stride + r] = dot(row r, act row t)` for `n_rows` consecutive Q4_0 rows
/// (`rows`: (n_rows, row_bytes)) and `n_tokens` Q8_0 activation rows starting every
/// `act_row_bytes` bytes (`acts`: (n_tokens, act_row_bytes), each row's first blocks
/// used); `out`: (n_tokens, out_stride), the first `n_rows` of each row written, the
/// rest untouched. For prefill: each weight block is decoded once per few tokens.
///
/// `staged`, when given, is `acts` staged once for the whole launch ([`Staged`]): the
/// SIMD kernels then read it instead of staging `acts` themselves.
///
/// Panics if `row_bytes` is not a whole number of blocks, if `rows` is shorter than
/// `n_rows * row_bytes`, if an activation row does not fit in `act_row_bytes` (when
/// `n_tokens > 1`) or in `acts`, if `staged` is not `n_tokens` rows of as many blocks in
/// the activation format, or if `out` (with `out_stride >= n_rows` when `n_tokens > 1`)
/// cannot hold the results.
#[allow(clippy::too_many_arguments)] // the brief's shape: two strided matrices and an output
pub fn dot_rows_tokens_q4_0_q8_0(
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    staged: Option<&Staged>,
    out: &mut [f32],
    out_stride: usize,
) {
    let job = Job {
        format: Format::Q4_0,
        rows,
        row_bytes,
        n_rows,
        acts,
        act_stride: act_row_bytes,
        n_tokens,
        blocks: 0,
        staged,
        out,
        out_stride,
    };
    run_with(kernels(), job);
}

/// [`dot_rows_tokens_q4_0_q8_0`] for Q4_1 rows and Q8_1 activation rows.
#[allow(clippy::too_many_arguments)] // see dot_rows_tokens_q4_0_q8_0
pub fn dot_rows_tokens_q4_1_q8_1(
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    staged: Option<&Staged>,
    out: &mut [f32],
    out_stride: usize,
) {
    let job = Job {
        format: Format::Q4_1,
        rows,
        row_bytes,
        n_rows,
        acts,
        act_stride: act_row_bytes,
        n_tokens,
        blocks: 0,
        staged,
        out,
        out_stride,
    };
    run_with(kernels(), job);
}

/// [`dot_rows_tokens_q4_0_q8_0`] for Q8_0 rows and Q8_0 activation rows.
#[allow(clippy::too_many_arguments)] // see dot_rows_tokens_q4_0_q8_0
pub fn dot_rows_tokens_q8_0_q8_0(
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    staged: Option<&Staged>,
    out: &mut [f32],
    out_stride: usize,
) {
    let job = Job {
        format: Format::Q8_0,
        rows,
        row_bytes,
        n_rows,
        acts,
        act_stride: act_row_bytes,
        n_tokens,
        blocks: 0,
        staged,
        out,
        out_stride,
    };
    run_with(kernels(), job);
}

/// The instruction set the entry points run on this machine: `"avx2+avx512-vnni"`,
/// `"avx2+avx-vnni"`, `"avx2"` or `"scalar"`.
pub fn active_isa() -> &'static str {
    kernels().isa
}

/// A weight format with SIMD dot products, and the activation format it is dotted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Q4_0 weights, Q8_0 activations.
    Q4_0,
    /// Q4_1 weights, Q8_1 activations.
    Q4_1,
    /// Q8_0 weights, Q8_0 activations.
    Q8_0,
    /// Q5_0 weights, Q8_0 activations.
    Q5_0,
    /// Q5_1 weights, Q8_1 activations.
    Q5_1,
    /// Q4_K weights, Q8_K activations.
    Q4K,
    /// Q5_K weights, Q8_K activations.
    Q5K,
    /// Q6_K weights, Q8_K activations.
    Q6K,
}

impl Format {
    /// Every format, for tests and tables.
    pub const ALL: [Format; 8] = [
        Format::Q4_0,
        Format::Q4_1,
        Format::Q8_0,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q4K,
        Format::Q5K,
        Format::Q6K,
    ];

    /// The format of weights stored as `dtype`, if it has integer dot products here
    /// (float weights and Q8_K weights take the dequantizing f32 path instead).
    pub fn for_weights(dtype: DType) -> Option<Format> {
        Some(match dtype {
            DType::Q4_0 => Format::Q4_0,
            DType::Q4_1 => Format::Q4_1,
            DType::Q8_0 => Format::Q8_0,
            DType::Q5_0 => Format::Q5_0,
            DType::Q5_1 => Format::Q5_1,
            DType::Q4_K => Format::Q4K,
            DType::Q5_K => Format::Q5K,
            DType::Q6_K => Format::Q6K,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Q4_0 => "Q4_0 x Q8_0",
            Format::Q4_1 => "Q4_1 x Q8_1",
            Format::Q8_0 => "Q8_0 x Q8_0",
            Format::Q5_0 => "Q5_0 x Q8_0",
            Format::Q5_1 => "Q5_1 x Q8_1",
            Format::Q4K => "Q4_K x Q8_K",
            Format::Q5K => "Q5_K x Q8_K",
            Format::Q6K => "Q6_K x Q8_K",
        }
    }

    /// Values of one weight (and activation) block.
    pub fn block_len(self) -> usize {
        match self {
            Format::Q4K | Format::Q5K | Format::Q6K => q8_k::BLOCK_LEN,
            _ => q8_0::BLOCK_LEN,
        }
    }

    /// Bytes of one weight block.
    pub fn weight_bytes(self) -> usize {
        match self {
            Format::Q4_0 => q4_0::BLOCK_BYTES,
            Format::Q4_1 => q4_1::BLOCK_BYTES,
            Format::Q8_0 => q8_0::BLOCK_BYTES,
            Format::Q5_0 => q5_0::BLOCK_BYTES,
            Format::Q5_1 => q5_1::BLOCK_BYTES,
            Format::Q4K => q4_k::BLOCK_BYTES,
            Format::Q5K => q5_k::BLOCK_BYTES,
            Format::Q6K => q6_k::BLOCK_BYTES,
        }
    }

    /// Bytes of one activation block.
    pub fn act_bytes(self) -> usize {
        self.act_blocks().block_bytes()
    }

    /// The activation block format.
    pub fn act_blocks(self) -> ActBlocks {
        match self {
            Format::Q4_0 | Format::Q8_0 | Format::Q5_0 => ActBlocks::Q8_0,
            Format::Q4_1 | Format::Q5_1 => ActBlocks::Q8_1,
            Format::Q4K | Format::Q5K | Format::Q6K => ActBlocks::Q8_K,
        }
    }

    /// The row quantizer of the activation format (`kiln_ir::quant`).
    pub fn quantize_acts(self) -> fn(&[f32], &mut [u8]) {
        match self.act_blocks() {
            ActBlocks::Q8_0 => q8_0::quantize_row,
            ActBlocks::Q8_1 => q8_1::quantize_row,
            ActBlocks::Q8_K => q8_k::quantize_row,
        }
    }

    /// The scalar twin in kiln_ir.
    pub fn scalar_dot(self) -> fn(&[u8], &[u8]) -> f32 {
        match self {
            Format::Q4_0 => kiln_ir::quant::vec_dot_q4_0_q8_0,
            Format::Q4_1 => kiln_ir::quant::vec_dot_q4_1_q8_1,
            Format::Q8_0 => kiln_ir::quant::vec_dot_q8_0_q8_0,
            Format::Q5_0 => kiln_ir::quant::vec_dot_q5_0_q8_0,
            Format::Q5_1 => kiln_ir::quant::vec_dot_q5_1_q8_1,
            Format::Q4K => kiln_ir::quant::vec_dot_q4_k_q8_k,
            Format::Q5K => kiln_ir::quant::vec_dot_q5_k_q8_k,
            Format::Q6K => kiln_ir::quant::vec_dot_q6_k_q8_k,
        }
    }
}

/// One call's operands. After [`Job::checked`], every block a kernel reads and every
/// output it writes is in bounds:
/// - `blocks * weight_bytes == row_bytes` and `n_rows * row_bytes <= rows.len()`;
/// - if `n_tokens > 0`: `(n_tokens - 1) * act_stride + blocks * act_bytes <= acts.len()`,
///   `(n_tokens - 1) * out_stride + n_rows <= out.len()`, and, if `n_tokens > 1`,
///   `act_stride >= blocks * act_bytes` and `out_stride >= n_rows`.
///
/// The kernels rely on these for their raw-pointer reads; nothing below overflows.
#[derive(Debug)]
struct Job<'a> {
    format: Format,
    /// (n_rows, row_bytes) weight rows.
    rows: &'a [u8],
    row_bytes: usize,
    n_rows: usize,
    /// (n_tokens, act_stride) activation rows; the first `blocks` blocks of each are used.
    acts: &'a [u8],
    act_stride: usize,
    n_tokens: usize,
    /// Blocks per row; set by [`Job::checked`].
    blocks: usize,
    /// `acts` staged for the whole launch, if the caller did it.
    staged: Option<&'a Staged>,
    /// (n_tokens, out_stride) results; the first `n_rows` of each row are written.
    out: &'a mut [f32],
    out_stride: usize,
}

impl Job<'_> {
    /// Validates the lengths (panicking with the format and sizes on a caller bug) and
    /// sets `blocks`.
    fn checked(mut self) -> Self {
        let name = self.format.name();
        let (wb, ab) = (self.format.weight_bytes(), self.format.act_bytes());
        assert!(
            self.row_bytes.is_multiple_of(wb),
            "{name}: a row of {} bytes is not whole {wb}-byte blocks",
            self.row_bytes
        );
        self.blocks = self.row_bytes / wb;
        let rows_need = self.n_rows.checked_mul(self.row_bytes);
        assert!(
            rows_need.is_some_and(|n| n <= self.rows.len()),
            "{name}: {} rows of {} bytes do not fit in {} bytes",
            self.n_rows,
            self.row_bytes,
            self.rows.len()
        );
        if let Some(staged) = self.staged {
            assert!(
                staged.format == self.format.act_blocks()
                    && staged.n_tokens == self.n_tokens
                    && staged.blocks == self.blocks,
                "{name}: staged activations of {} tokens of {} {:?} blocks for {} tokens of {}",
                staged.n_tokens,
                staged.blocks,
                staged.format,
                self.n_tokens,
                self.blocks
            );
        }
        if self.n_tokens == 0 {
            return self;
        }
        let act_row = self.blocks.checked_mul(ab);
        let multi = self.n_tokens > 1;
        let acts_need = act_row.and_then(|row| {
            if multi && self.act_stride < row {
                return None;
            }
            (self.n_tokens - 1)
                .checked_mul(self.act_stride)
                .and_then(|n| n.checked_add(row))
        });
        assert!(
            acts_need.is_some_and(|n| n <= self.acts.len()),
            "{name}: {} activation rows of {} blocks every {} bytes do not fit in {} bytes",
            self.n_tokens,
            self.blocks,
            self.act_stride,
            self.acts.len()
        );
        let out_need = if multi && self.out_stride < self.n_rows {
            None
        } else {
            (self.n_tokens - 1)
                .checked_mul(self.out_stride)
                .and_then(|n| n.checked_add(self.n_rows))
        };
        assert!(
            out_need.is_some_and(|n| n <= self.out.len()),
            "{name}: ({}, {}) results every {} values do not fit in {} values",
            self.n_tokens,
            self.n_rows,
            self.out_stride,
            self.out.len()
        );
        self
    }
}

/// A kernel over a checked [`Job`].
///
/// Safety contract: called only with a `Job` that passed [`Job::checked`], and, for the
/// SIMD kernels, only on a CPU with the features they were compiled for.
type Kernel = unsafe fn(&mut Job<'_>);

/// The kernel chosen for this machine.
#[derive(Debug)]
struct Kernels {
    isa: &'static str,
    run: Kernel,
}

/// The scalar path: the kiln_ir twins, one (row, token) pair at a time.
const SCALAR: Kernels = Kernels {
    isa: "scalar",
    run: scalar_job,
};

/// The kernels for this machine, detected on first use.
fn kernels() -> &'static Kernels {
    static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if avx2::detected_avx512_vnni() {
            return &avx2::KERNELS_AVX512_VNNI;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::detected_vnni() {
            return &avx2::KERNELS_VNNI;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2::detected() {
            return &avx2::KERNELS;
        }
        &SCALAR
    })
}

/// Checks a job and runs it on the given kernels (tests pass [`SCALAR`] to force that
/// path). The only way jobs reach a kernel.
fn run_with(kernels: &Kernels, job: Job<'_>) {
    let mut job = job.checked();
    // SAFETY: the job passed `Job::checked` just above; `kernels` is `SCALAR` (no CPU
    // requirement) or a table from `kernels()`, which picks the AVX2 one only after
    // detecting its features (tests name it under the same condition).
    unsafe { (kernels.run)(&mut job) }
}

/// Dot product of one weight row in `format` with one activation row of as many blocks
/// in its activation format (SIMD twin of the format's `kiln_ir::quant::vec_dot_*`).
/// Precondition as for [`vec_dot_q4_0_q8_0`].
pub fn vec_dot(format: Format, row: &[u8], act: &[u8]) -> f32 {
    vec_dot_with(kernels(), format, row, act)
}

fn vec_dot_with(kernels: &Kernels, format: Format, row: &[u8], act: &[u8]) -> f32 {
    let (wb, ab) = (format.weight_bytes(), format.act_bytes());
    debug_assert!(
        row.len().is_multiple_of(wb)
            && act.len().is_multiple_of(ab)
            && row.len() / wb == act.len() / ab,
        "{}: rows of {} and {} bytes are not the same whole number of blocks",
        format.name(),
        row.len(),
        act.len()
    );
    // Like the twin's zip of whole blocks: the shorter row sets the length.
    let blocks = (row.len() / wb).min(act.len() / ab);
    let mut out = [0.0f32];
    let job = Job {
        format,
        rows: row,
        row_bytes: blocks * wb,
        n_rows: 1,
        acts: act,
        act_stride: blocks * ab,
        n_tokens: 1,
        blocks: 0,
        staged: None,
        out: &mut out,
        out_stride: 1,
    };
    run_with(kernels, job);
    out[0]
}

/// [`dot_rows_q4_0_q8_0`] for any format: `n_rows` rows of `format` against one
/// activation row. Panics as [`dot_rows_q4_0_q8_0`] does.
pub fn dot_rows(
    format: Format,
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    act: &[u8],
    out: &mut [f32],
) {
    dot_rows_with(kernels(), format, rows, row_bytes, n_rows, act, out);
}

/// [`dot_rows_tokens_q4_0_q8_0`] for any format: `n_rows` rows of `format` against
/// `n_tokens` activation rows in its activation format. `staged` (the K-quants ignore it:
/// their Q8_K blocks are read in place) and the panics as there.
#[allow(clippy::too_many_arguments)] // see dot_rows_tokens_q4_0_q8_0
pub fn dot_rows_tokens(
    format: Format,
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    acts: &[u8],
    act_row_bytes: usize,
    n_tokens: usize,
    staged: Option<&Staged>,
    out: &mut [f32],
    out_stride: usize,
) {
    let job = Job {
        format,
        rows,
        row_bytes,
        n_rows,
        acts,
        act_stride: act_row_bytes,
        n_tokens,
        blocks: 0,
        staged,
        out,
        out_stride,
    };
    run_with(kernels(), job);
}

fn dot_rows_with(
    kernels: &Kernels,
    format: Format,
    rows: &[u8],
    row_bytes: usize,
    n_rows: usize,
    act: &[u8],
    out: &mut [f32],
) {
    let (wb, ab) = (format.weight_bytes(), format.act_bytes());
    // (A row that is not whole blocks is reported by `Job::checked`.)
    assert!(
        !row_bytes.is_multiple_of(wb) || act.len() == row_bytes / wb * ab,
        "{}: an activation row of {} bytes does not match weight rows of {row_bytes} bytes",
        format.name(),
        act.len()
    );
    let job = Job {
        format,
        rows,
        row_bytes,
        n_rows,
        acts: act,
        act_stride: act.len(),
        n_tokens: 1,
        blocks: 0,
        staged: None,
        out,
        out_stride: n_rows,
    };
    run_with(kernels, job);
}

/// [`Kernel`] of the scalar path (a safe fn; the table's pointer type is `unsafe`).
fn scalar_job(job: &mut Job<'_>) {
    let dot = job.format.scalar_dot();
    let row_len = job.blocks * job.format.weight_bytes();
    let act_len = job.blocks * job.format.act_bytes();
    for t in 0..job.n_tokens {
        let act = &job.acts[t * job.act_stride..][..act_len];
        let out = &mut job.out[t * job.out_stride..][..job.n_rows];
        for (r, o) in out.iter_mut().enumerate() {
            *o = dot(&job.rows[r * job.row_bytes..][..row_len], act);
        }
    }
}
