//! Each pass on its own, on a two-layer Llama-shaped graph: what it fuses, that the result
//! still verifies, and that it leaves alone what the backend does not support.
//! (Numerical proof of every pass, fused against unfused logits on the CPU, is in
//! tests/tests/cpu_backend.rs.)

use super::*;
use crate::graph::{Graph, Rows, ValueType};
use crate::op::{AttentionParams, RopeParams};
use crate::{DType, verify};

/// A small Llama-shaped graph, unfused, as the engine's builder makes it.
pub(crate) fn tiny_llama(n_layers: usize) -> Graph {
    let (d, heads, kv_heads, hd, ff, vocab) = (64, 4, 2, 16, 96, 50);
    let mut g = Graph::new(n_layers);
    let act = |cols| ValueType::F32 {
        rows: Rows::Tokens,
        cols,
    };
    let ids = g.new_value(ValueType::TokenIds);
    g.input = Some(ids);
    let table = g.add_weight("token_embd", DType::Q8_0, vocab, d);
    let mut x = g.push(Op::Embed { table }, &[ids], &[act(d)], None)[0];
    let rope = RopeParams {
        head_dim: hd,
        rope_dims: hd,
        theta: 10000.0,
        freq_scale: 1.0,
        freq_factors: None,
    };
    for layer in 0..n_layers {
        let l = Some(layer);
        let attention = AttentionParams {
            layer,
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim: hd,
        };
        let norm = g.add_weight(format!("{layer}.attn_norm"), DType::F32, 1, d);
        let xb = g.push(
            Op::RmsNorm {
                weight: norm,
                eps: 1e-5,
            },
            &[x],
            &[act(d)],
            l,
        )[0];
        let wq = g.add_weight(format!("{layer}.q"), DType::Q4_0, heads * hd, d);
        let wk = g.add_weight(format!("{layer}.k"), DType::Q4_0, kv_heads * hd, d);
        let wv = g.add_weight(format!("{layer}.v"), DType::Q4_0, kv_heads * hd, d);
        let q = g.push(
            Op::MatMul { weights: vec![wq] },
            &[xb],
            &[act(heads * hd)],
            l,
        )[0];
        let k = g.push(
            Op::MatMul { weights: vec![wk] },
            &[xb],
            &[act(kv_heads * hd)],
            l,
        )[0];
        let v = g.push(
            Op::MatMul { weights: vec![wv] },
            &[xb],
            &[act(kv_heads * hd)],
            l,
        )[0];
        let q = g.push(Op::Rope { rope }, &[q], &[act(heads * hd)], l)[0];
        let k = g.push(Op::Rope { rope }, &[k], &[act(kv_heads * hd)], l)[0];
        g.push(Op::KvWrite { attention }, &[k, v], &[], l);
        let att = g.push(Op::Attention { attention }, &[q], &[act(heads * hd)], l)[0];
        let wo = g.add_weight(format!("{layer}.o"), DType::Q4_0, d, heads * hd);
        let proj = g.push(Op::MatMul { weights: vec![wo] }, &[att], &[act(d)], l)[0];
        x = g.push(Op::Add, &[x, proj], &[act(d)], l)[0];
        let norm = g.add_weight(format!("{layer}.ffn_norm"), DType::F32, 1, d);
        let xb = g.push(
            Op::RmsNorm {
                weight: norm,
                eps: 1e-5,
            },
            &[x],
            &[act(d)],
            l,
        )[0];
        let wg = g.add_weight(format!("{layer}.gate"), DType::Q4_1, ff, d);
        let wu = g.add_weight(format!("{layer}.up"), DType::Q4_1, ff, d);
        let gate = g.push(Op::MatMul { weights: vec![wg] }, &[xb], &[act(ff)], l)[0];
        let up = g.push(Op::MatMul { weights: vec![wu] }, &[xb], &[act(ff)], l)[0];
        let h = g.push(Op::SwiGlu, &[gate, up], &[act(ff)], l)[0];
        let wd = g.add_weight(format!("{layer}.down"), DType::Q4_1, d, ff);
        let down = g.push(Op::MatMul { weights: vec![wd] }, &[h], &[act(d)], l)[0];
        x = g.push(Op::Add, &[x, down], &[act(d)], l)[0];
    }
    let out = |cols| ValueType::F32 {
        rows: Rows::Outputs,
        cols,
    };
    let x = g.push(Op::SelectRows, &[x], &[out(d)], None)[0];
    let norm = g.add_weight("output_norm", DType::F32, 1, d);
    let xn = g.push(
        Op::RmsNorm {
            weight: norm,
            eps: 1e-5,
        },
        &[x],
        &[out(d)],
        None,
    )[0];
    let head = g.add_weight("output", DType::Q8_0, vocab, d);
    g.output = Some(
        g.push(
            Op::MatMul {
                weights: vec![head],
            },
            &[xn],
            &[out(vocab)],
            None,
        )[0],
    );
    verify(&g).expect("the test graph verifies");
    g
}

