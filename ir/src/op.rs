//! The closed set of operations. Primitive ops are what a model is described with;
//! fused ops are what the passes in [`crate::passes`] turn groups of primitives into.
//! A backend's `supports` is a `match` over this enum.
//!
//! Activations are row-major f32 matrices of shape (rows, cols), where rows is one of the
//! symbolic dimensions of [`crate::graph::Rows`] (tokens of the step, or the rows whose
//! logits are wanted). Weights are referenced by [`WeightId`] and stay in their stored dtype.

use std::fmt;

/// A weight of the graph (an index into [`crate::graph::Graph::weights`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightId(pub u32);

/// Which dimensions of a head RoPE rotates together (ggml's two modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RopeMode {
    /// ggml's "normal" mode: adjacent pairs (x[2i], x[2i+1]). Llama GGUF files store q/k
    /// rows permuted for it.
    #[default]
    Normal,
    /// GPT-NeoX halves: pairs (x[i], x[i + rope_dims/2]) (Gemma, Qwen, ...).
    Neox,
}

/// RoPE: pair i of the first `rope_dims` of each head (paired as `mode` says) rotates by
/// pos·freq_scale·theta^(-2i/rope_dims) / factor_i.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub head_dim: usize,
    pub rope_dims: usize,
    pub theta: f32,
    pub freq_scale: f32,
    /// Per-frequency divisors (Llama 3.1 `rope_freqs`), a vector weight of rope_dims/2.
    pub freq_factors: Option<WeightId>,
    pub mode: RopeMode,
}

/// Grouped-query attention of one layer: its geometry, its score scale, its window, and
/// where its K/V live in the paged cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    pub layer: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Scores are q·k × scale.
    pub scale: f32,
    /// Sliding window: the token at position p attends to positions > p − window only.
    /// None: to every position up to p.
    pub window: Option<usize>,
    /// The KV group whose pages hold this layer's K/V (a step carries one block table per
    /// group and sequence; see `kv_groups`), and the layer's slot within those pages.
    pub kv_group: usize,
    pub kv_slot: usize,
}

impl AttentionParams {
    /// Causal attention over every earlier position with the usual 1/√head_dim scale,
    /// K/V in slot `layer` of group 0 (one page holds every layer).
    pub fn new(layer: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        AttentionParams {
            layer,
            n_heads,
            n_kv_heads,
            head_dim,
            scale: Self::default_scale(head_dim),
            window: None,
            kv_group: 0,
            kv_slot: layer,
        }
    }

    /// 1/√head_dim, computed as every builder and kernel computes it.
    pub fn default_scale(head_dim: usize) -> f32 {
        1.0 / (head_dim as f32).sqrt()
    }

    /// Attention a kernel without windows, scales or KV groups runs: full causal, the
    /// default scale, the K/V of slot `layer` in group 0.
    pub fn is_plain(&self) -> bool {
        self.window.is_none()
            && self.scale == Self::default_scale(self.head_dim)
            && self.kv_group == 0
            && self.kv_slot == self.layer
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// The first position the token at `pos` attends to.
    pub fn first_position(&self, pos: usize) -> usize {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ---- primitives ----
    /// token ids → (tokens, d): rows of the embedding table.
    Embed { table: WeightId },
    /// (r, d) → (r, d): x / sqrt(mean(x²) + eps) · weight.
    RmsNorm { weight: WeightId, eps: f32 },
    /// (r, k) → (r, n_i) for each weight i: x · W_iᵀ. Several weights sharing one input
    /// (q/k/v, gate/up) are one op after `fuse_sibling_matmuls`.
    MatMul { weights: Vec<WeightId> },
    /// (r, d), (r, d) → (r, d).
    Add,
    /// (r, d) → (r, d): x + bias, one vector weight of d added to every row (Qwen 2's
    /// q/k/v projection biases).
    AddBias { bias: WeightId },
    /// (r, d) → (r, d): x · factor (Gemma's embeddings, scaled by √d).
    Scale { factor: f32 },
    /// (r, heads·head_dim) → same: every head of `head_dim` values normalised like
    /// RmsNorm, with one weight of `head_dim` shared by the heads (QK-norm).
    HeadRmsNorm {
        weight: WeightId,
        eps: f32,
        head_dim: usize,
    },
    /// gate (r, f), up (r, f) → (r, f): silu(gate) · up.
    SwiGlu,
    /// gate (r, f), up (r, f) → (r, f): gelu_tanh(gate) · up, GELU in its tanh form
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    GeGlu,
    /// (tokens, heads·head_dim) → same, rotated at each token's position.
    Rope { rope: RopeParams },
    /// k (tokens, kv_dim), v (tokens, kv_dim) → nothing: stored in the sequence's KV pages.
    KvWrite { attention: AttentionParams },
    /// q (tokens, q_dim) → (tokens, q_dim): causal attention over the sequence's KV pages.
    Attention { attention: AttentionParams },
    /// (tokens, d) → (outputs, d): the rows whose logits the step wants.
    SelectRows,

    // ---- fused ----
    /// RmsNorm feeding one or more matmuls: (r, d) → (r, n_i) per weight.
    RmsNormMatMul {
        norm: WeightId,
        eps: f32,
        weights: Vec<WeightId>,
    },
    /// matmul with gate and up weights and the SwiGLU epilogue: (r, d) → (r, f).
    MatMulSwiGlu { gate: WeightId, up: WeightId },
    /// RmsNorm, gate/up matmuls and SwiGLU: (r, d) → (r, f).
    RmsNormMatMulSwiGlu {
        norm: WeightId,
        eps: f32,
        gate: WeightId,
        up: WeightId,
    },
    /// matmul with gate and up weights and the GeGLU epilogue: (r, d) → (r, f).
    MatMulGeGlu { gate: WeightId, up: WeightId },
    /// RmsNorm, gate/up matmuls and GeGLU: (r, d) → (r, f).
    RmsNormMatMulGeGlu {
        norm: WeightId,
        eps: f32,
        gate: WeightId,
        up: WeightId,
    },
    /// matmul with the residual added in its epilogue: x (r, k), residual (r, n) → (r, n).
    MatMulAdd { weight: WeightId },
    /// A sublayer's output normalised, then added to the residual (Gemma's post-norms):
    /// h (r, d), residual (r, d) → residual + rmsnorm(h)·weight.
    RmsNormAdd { weight: WeightId, eps: f32 },
    /// RoPE of q and k and the KV page write in one pass:
    /// q (tokens, q_dim), k, v (tokens, kv_dim) → rotated q (tokens, q_dim).
    RopeKvWrite {
        rope: RopeParams,
        attention: AttentionParams,
    },
    /// QK-norm (HeadRmsNorm of q and of k, each with its own weight), RoPE of both and the
    /// KV page write: q (tokens, q_dim), k, v (tokens, kv_dim) → normed, rotated q.
    QkNormRopeKvWrite {
        q_norm: WeightId,
        k_norm: WeightId,
        eps: f32,
        rope: RopeParams,
        attention: AttentionParams,
    },
}

impl Op {
    /// Stable name of the op, the stem of its kernels' names and files.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Embed { .. } => "embed",
            Op::RmsNorm { .. } => "rmsnorm",
            Op::MatMul { .. } => "matmul",
            Op::Add => "add",
            Op::AddBias { .. } => "add_bias",
            Op::Scale { .. } => "scale",
            Op::HeadRmsNorm { .. } => "head_rmsnorm",
            Op::SwiGlu => "swiglu",
            Op::GeGlu => "geglu",
            Op::Rope { .. } => "rope",
            Op::KvWrite { .. } => "kv_write",
            Op::Attention { .. } => "attention",
            Op::SelectRows => "select_rows",
            Op::RmsNormMatMul { .. } => "rmsnorm_matmul",
            Op::MatMulSwiGlu { .. } => "matmul_swiglu",
            Op::RmsNormMatMulSwiGlu { .. } => "rmsnorm_matmul_swiglu",
            Op::MatMulGeGlu { .. } => "matmul_geglu",
            Op::RmsNormMatMulGeGlu { .. } => "rmsnorm_matmul_geglu",
            Op::MatMulAdd { .. } => "matmul_add",
            Op::RmsNormAdd { .. } => "rmsnorm_add",
            Op::RopeKvWrite { .. } => "rope_kv_write",
            Op::QkNormRopeKvWrite { .. } => "qk_norm_rope_kv_write",
        }
    }

