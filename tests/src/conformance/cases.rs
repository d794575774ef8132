//! The case table: every case of the suite, the limits on their errors, and the case type.
//! The graphs, data and expected outputs are built in `ops.rs` (one builder per op
//! family) from the blocks of `build.rs`.
//!
//! Case names are `<family>_<variant>`, both identifiers: `conformance_suite!` lists them
//! and makes the test `<backend>::<family>::<variant>` of each.

use std::fmt;

use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;

use super::gemma_ops::{add_bias, head_rmsnorm, rmsnorm_add, scale};
use super::ops::{
    Glu, add, attention_case, geglu, matmul, matmul_add, matmul_glu, matmul_outliers, rmsnorm,
    rope, swiglu,
};
use super::{Built, Rng};

pub use super::ops::{AttentionSpec, GemmaAttention, RopeSpec};

// ---- limits on the error (NMSE), from measurements on the CPU backend ----

/// f32 arithmetic against the f64 oracle, f32/F16/BF16 weights: rounding only
/// (measured 7e-16 to 3.2e-14).
pub const F32_LIMIT: f64 = 1e-11;
/// Matmuls whose activations are quantized to Q8_0 (Q4_0, Q5_0, Q8_0 weights) or Q8_1
/// (Q4_1, Q5_1 weights) blocks, against f32 activations (measured 5.5e-6 to 3.6e-5;
/// SwiGLU after the matmul doubles it).
pub const Q8_ACTS_LIMIT: f64 = 1e-4;
/// The same with Q8_K activations (Q4_K, Q5_K, Q6_K weights; Q8_K weights too, whatever
/// a backend does with them): one scale per 256 values, so about twice the error
/// (measured 1.8e-5 to 3.6e-5, 8.2e-5 after RMSNorm and SwiGLU).
pub const Q8K_ACTS_LIMIT: f64 = 3e-4;
/// GeGLU: the CPU backend computes GELU as llama.cpp does, from and to f16 (two roundings
/// of 2^-11 relative; measured NMSE 5e-10 to 1.1e-7 against the exact function).
pub const GELU_F16_LIMIT: f64 = 1e-6;
/// Attention over an F16 KV cache, against f32 K and V (measured 6.3e-8 to 9.3e-8).
pub const KV_F16_LIMIT: f64 = 5e-7;
/// Attention over an FP8 E4M3 KV cache with per-(token, head) scales, against f32 K and
/// V (measured 1.1e-3 to 1.5e-3). Three mantissa bits leave about 6e-4 on V alone; K's
/// error moves the softmax weights and adds as much again.
pub const KV_FP8_LIMIT: f64 = 3e-3;
/// Random shapes (the proptests) go down to a single output row, where an NMSE is a
/// small, noisy sample: they allow this many times the case's limit. Measured over 1500
/// random attention shapes, the worst was 5.4× the FP8 median and 6.5× the F16 one; the
/// bugs random shapes hunt (a wrong page, row or head at an odd size) are off by orders of
/// magnitude.
pub const RANDOM_SHAPE_SLACK: f64 = 4.0;

/// The largest squared error of one element over the mean square of the expected
/// outputs, as a multiple of the case's NMSE limit, for the cases checked element by
/// element: the worst of a few thousand elements of Gaussian error is about 20× their
/// mean; an element left unwritten is about 2/limit (1e4× and more).
pub const ELEMENT_SLACK: f64 = 100.0;

/// RMSNorm epsilon of every case.
pub const EPS: f32 = 1e-5;

/// The weight types of the matmul family with 32-value (or no) blocks.
pub const WEIGHT_DTYPES: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
];

/// The K-quant weight types (256-value super-blocks: rows of 256, 512 and 768 values).
/// Q8_K is an activation format in ggml; kiln also loads it as a weight type.
pub const K_WEIGHT_DTYPES: [DType; 4] = [DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K];

