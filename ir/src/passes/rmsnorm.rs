//! RMSNorm folded into the op it feeds: a matmul normalises its input rows as it loads
//! them, so the normed activations are never written; a residual add (Gemma's post-norms)
//! normalises the sublayer's output as it adds it.

use super::{consumers, is_output, rewrite};
use crate::graph::Graph;
use crate::op::Op;

pub fn fuse_rmsnorm(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> usize {
    let users = consumers(graph);
    let n = graph.nodes.len();
    let mut replace = vec![None; n];
    let mut remove = vec![false; n];
    let mut fused = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::RmsNorm { weight: norm, eps } = node.op else {
            continue;
        };
        let normed = node.outputs[0];
        let [j] = users[normed.0 as usize][..] else {
            continue;
        };
        if is_output(graph, normed) {
            continue;
        }
        let consumer = &graph.nodes[j];
        let op = match &consumer.op {
            Op::MatMul { weights } => Op::RmsNormMatMul {
                norm,
                eps,
                weights: weights.clone(),
            },
            Op::MatMulSwiGlu { gate, up } => Op::RmsNormMatMulSwiGlu {
                norm,
                eps,
                gate: *gate,
                up: *up,
            },
            Op::MatMulGeGlu { gate, up } => Op::RmsNormMatMulGeGlu {
                norm,
                eps,
                gate: *gate,
                up: *up,
            },
            Op::Add if consumer.inputs[0] != consumer.inputs[1] => {
                Op::RmsNormAdd { weight: norm, eps }
            }
            _ => continue,
        };
        if !supports(&op) || replace[j].is_some() {
            continue;
        }
        let mut new = consumer.clone();
        new.inputs = match op {
            // (normed input, residual), at the add's place, where both exist.
            Op::RmsNormAdd { .. } => {
                let residual = if consumer.inputs[0] == normed {
                    consumer.inputs[1]
                } else {
                    consumer.inputs[0]
                };
                vec![node.inputs[0], residual]
            }
            _ => node.inputs.clone(),
        };
        new.op = op;
        replace[j] = Some(new);
        remove[i] = true;
        fused += 1;
    }
    if fused > 0 {
        rewrite(graph, replace, &remove);
    }
    fused
}
