//! The weights layout: every weight whole in one buffer, aligned, apart from the others,
//! buffers within the limit; a launch's fused weights together; a model past 4 GiB laid
//! out from its sizes alone.

use kiln_ir::graph::Graph;
use kiln_ir::{DType, Launch, Op, Plan, WeightId};
use proptest::prelude::*;

use super::*;

/// The invariants of `layout` for `plan` under `limit`.
fn check(plan: &Plan, layout: &WeightLayout, limit: u64) {
    let limit = (limit / WINDOW_ALIGN * WINDOW_ALIGN).max(WINDOW_ALIGN);
    let mut at = 0;
    for b in &layout.buffers {
        assert_eq!(b.start, at, "buffers back to back");
        assert!(b.bytes > 0 && b.bytes <= limit, "{b:?} within {limit}");
        assert!(b.bytes.is_multiple_of(WINDOW_ALIGN));
        at = b.end();
    }
    assert_eq!(layout.total, at);
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (i, w) in plan.graph.weights.iter().enumerate() {
        let at = layout.offsets[i];
        let bytes = device_bytes(w, layout.matrix[i]).unwrap();
        let b = &layout.buffers[layout.buffer_of(at)];
        assert!(at.is_multiple_of(ALIGN), "{} at {at}", w.name);
        assert!(
            at >= b.start && at + bytes <= b.end(),
            "{} ({bytes} bytes at {at}) inside {b:?}",
            w.name
        );
        if !spans.iter().any(|s| s.0 == at) {
            spans.push((at, at + bytes, &w.name));
        }
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "{:?} overlaps {:?}",
            pair[0],
            pair[1]
        );
    }
    for l in &plan.launches {
        for g in launch_groups(&l.op) {
            let buffers: Vec<usize> = g
                .iter()
                .map(|w| layout.buffer_of(layout.offsets[w.0 as usize]))
                .collect();
            assert!(buffers.windows(2).all(|b| b[0] == b[1]), "{}", l.kernel);
        }
    }
}

fn launch(op: Op) -> Launch {
    Launch {
        kernel: op.name().into(),
        op,
        layer: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
    }
}

fn plan(graph: Graph, launches: Vec<Launch>) -> Plan {
    Plan {
        graph,
        launches,
        offsets: Vec::new(),
        max_tokens: 1,
        max_outputs: 1,
        arena_bytes: 0,
        naive_bytes: 0,
    }
}

/// The weights and launches of a Llama-3-8B shape (Q4_0, a Q6_K head) with a vocabulary
/// of `vocab`, as the fused graph has them (the head unfused: too large for a binding).
fn llama(layers: usize, vocab: usize, d: usize, ff: usize, kv: usize) -> Plan {
    let mut g = Graph::new(layers);
    let mut launches = vec![];
    let embed = g.add_weight("token_embd.weight", DType::Q4_0, vocab, d);
    launches.push(launch(Op::Embed { table: embed }));
    for l in 0..layers {
        let w = |g: &mut Graph, name: &str, dtype, rows, cols| {
            g.add_weight(format!("blk.{l}.{name}.weight"), dtype, rows, cols)
        };
        let norm = w(&mut g, "attn_norm", DType::F32, 1, d);
        let q = w(&mut g, "attn_q", DType::Q4_0, d, d);
        let k = w(&mut g, "attn_k", DType::Q4_0, kv, d);
        let v = w(&mut g, "attn_v", DType::Q4_0, kv, d);
        let o = w(&mut g, "attn_output", DType::Q4_0, d, d);
        let ffn_norm = w(&mut g, "ffn_norm", DType::F32, 1, d);
        let gate = w(&mut g, "ffn_gate", DType::Q4_0, ff, d);
        let up = w(&mut g, "ffn_up", DType::Q4_0, ff, d);
        let down = w(&mut g, "ffn_down", DType::Q4_0, d, ff);
        let eps = 1e-5;
        launches.extend([
            launch(Op::RmsNormMatMul {
                norm,
                eps,
                weights: vec![q, k, v],
            }),
            launch(Op::MatMulAdd { weight: o }),
            launch(Op::RmsNormMatMulSwiGlu {
                norm: ffn_norm,
                eps,
                gate,
                up,
            }),
            launch(Op::MatMulAdd { weight: down }),
        ]);
    }
    let norm = g.add_weight("output_norm.weight", DType::F32, 1, d);
    let head = g.add_weight("output.weight", DType::Q6_K, vocab, d);
    launches.push(launch(Op::RmsNorm {
        weight: norm,
        eps: 1e-5,
    }));
    launches.push(launch(Op::MatMul {
        weights: vec![head],
    }));
    plan(g, launches)
}