fn count(g: &Graph, name: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == name).count()
}

const ALL_OPS: &dyn Fn(&Op) -> bool = &|_| true;

#[test]
fn sibling_matmuls_merge_qkv_and_gate_up() {
    let mut g = tiny_llama(2);
    assert_eq!(fuse_sibling_matmuls(&mut g, ALL_OPS), 4);
    verify(&g).unwrap();
    let multi: Vec<usize> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::MatMul { weights } if weights.len() > 1 => Some(weights.len()),
            _ => None,
        })
        .collect();
    assert_eq!(multi, vec![3, 2, 3, 2]);
}

#[test]
fn swiglu_folds_into_the_gate_up_matmul() {
    let mut g = tiny_llama(2);
    fuse_sibling_matmuls(&mut g, ALL_OPS);
    assert_eq!(fuse_swiglu(&mut g, ALL_OPS), 2);
    verify(&g).unwrap();
    assert_eq!(count(&g, "swiglu"), 0);
    assert_eq!(count(&g, "matmul_swiglu"), 2);
}

#[test]
fn rmsnorm_folds_into_the_matmul_it_feeds() {
    let mut g = tiny_llama(2);
    fuse_sibling_matmuls(&mut g, ALL_OPS);
    fuse_swiglu(&mut g, ALL_OPS);
    // attn norm (into qkv), ffn norm (into gate/up), output norm (into the LM head).
    assert_eq!(fuse_rmsnorm(&mut g, ALL_OPS), 5);
    verify(&g).unwrap();
    assert_eq!(count(&g, "rmsnorm"), 0);
    assert_eq!(count(&g, "rmsnorm_matmul"), 3);
    assert_eq!(count(&g, "rmsnorm_matmul_swiglu"), 2);
}

#[test]
fn residual_adds_fold_into_the_matmul_before_them() {
    let mut g = tiny_llama(2);
    assert_eq!(fuse_residual_add(&mut g, ALL_OPS), 4);
    verify(&g).unwrap();
    assert_eq!(count(&g, "add"), 0);
    assert_eq!(count(&g, "matmul_add"), 4);
}

#[test]
fn rope_joins_the_kv_write() {
    let mut g = tiny_llama(2);
    assert_eq!(fuse_rope_kv_write(&mut g, ALL_OPS), 2);
    verify(&g).unwrap();
    assert_eq!(count(&g, "rope"), 0);
    assert_eq!(count(&g, "kv_write"), 0);
    assert_eq!(count(&g, "rope_kv_write"), 2);
}

#[test]
fn all_passes_leave_six_launches_per_layer() {
    let mut g = tiny_llama(3);
    fuse(&mut g, ALL_OPS).unwrap();
    for layer in 0..3 {
        let ops: Vec<&str> = g
            .nodes
            .iter()
            .filter(|n| n.layer == Some(layer))
            .map(|n| n.op.name())
            .collect();
        assert_eq!(
            ops,
            [
                "rmsnorm_matmul",
                "rope_kv_write",
                "attention",
                "matmul_add",
                "rmsnorm_matmul_swiglu",
                "matmul_add"
            ]
        );
    }
}

#[test]
fn unsupported_fused_ops_are_left_unfused() {
    let mut g = tiny_llama(2);
    let before = g.clone();
    let none_fused =
        |op: &Op| !op.is_fused() && !matches!(op, Op::MatMul { weights } if weights.len() > 1);
    fuse(&mut g, &none_fused).unwrap();
    assert_eq!(g, before);
    // Only RoPE+KV refused: everything else still fuses.
    let mut g = tiny_llama(2);
    fuse(&mut g, &|op: &Op| !matches!(op, Op::RopeKvWrite { .. })).unwrap();
    assert_eq!(count(&g, "rope_kv_write"), 0);
    assert_eq!(count(&g, "rope"), 4);
    assert_eq!(count(&g, "matmul_add"), 4);
}
