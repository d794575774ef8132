//! Builders of the cases of the ops Gemma 3 adds: the embedding scale, QK-norm (RMSNorm
//! per head, Qwen 3's too) and the post-norm folded into the residual add; and Qwen 2's
//! bias add. (GeGLU, the NeoX RoPE and Gemma's attention are variants of the builders in
//! `ops.rs`.)

use kiln_ir::{DType, Op};

use super::Case;
use super::build::{Builder, plain, rowwise};
use super::cases::{EPS, F32_LIMIT};
use super::reference::{self as oracle, gather};

pub(super) fn scale(tokens: usize, d: usize, factor: f32) -> Case {
    Case::new(
        format!("scale_t{tokens}_d{d}"),
        format!("x ({tokens}, {d}) · {factor}"),
        F32_LIMIT,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, d, 1.0, rng);
            let y = b.node(Op::Scale { factor }, &[x], d);
            rowwise(b, rng, tokens, 0, &[(y, d)], move |ids, _| {
                vec![plain(oracle::scale(
                    &gather(&xt, d, ids),
                    f64::from(factor),
                ))]
            })
        },
    )
}

/// QK-norm: each of `heads` heads of `head_dim` normalised with one shared weight.
pub(super) fn head_rmsnorm(tokens: usize, heads: usize, head_dim: usize) -> Case {
    let width = heads * head_dim;
    Case::new(
        format!("head_rmsnorm_t{tokens}_h{head_dim}"),
        format!("x ({tokens}, {heads}×{head_dim}), weight ({head_dim})"),
        F32_LIMIT,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, width, 1.0, rng);
            let (weight, w) = b.norm("norm", head_dim, rng);
            let op = Op::HeadRmsNorm {
                weight,
                eps: EPS,
                head_dim,
            };
            let y = b.node(op, &[x], width);
            rowwise(b, rng, tokens, 0, &[(y, width)], move |ids, _| {
                // Rows of one head each.
                vec![plain(oracle::rmsnorm(&gather(&xt, width, ids), &w, EPS))]
            })
        },
    )
}

/// residual + rmsnorm(h) · weight.
pub(super) fn rmsnorm_add(tokens: usize, d: usize) -> Case {
    Case::new(
        format!("rmsnorm_add_t{tokens}_d{d}"),
        format!("h, residual ({tokens}, {d})"),
        F32_LIMIT,
        move |rng| {
            let mut b = Builder::new();
            let (h, ht) = b.input("h", 2 * tokens, d, 1.0, rng);
            let (r, rt) = b.input("residual", 2 * tokens, d, 3.0, rng);
            let (weight, w) = b.norm("norm", d, rng);
            let y = b.node(Op::RmsNormAdd { weight, eps: EPS }, &[h, r], d);
            rowwise(b, rng, tokens, 0, &[(y, d)], move |ids, _| {
                let normed = oracle::rmsnorm(&gather(&ht, d, ids), &w, EPS);
                vec![plain(oracle::add(&normed, &gather(&rt, d, ids)))]
            })
        },
    )
}

/// x + bias on every row (Qwen 2's q/k/v biases).
pub(super) fn add_bias(tokens: usize, d: usize) -> Case {
    Case::new(
        format!("add_bias_t{tokens}_d{d}"),
        format!("x ({tokens}, {d}), bias ({d})"),
        F32_LIMIT,
        move |rng| {
            let mut b = Builder::new();
            let (x, xt) = b.input("x", 2 * tokens, d, 1.0, rng);
            let values = rng.uniform_vec(d, -2.0, 2.0);
            let (bias, bv) = b.weight("bias", DType::F32, 1, d, &values);
            let y = b.node(Op::AddBias { bias }, &[x], d);
            rowwise(b, rng, tokens, 0, &[(y, d)], move |ids, _| {
                let rows = gather(&xt, d, ids);
                let biases: Vec<f64> = bv.iter().cycle().take(rows.len()).copied().collect();
                vec![plain(oracle::add(&rows, &biases))]
            })
        },
    )
}
