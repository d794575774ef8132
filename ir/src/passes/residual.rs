//! The residual add in the epilogue of the matmul before it (attention output and FFN
//! down projections): x + h·Wᵀ in one pass over the output.

use super::{consumers, is_output, rewrite};
use crate::graph::Graph;
use crate::op::Op;

pub fn fuse_residual_add(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> usize {
    let users = consumers(graph);
    let n = graph.nodes.len();
    let mut replace = vec![None; n];
    let mut remove = vec![false; n];
    let mut fused = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::MatMul { weights } = &node.op else {
            continue;
        };
        let [weight] = weights[..] else { continue };
        let product = node.outputs[0];
        let [j] = users[product.0 as usize][..] else {
            continue;
        };
        let add = &graph.nodes[j];
        if add.op != Op::Add || is_output(graph, product) || replace[j].is_some() {
            continue;
        }
        let residual = if add.inputs[0] == product {
            add.inputs[1]
        } else {
            add.inputs[0]
        };
        if residual == product {
            continue; // x + x: nothing to fold
        }
        let op = Op::MatMulAdd { weight };
        if !supports(&op) {
            continue;
        }
        // At the add's place: both the matmul input and the residual exist by then.
        let mut new = add.clone();
        new.op = op;
        new.inputs = vec![node.inputs[0], residual];
        new.layer = node.layer.or(add.layer);
        replace[j] = Some(new);
        remove[i] = true;
        fused += 1;
    }
    if fused > 0 {
        rewrite(graph, replace, &remove);
    }
    fused
}