/// Every case of the suite. Shapes avoid multiples of tiles and pages: 1, 3, 7, 19 and
/// 33 tokens; widths of an odd number of 32-value blocks (96, 160, 608 = 576 + 32) or of
/// 1 to 3 super-blocks for the K-quants; matmul row counts that are not multiples of 32;
/// contexts of 1, 17, 40 and 43 over pages of 16 and 5, several sequences per step.
#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        //     tokens, width
        rmsnorm(1, 96),
        rmsnorm(33, 608),
        add(7, 160),
        swiglu(33, 96),
        //   tokens, heads, head_dim, (rope_dims, theta)
        rope(7, 3, 64, RopeSpec::new(64, 10_000.0)),
        rope(3, 2, 128, RopeSpec::new(128, 500_000.0).with_factors()),
        rope(33, 2, 64, RopeSpec::new(32, 10_000.0).with_freq_scale(0.5)),
        rope(1, 1, 128, RopeSpec::new(64, 1e6).with_factors()),
        // Gemma 3: NeoX pairs, heads of 256; the embedding scale √640; QK-norm over heads
        // of 256; post-norms added to the residual; GeGLU.
        rope(7, 4, 256, RopeSpec::new(256, 1e6).neox()),
        rope(3, 2, 64, RopeSpec::new(32, 10_000.0).neox().with_factors()),
        scale(7, 640, 640f32.sqrt()),
        head_rmsnorm(33, 4, 256),
        head_rmsnorm(1, 1, 256),
        rmsnorm_add(33, 608),
        geglu(33, 96),
        // Qwen 2: q/k/v biases (a width that is not a multiple of 32).
        add_bias(33, 200),
        add_bias(1, 64),
    ];
    for dtype in WEIGHT_DTYPES {
        cases.extend([
            //     family, weight dtypes, tokens, k, rows of each weight
            matmul("matmul", vec![dtype], 1, 608, vec![67]),
            matmul("matmul", vec![dtype], 33, 160, vec![131]),
            matmul("matmul3", vec![dtype; 3], 7, 96, vec![96, 32, 32]),
            matmul("rmsnorm_matmul3", vec![dtype; 3], 33, 160, vec![160, 32, 32]),
            //         unit, norm, dtype, tokens, k, n
            matmul_glu(Glu::Swi, false, dtype, 7, 96, 131),
            matmul_glu(Glu::Swi, true, dtype, 3, 608, 96),
            matmul_glu(Glu::Ge, false, dtype, 7, 96, 131),
            matmul_glu(Glu::Ge, true, dtype, 33, 640, 96),
            matmul_add(dtype, 33, 160, 96),
            // 19 tokens: three tiles of 8 in one workgroup of the WGSL int8 matvec (steps
            // of at most 32 rows), with its residual and its RMSNorm'd quantization.
            matmul_add(dtype, 19, 608, 97),
            matmul("rmsnorm_matmul3", vec![dtype; 3], 19, 96, vec![67, 32, 33]),
        ]);
    }
    // K-quant rows are whole super-blocks: widths of 1, 2 and 3 of them; row counts
    // still odd (no multiple of a tile of 4 or a task of 32).
    for dtype in K_WEIGHT_DTYPES {
        cases.extend([
            matmul("matmul", vec![dtype], 1, 768, vec![67]),
            matmul("matmul", vec![dtype], 33, 256, vec![131]),
            matmul("matmul3", vec![dtype; 3], 7, 512, vec![97, 33, 35]),
            matmul("rmsnorm_matmul3", vec![dtype; 3], 33, 256, vec![161, 33, 31]),
            matmul_glu(Glu::Swi, false, dtype, 7, 512, 131),
            matmul_glu(Glu::Swi, true, dtype, 3, 768, 97),
            matmul_glu(Glu::Ge, false, dtype, 7, 512, 131),
            matmul_glu(Glu::Ge, true, dtype, 33, 768, 97),
            matmul_add(dtype, 33, 256, 97),
            // 19 tokens: the WGSL int8 matvec's batched steps (as for the 32-value types).
            matmul_add(dtype, 19, 512, 97),
            matmul("rmsnorm_matmul3", vec![dtype; 3], 19, 256, vec![67, 32, 33]),
        ]);
    }
    // Steps of many tokens (the WGSL kernels' tiled GEMM: tiles of 64 tokens by 64
    // weight rows, or 32 output columns of gate and up, K-steps of 32 columns): 37, 70
    // and 130 tokens (one to three tiles, the last partial), row counts that leave a
    // partial tile; the floats' 200 columns end inside a K-step. Every weight type plain
    // and gated; every epilogue on F32 (the strictest limit) and Q4_K (super-blocks). With
    // the 33-token cases above, each weight type meets each epilogue's parts. Every
    // element checked.
    let gemm_k = |dtype: DType| match dtype.block_len() {
        256 => 256,
        32 => 160,
        _ => 200,
    };
    for dtype in WEIGHT_DTYPES.into_iter().chain(K_WEIGHT_DTYPES) {
        let k = gemm_k(dtype);
        cases.extend([
            matmul("matmul", vec![dtype], 130, k, vec![67]),
            matmul_glu(Glu::Swi, false, dtype, 70, k, 131),
        ].map(Case::each_element));
    }
    for dtype in [DType::F32, DType::Q4_K] {
        let k = gemm_k(dtype);
        cases.extend([
            matmul_add(dtype, 70, k, 67),
            matmul("rmsnorm_matmul", vec![dtype], 37, k, vec![97]),
            matmul_glu(Glu::Swi, true, dtype, 37, k, 67),
            matmul_glu(Glu::Ge, false, dtype, 130, k, 33),
            matmul_glu(Glu::Ge, true, dtype, 70, k, 131),
        ].map(Case::each_element));
    }
    // Inputs over a real model's range (rows of 1e-2 to 1e2, outlier columns to 2e5, past
    // f16's 65504): the f16 tiles of the GEMM scale each token and weight unit by a power
    // of two, so nothing overflows. Q4_K's 19 tokens take the WGSL int8 path.
    cases.extend([
        matmul_outliers(DType::Q4_0, 70, 160, 67),
        matmul_outliers(DType::Q6_K, 37, 256, 33),
        matmul_outliers(DType::Q4_K, 19, 256, 33),
    ].map(Case::each_element));
    // Q4_0, Q5_0 and Q8_0 share Q8_0 activations, Q4_1 takes Q8_1 ones, BF16 f32 ones;
    // the K-quants share Q8_K ones (a Q4_K_M mix: Q4_K, Q6_K and a Q5_0 fallback).
    cases.push(matmul("matmul3", vec![DType::Q4_1, DType::Q8_0, DType::Q4_0], 7, 96, vec![96, 32, 64]));
    cases.push(matmul("matmul3", vec![DType::Q4_0, DType::BF16, DType::Q8_0], 7, 96, vec![96, 32, 64]));
    cases.push(matmul("matmul3", vec![DType::Q4_K, DType::Q6_K, DType::Q5_0], 7, 512, vec![97, 33, 64]));
    cases.push(matmul("matmul3", vec![DType::Q5_1, DType::Q5_K, DType::Q4_K], 7, 512, vec![35, 67, 33]));

    use KvDtype::{F8E4M3 as FP8, F16};
    // head_dim, heads, KV heads, KV type, page size, per sequence (context, last step)
    let attention = |head_dim, n_heads, n_kv_heads, kv, page_size, seqs: &[(usize, usize)]| {
        attention_case(AttentionSpec::plain(head_dim, n_heads, n_kv_heads, kv, page_size, seqs))
    };
    cases.push(attention(64, 2, 2, FP8, 16, &[(1, 1), (17, 1), (40, 8)]));
    cases.push(attention(128, 2, 2, F16, 5, &[(17, 3), (1, 1), (40, 1)]));
    for kv in [FP8, F16] {
        for page_size in [16, 5] {
            cases.push(attention(128, 3, 1, kv, page_size, &[(43, 1), (17, 17), (1, 1)]));
            cases.push(attention(64, 8, 2, kv, page_size, &[(17, 2), (1, 1), (40, 33)]));
        }
    }
    // GQA 8 and 16 (two query-head blocks per KV head in the CUDA decode kernel), and
    // contexts long enough that a GPU splits them: 2100 positions give 4 splits of a
    // 4-token step, the 37-position sequence then has two empty splits, the 1100 one a
    // partial last tile; pages of 5 leave a partial last page. Long contexts are F16: the
    // step that writes them is thousands of rows, where one zeroed row hides under the
    // FP8 limit (check_limits_can_fail).
    cases.push(attention(128, 8, 1, F16, 16, &[(2100, 1), (37, 2), (1100, 1)]));
    cases.push(attention(64, 16, 1, FP8, 5, &[(130, 1), (5, 5)]));
    // A final step of 170 tokens: CUDA's tensor-core prefill (FP8), whose second 64-row
    // tile holds the end of one sequence and the start of the next.
    cases.push(attention(128, 8, 2, FP8, 16, &[(150, 100), (70, 70)]));
    // More of the tensor-core prefill (steps of over 64 tokens): heads of 36 (padded to 64,
    // rows not 16-byte aligned) in groups of 5 (12 tokens a block, three sequences in one
    // block); heads of 128 without GQA over pages of 5; 66 heads over one KV head (two
    // blocks of heads, the second of 2).
    cases.push(attention(36, 5, 1, FP8, 5, &[(70, 40), (3, 3), (90, 30)]));
    cases.push(attention(128, 2, 2, FP8, 5, &[(130, 70), (66, 66)]));
    cases.push(attention(32, 66, 1, FP8, 16, &[(67, 67)]));
    // RopeKvWrite, checked twice: its rotated q, and the attention over what it stored.
    let roped = |head_dim, n_heads, kv, page_size, rope, seqs: &[(usize, usize)], gemma| {
        [true, false].map(|check_q| {
            let spec = AttentionSpec { rope: Some(rope), check_q, gemma, ..AttentionSpec::plain(head_dim, n_heads, 1, kv, page_size, seqs) };
            attention_case(spec)
        })
    };
    cases.extend(roped(64, 3, FP8, 16, RopeSpec::new(64, 10_000.0), &[(17, 1), (40, 7)], None));
    let partial = RopeSpec::new(96, 500_000.0).with_freq_scale(0.25).with_factors();
    cases.extend(roped(128, 4, F16, 5, partial, &[(1, 1), (43, 2), (17, 17)], None));

    // Gemma 3 270M's attention: 4 heads over 1 KV head of 256, sliding windows smaller
    // than the contexts and not a multiple of the page size (the pages behind every
    // query's window NO_PAGE in the step, as the KV manager hands them out), windows
    // smaller than the step, a scale other than 1/√256, K/V in slot 1 of KV group 1.
    let gemma = |window, scale, grouped| Some(GemmaAttention { window, scale, qk_norm: false, grouped });
    let windowed = |kv, page_size, seqs: &[(usize, usize)], g| {
        attention_case(AttentionSpec { gemma: g, ..AttentionSpec::plain(256, 4, 1, kv, page_size, seqs) })
    };
    for kv in [FP8, F16] {
        cases.push(windowed(kv, 16, &[(100, 1), (60, 7), (5, 5)], gemma(Some(37), None, false)));
        cases.push(windowed(kv, 5, &[(70, 1), (43, 33)], gemma(Some(13), Some(0.08), true)));
    }
    // Prefill steps (70 and 120 tokens) longer than the window: the tensor-core prefill at
    // 256 dims.
    cases.push(windowed(FP8, 16, &[(150, 80), (40, 40)], gemma(Some(37), None, false)));
    // A window of 5 under steps of 17 and 33 tokens; a window of 1 (each query itself).
    cases.push(windowed(F16, 16, &[(43, 17), (20, 1), (40, 33)], gemma(Some(5), None, true)));
    cases.push(windowed(F16, 3, &[(11, 4), (7, 1)], gemma(Some(1), None, false)));
    // Full attention with another scale in group 1 (Gemma's global layers).
    cases.push(windowed(FP8, 16, &[(40, 3), (17, 17)], gemma(None, Some(0.05), true)));
    // QK-norm + NeoX RoPE + KV write (Gemma's fused op), its q and the attention after it.
    let qk = Some(GemmaAttention { window: Some(29), scale: None, qk_norm: true, grouped: true });
    cases.extend(roped(256, 4, FP8, 16, RopeSpec::new(256, 10_000.0).neox(), &[(80, 3), (17, 17)], qk));
    let qk_full = Some(GemmaAttention { window: None, scale: Some(0.0625), qk_norm: true, grouped: false });
    cases.extend(roped(256, 4, F16, 5, RopeSpec::new(256, 1e6).neox(), &[(43, 2), (1, 1)], qk_full));
    // RoPE + KV write in NeoX mode, no QK-norm.
    cases.extend(roped(64, 2, F16, 16, RopeSpec::new(64, 1e6).neox(), &[(17, 1), (40, 7)], None));
    cases
}

