//! RMSNorm folded into the matmul it feeds: the matmul normalises its input rows as it
//! loads them, so the normed activations are never written.

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
            _ => continue,
        };
        if !supports(&op) {
            continue;
        }
        let mut new = consumer.clone();
        new.op = op;
        new.inputs = node.inputs.clone();
        replace[j] = Some(new);
        remove[i] = true;
        fused += 1;
    }
    if fused > 0 {
        rewrite(graph, replace, &remove);
    }
    fused
}
