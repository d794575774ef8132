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

/// RoPE in ggml's "normal" mode: adjacent pairs (x[2i], x[2i+1]) of the first
/// `rope_dims` of each head rotate by pos·freq_scale·theta^(-2i/rope_dims) / factor_i.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub head_dim: usize,
    pub rope_dims: usize,
    pub theta: f32,
    pub freq_scale: f32,
    /// Per-frequency divisors (Llama 3.1 `rope_freqs`), a vector weight of rope_dims/2.
    pub freq_factors: Option<WeightId>,
}

/// Grouped-query attention geometry of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionParams {
    pub layer: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionParams {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
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
    /// gate (r, f), up (r, f) → (r, f): silu(gate) · up.
    SwiGlu,
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
    /// matmul with the residual added in its epilogue: x (r, k), residual (r, n) → (r, n).
    MatMulAdd { weight: WeightId },
    /// RoPE of q and k and the KV page write in one pass:
    /// q (tokens, q_dim), k, v (tokens, kv_dim) → rotated q (tokens, q_dim).
    RopeKvWrite {
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
            Op::SwiGlu => "swiglu",
            Op::Rope { .. } => "rope",
            Op::KvWrite { .. } => "kv_write",
            Op::Attention { .. } => "attention",
            Op::SelectRows => "select_rows",
            Op::RmsNormMatMul { .. } => "rmsnorm_matmul",
            Op::MatMulSwiGlu { .. } => "matmul_swiglu",
            Op::RmsNormMatMulSwiGlu { .. } => "rmsnorm_matmul_swiglu",
            Op::MatMulAdd { .. } => "matmul_add",
            Op::RopeKvWrite { .. } => "rope_kv_write",
        }
    }

    pub fn is_fused(&self) -> bool {
        matches!(
            self,
            Op::RmsNormMatMul { .. }
                | Op::MatMulSwiGlu { .. }
                | Op::RmsNormMatMulSwiGlu { .. }
                | Op::MatMulAdd { .. }
                | Op::RopeKvWrite { .. }
        )
    }

    /// The matrix weights the op multiplies by (their dtype names the kernel variant).
    pub fn matrices(&self) -> Vec<WeightId> {
        match self {
            Op::Embed { table } => vec![*table],
            Op::MatMul { weights } | Op::RmsNormMatMul { weights, .. } => weights.clone(),
            Op::MatMulSwiGlu { gate, up } | Op::RmsNormMatMulSwiGlu { gate, up, .. } => {
                vec![*gate, *up]
            }
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