    pub fn is_fused(&self) -> bool {
        matches!(
            self,
            Op::RmsNormMatMul { .. }
                | Op::MatMulSwiGlu { .. }
                | Op::RmsNormMatMulSwiGlu { .. }
                | Op::MatMulGeGlu { .. }
                | Op::RmsNormMatMulGeGlu { .. }
                | Op::MatMulAdd { .. }
                | Op::RmsNormAdd { .. }
                | Op::RopeKvWrite { .. }
                | Op::QkNormRopeKvWrite { .. }
        )
    }

    /// Whether the op is one the kernels written for the Llama family run: not one of Gemma
    /// 3's ops nor Qwen 2's bias add, RoPE in ggml's normal mode, attention without a
    /// window, another scale or KV groups. A backend without those kernels answers
    /// `supports` with it.
    pub fn is_plain(&self) -> bool {
        let gemma_op = matches!(
            self,
            Op::AddBias { .. }
                | Op::Scale { .. }
                | Op::HeadRmsNorm { .. }
                | Op::GeGlu
                | Op::MatMulGeGlu { .. }
                | Op::RmsNormMatMulGeGlu { .. }
                | Op::RmsNormAdd { .. }
                | Op::QkNormRopeKvWrite { .. }
        );
        !gemma_op
            && self.rope().is_none_or(|r| r.mode == RopeMode::Normal)
            && self.attention().is_none_or(AttentionParams::is_plain)
    }

    /// The attention a KV op or attention op works for.
    pub fn attention(&self) -> Option<&AttentionParams> {
        match self {
            Op::KvWrite { attention }
            | Op::Attention { attention }
            | Op::RopeKvWrite { attention, .. }
            | Op::QkNormRopeKvWrite { attention, .. } => Some(attention),
            _ => None,
        }
    }

    /// The RoPE an op applies.
    pub fn rope(&self) -> Option<&RopeParams> {
        match self {
            Op::Rope { rope }
            | Op::RopeKvWrite { rope, .. }
            | Op::QkNormRopeKvWrite { rope, .. } => Some(rope),
            _ => None,
        }
    }

    /// The matrix weights the op multiplies by (their dtype names the kernel variant).
    pub fn matrices(&self) -> Vec<WeightId> {
        match self {
            Op::Embed { table } => vec![*table],
            Op::MatMul { weights } | Op::RmsNormMatMul { weights, .. } => weights.clone(),
            Op::MatMulSwiGlu { gate, up }
            | Op::RmsNormMatMulSwiGlu { gate, up, .. }
            | Op::MatMulGeGlu { gate, up }
            | Op::RmsNormMatMulGeGlu { gate, up, .. } => vec![*gate, *up],
            Op::MatMulAdd { weight } => vec![*weight],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