#[test]
fn an_8b_shape_with_a_128k_vocabulary_lays_out_past_4_gib() {
    let p = llama(32, 128_256, 4096, 14_336, 1024);
    // One buffer where the device allows it (CUDA: one allocation), 64-bit offsets.
    let one = WeightLayout::new(&p, u64::MAX).unwrap();
    assert_eq!(one.buffers.len(), 1);
    assert!(one.total > 1 << 32, "{} bytes", one.total);
    check(&p, &one, u64::MAX);
    let head = p.graph.weights.len() - 1;
    let head_bytes = device_bytes(&p.graph.weights[head], true).unwrap();
    assert!(
        one.offsets[head] + head_bytes > 1 << 32,
        "the head ends past 4 GiB"
    );
    // Buffers of 4 GiB (the Vulkan backend's dynamic offsets) and 1 GiB.
    for limit in [1 << 32, 1 << 30] {
        let split = WeightLayout::new(&p, limit).unwrap();
        assert!(split.buffers.len() > (one.total / limit) as usize);
        check(&p, &split, limit);
    }
    // The embedding table (296 MB) does not fit a 256 MiB buffer: an error that names it.
    let e = WeightLayout::new(&p, 256 << 20).unwrap_err().to_string();
    assert!(e.contains("token_embd.weight"), "{e}");
}

#[test]
fn tied_weights_are_stored_once_and_a_small_limit_splits() {
    // (A Q4_0 table of 64 columns: 48-byte packed rows, 48 KB.)
    let mut p = llama(3, 1000, 64, 96, 32);
    let table = WeightId(0);
    // The head is the embedding table again (tied embeddings name one tensor twice),
    // fused with the final norm: the table and the norm share a buffer.
    let head = p.graph.weights.len() - 1;
    p.graph.weights[head] = p.graph.weights[table.0 as usize].clone();
    p.launches.truncate(p.launches.len() - 2);
    p.launches.push(launch(Op::RmsNormMatMul {
        norm: WeightId(head as u32 - 1),
        eps: 1e-5,
        weights: vec![WeightId(head as u32)],
    }));
    let whole = WeightLayout::new(&p, u64::MAX).unwrap();
    let split = WeightLayout::new(&p, 56_000).unwrap();
    for l in [&whole, &split] {
        assert_eq!(l.offsets[table.0 as usize], *l.offsets.last().unwrap());
    }
    assert!(split.buffers.len() > 2, "{:?}", split.buffers);
    check(&p, &split, 56_000);
}

proptest! {
    #[test]
    fn random_groups_keep_every_invariant(
        groups in prop::collection::vec(prop::collection::vec(1u64..5000, 0..4), 1..40),
        limit in 256u64..20_000,
    ) {
        let mut items = Vec::new();
        let groups: Vec<Vec<(usize, u64)>> = groups
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .map(|bytes| {
                        items.push(bytes);
                        (items.len() - 1, bytes)
                    })
                    .collect()
            })
            .collect();
        let room = (limit / WINDOW_ALIGN * WINDOW_ALIGN).max(WINDOW_ALIGN);
        match assign(&groups, items.len(), limit) {
            Err(i) => prop_assert!(items[i].next_multiple_of(ALIGN) > room),
            Ok((offsets, buffers)) => {
                let layout = WeightLayout {
                    offsets: offsets.clone(),
                    matrix: vec![true; items.len()],
                    total: buffers.last().unwrap().end(),
                    buffers,
                };
                let mut spans = Vec::new();
                for (i, &bytes) in items.iter().enumerate() {
                    let at = offsets[i];
                    let b = layout.buffers[layout.buffer_of(at)];
                    prop_assert!(at.is_multiple_of(ALIGN));
                    prop_assert!(at >= b.start && at + bytes <= b.end());
                    spans.push((at, at + bytes));
                }
                spans.sort();
                for pair in spans.windows(2) {
                    prop_assert!(pair[0].1 <= pair[1].0);
                }
                for b in &layout.buffers {
                    prop_assert!(b.bytes <= room && b.bytes.is_multiple_of(WINDOW_ALIGN));
                }
                // A group that fits a buffer lies in one.
                for g in &groups {
                    let bytes: u64 = g.iter().map(|&(_, b)| b.next_multiple_of(ALIGN)).sum();
                    let of = |i: usize| layout.buffer_of(offsets[i]);
                    if bytes <= room && !g.is_empty() {
                        prop_assert!(g.iter().all(|&(i, _)| of(i) == of(g[0].0)));
                    }
                }
            }
        }
    }
}
