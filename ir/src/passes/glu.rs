//! gate/up matmul + SwiGLU or GeGLU: the activation is applied in the matmul's epilogue,
//! so the two (tokens, n_ff) intermediates are never written.

use super::{consumers, is_output, rewrite};
use crate::graph::Graph;
use crate::op::Op;

pub fn fuse_glu(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> usize {
    let users = consumers(graph);
    let n = graph.nodes.len();
    let mut replace = vec![None; n];
    let mut remove = vec![false; n];
    let mut fused = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::MatMul { weights } = &node.op else {
            continue;
        };
        let [gate, up] = weights[..] else { continue };
        let (g, u) = (node.outputs[0], node.outputs[1]);
        let single_reader = |v: crate::graph::ValueId| match users[v.0 as usize][..] {
            [j] if !is_output(graph, v) => Some(j),
            _ => None,
        };
        let (Some(j), Some(k)) = (single_reader(g), single_reader(u)) else {
            continue;
        };
        let reader = &graph.nodes[j];
        if j != k || reader.inputs != [g, u] {
            continue;
        }
        let op = match reader.op {
            Op::SwiGlu => Op::MatMulSwiGlu { gate, up },
            Op::GeGlu => Op::MatMulGeGlu { gate, up },
            _ => continue,
        };
        if !supports(&op) {
            continue;
        }
        let mut new = node.clone();
        new.op = op;
        new.outputs = reader.outputs.clone();
        replace[i] = Some(new);
        remove[j] = true;
        fused += 1;
    }
    if fused > 0 {
        rewrite(graph, replace, &remove);
    }
    fused
}
