//! Each pass on its own, on a two-layer Llama-shaped graph: what it fuses, that the result
//! still verifies, and that it leaves alone what the backend does not support.
//! (Numerical proof of every pass, fused against unfused logits on the CPU, is in
//! tests/tests/cpu_backend.rs.)

use super::*;
use crate::graph::{Graph, Rows, ValueType};
use crate::op::{AttentionParams, RopeMode, RopeParams};
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
        mode: RopeMode::Normal,
    };
    for layer in 0..n_layers {
        let l = Some(layer);
        let attention = AttentionParams::new(layer, heads, kv_heads, hd);
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
    assert_eq!(fuse_glu(&mut g, ALL_OPS), 2);
    verify(&g).unwrap();
    assert_eq!(count(&g, "swiglu"), 0);
    assert_eq!(count(&g, "matmul_swiglu"), 2);
}

#[test]
fn rmsnorm_folds_into_the_matmul_it_feeds() {
    let mut g = tiny_llama(2);
    fuse_sibling_matmuls(&mut g, ALL_OPS);
    fuse_glu(&mut g, ALL_OPS);
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

/// A small Gemma-3-shaped graph, unfused: embeddings scaled, QK-norms, NeoX RoPE with a
/// base per layer, windows on all layers but every third, post-norms, GeGLU. Layer l keeps
/// its K/V in group l % 3 == 2 ? 0 : 1, as `KvGroups` would place them.
pub(crate) fn tiny_gemma(n_layers: usize) -> Graph {
    let (d, heads, kv_heads, hd, ff, vocab) = (64, 2, 1, 32, 96, 50);
    let mut g = Graph::new(n_layers);
    let act = |cols| ValueType::F32 {
        rows: Rows::Tokens,
        cols,
    };
    let eps = 1e-6;
    let ids = g.new_value(ValueType::TokenIds);
    g.input = Some(ids);
    let table = g.add_weight("token_embd", DType::Q8_0, vocab, d);
    let x = g.push(Op::Embed { table }, &[ids], &[act(d)], None)[0];
    let mut x = g.push(Op::Scale { factor: 8.0 }, &[x], &[act(d)], None)[0];
    let groups = crate::kv_groups::KvGroups::new(
        &(0..n_layers)
            .map(|l| (l % 3 != 2).then_some(5))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for layer in 0..n_layers {
        let l = Some(layer);
        let (kv_group, kv_slot) = groups.placement(layer).unwrap();
        let window = groups.windows()[kv_group];
        let attention = AttentionParams {
            window,
            scale: 0.125,
            kv_group,
            kv_slot,
            ..AttentionParams::new(layer, heads, kv_heads, hd)
        };
        let rope = RopeParams {
            head_dim: hd,
            rope_dims: hd,
            theta: if window.is_some() { 1e4 } else { 1e6 },
            freq_scale: 1.0,
            freq_factors: None,
            mode: RopeMode::Neox,
        };
        let vector = |g: &mut Graph, name: &str, n| {
            g.add_weight(format!("{layer}.{name}"), DType::F32, 1, n)
        };
        let matrix = |g: &mut Graph, name: &str, rows, cols| {
            g.add_weight(format!("{layer}.{name}"), DType::Q4_0, rows, cols)
        };
        let norm = vector(&mut g, "attn_norm", d);
        let xb = g.push(Op::RmsNorm { weight: norm, eps }, &[x], &[act(d)], l)[0];
        let mut qkv = Vec::new();
        for (name, rows) in [
            ("q", heads * hd),
            ("k", kv_heads * hd),
            ("v", kv_heads * hd),
        ] {
            let w = matrix(&mut g, name, rows, d);
            qkv.push(g.push(Op::MatMul { weights: vec![w] }, &[xb], &[act(rows)], l)[0]);
        }
        let mut roped = Vec::new();
        for (name, &value, rows) in [("q_norm", &qkv[0], heads * hd), ("k_norm", &qkv[1], hd)] {
            let w = vector(&mut g, name, hd);
            let op = Op::HeadRmsNorm {
                weight: w,
                eps,
                head_dim: hd,
            };
            let normed = g.push(op, &[value], &[act(rows)], l)[0];
            roped.push(g.push(Op::Rope { rope }, &[normed], &[act(rows)], l)[0]);
        }
        g.push(Op::KvWrite { attention }, &[roped[1], qkv[2]], &[], l);
        let att = g.push(
            Op::Attention { attention },
            &[roped[0]],
            &[act(heads * hd)],
            l,
        )[0];
        let wo = matrix(&mut g, "o", d, heads * hd);
        let proj = g.push(Op::MatMul { weights: vec![wo] }, &[att], &[act(d)], l)[0];
        let post = vector(&mut g, "post_attention_norm", d);
        let proj = g.push(Op::RmsNorm { weight: post, eps }, &[proj], &[act(d)], l)[0];
        x = g.push(Op::Add, &[proj, x], &[act(d)], l)[0];
        let norm = vector(&mut g, "ffn_norm", d);
        let xb = g.push(Op::RmsNorm { weight: norm, eps }, &[x], &[act(d)], l)[0];
        let wg = matrix(&mut g, "gate", ff, d);
        let wu = matrix(&mut g, "up", ff, d);
        let gate = g.push(Op::MatMul { weights: vec![wg] }, &[xb], &[act(ff)], l)[0];
        let up = g.push(Op::MatMul { weights: vec![wu] }, &[xb], &[act(ff)], l)[0];
        let h = g.push(Op::GeGlu, &[gate, up], &[act(ff)], l)[0];
        let wd = matrix(&mut g, "down", d, ff);
        let down = g.push(Op::MatMul { weights: vec![wd] }, &[h], &[act(d)], l)[0];
        let post = vector(&mut g, "post_ffw_norm", d);
        let down = g.push(Op::RmsNorm { weight: post, eps }, &[down], &[act(d)], l)[0];
        x = g.push(Op::Add, &[x, down], &[act(d)], l)[0];
    }
    let out = |cols| ValueType::F32 {
        rows: Rows::Outputs,
        cols,
    };
    let x = g.push(Op::SelectRows, &[x], &[out(d)], None)[0];
    let norm = g.add_weight("output_norm", DType::F32, 1, d);
    let xn = g.push(Op::RmsNorm { weight: norm, eps }, &[x], &[out(d)], None)[0];
    let logits = g.push(
        Op::MatMul {
            weights: vec![table],
        },
        &[xn],
        &[out(vocab)],
        None,
    )[0];
    g.output = Some(logits);
    verify(&g).expect("the test graph verifies");
    g
}

#[test]
fn gemma_layers_fuse_to_eight_launches() {
    let mut g = tiny_gemma(3);
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
                "qk_norm_rope_kv_write",
                "attention",
                "matmul",
                "rmsnorm_add",
                "rmsnorm_matmul_geglu",
                "matmul",
                "rmsnorm_add"
            ]
        );
    }
    // The windows, scales and KV slots survive fusion.
    let windows: Vec<Option<usize>> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Attention { attention } => Some(attention.window),
            _ => None,
        })
        .collect();
    assert_eq!(windows, [Some(5), Some(5), None]);
}

#[test]
fn gemma_fusions_are_left_out_when_unsupported() {
    // Without the QK-norm variant, RoPE still joins the KV write and the norms stay.
    let mut g = tiny_gemma(2);
    fuse(&mut g, &|op: &Op| {
        !matches!(op, Op::QkNormRopeKvWrite { .. })
    })
    .unwrap();
    assert_eq!(count(&g, "rope_kv_write"), 2);
    assert_eq!(count(&g, "head_rmsnorm"), 4);
    // Without RmsNormAdd the post-norms and adds stay apart.
    let mut g = tiny_gemma(2);
    fuse(&mut g, &|op: &Op| !matches!(op, Op::RmsNormAdd { .. })).unwrap();
    assert_eq!(count(&g, "rmsnorm_add"), 0);
    assert_eq!(count(&g, "add"), 4);
    assert_eq!(count(&g, "rmsnorm_matmul_geglu"), 2);
    // Nothing fused: the graph is unchanged.
    let mut g = tiny_gemma(2);
    let before = g.clone();
    fuse(&mut g, &|op: &Op| {
        !op.is_fused() && !matches!(op, Op::MatMul { weights } if weights.len() > 1)
    })
    .unwrap();
    assert_eq!(g, before);
}
