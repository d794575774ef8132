//! q/k/v (and gate/up): matmuls reading the same input become one multi-weight matmul,
//! so the input is read once and one launch covers all their rows.

use super::{consumers, rewrite};
use crate::graph::Graph;
use crate::op::Op;

pub fn fuse_sibling_matmuls(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> usize {
    let users = consumers(graph);
    let n = graph.nodes.len();
    let mut replace = vec![None; n];
    let mut remove = vec![false; n];
    let mut fused = 0;
    for (value, readers) in users.iter().enumerate() {
        let siblings: Vec<usize> = readers
            .iter()
            .copied()
            .filter(|&i| matches!(graph.nodes[i].op, Op::MatMul { .. }) && !remove[i])
            .collect();
        if siblings.len() < 2 {
            continue;
        }
        let mut weights = Vec::new();
        let mut outputs = Vec::new();
        for &i in &siblings {
            if let Op::MatMul { weights: w } = &graph.nodes[i].op {
                weights.extend_from_slice(w);
            }
            outputs.extend_from_slice(&graph.nodes[i].outputs);
        }
        let op = Op::MatMul { weights };
        if !supports(&op) {
            continue;
        }
        // The merged node takes the first sibling's place: its only input is defined
        // before that, and every reader of the outputs comes after their old producer.
        let first = siblings[0];
        let mut node = graph.nodes[first].clone();
        node.op = op;
        node.inputs = vec![crate::graph::ValueId(value as u32)];
        node.outputs = outputs;
        replace[first] = Some(node);
        for &i in &siblings[1..] {
            remove[i] = true;
        }
        fused += 1;
    }
    if fused > 0 {
        rewrite(graph, replace, &remove);
    }
    fused
}