pub(super) fn matmul_limit(dtype: DType) -> f64 {
    if dtype.block_len() == 256 {
        Q8K_ACTS_LIMIT
    } else if dtype.is_quantized() {
        Q8_ACTS_LIMIT
    } else {
        F32_LIMIT
    }
}

pub(super) fn kv_limit(kv: KvDtype) -> f64 {
    match kv {
        KvDtype::F16 => KV_F16_LIMIT,
        KvDtype::F8E4M3 => KV_FP8_LIMIT,
    }
}

// ---- the case type ----

/// How a case's error is normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Σ(out − ref)² / Σ ref².
    Nmse,
    /// Σ(out − ref)² / Σ power, where an output's power is Σᵢ (wᵢ·xᵢ)² over the products
    /// a matmul sums: ref² on average, but never near zero when a draw of a few outputs
    /// happens to cancel. For random shapes down to one output element.
    TermPower,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Nmse => "NMSE",
            Metric::TermPower => "NMSE/term power",
        })
    }
}

/// One case: a name, the shapes in words, the limit on its error, and the function that
/// builds its graph, random data and expected outputs.
pub struct Case {
    pub name: String,
    pub shape: String,
    pub limit: f64,
    pub metric: Metric,
    /// Each output element checked too: its squared error at most this times the mean
    /// square of the expected outputs (an element left unwritten, or written from the
    /// wrong row or column, fails where the NMSE of a large output could hide it).
    pub element_limit: Option<f64>,
    builder: Box<dyn Fn(&mut Rng) -> Built + Send + Sync>,
}

impl Case {
    pub(super) fn new(
        name: String,
        shape: String,
        limit: f64,
        builder: impl Fn(&mut Rng) -> Built + Send + Sync + 'static,
    ) -> Case {
        Case {
            name,
            shape,
            limit,
            metric: Metric::Nmse,
            element_limit: None,
            builder: Box::new(builder),
        }
    }

    /// The case with every element held to [`ELEMENT_SLACK`] times its limit.
    pub(super) fn each_element(mut self) -> Case {
        self.element_limit = Some(ELEMENT_SLACK * self.limit);
        self
    }

    /// The case made concrete, with data seeded by its name.
    pub fn build(&self) -> Built {
        (self.builder)(&mut Rng::from_name(&self.name))
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Case({}: {}, limit {:e})",
            self.name, self.shape, self.limit
        )
    }
}
