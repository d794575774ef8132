//! Fusion passes. Each is small, rewrites one pattern, only when the backend supports the
//! fused op, and keeps node order (KV writes stay before the attention that reads them).
//! Each is proved by running fused and unfused graphs on the CPU and comparing logits.

mod glu;
mod residual;
mod rmsnorm;
mod rope_kv;
mod sibling_matmuls;

pub use glu::fuse_glu;
pub use residual::fuse_residual_add;
pub use rmsnorm::fuse_rmsnorm;
pub use rope_kv::fuse_rope_kv_write;
pub use sibling_matmuls::fuse_sibling_matmuls;

use crate::graph::{Graph, Node};
use crate::op::Op;
use crate::verify::{IrError, verify};

/// A fusion pass: rewrites `graph`, returns how many fused nodes it made.
pub type Pass = fn(&mut Graph, &dyn Fn(&Op) -> bool) -> usize;

/// Every pass, in the order they compose: siblings first (q/k/v and gate/up become one
/// matmul), then the epilogues and prologues that fold into those matmuls.
pub const ALL: [(&str, Pass); 5] = [
    ("sibling_matmuls", fuse_sibling_matmuls),
    ("glu", fuse_glu),
    ("rmsnorm", fuse_rmsnorm),
    ("residual_add", fuse_residual_add),
    ("rope_kv_write", fuse_rope_kv_write),
];

/// Run every pass the backend can take, then verify.
pub fn fuse(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> Result<(), IrError> {
    for (_, pass) in ALL {
        pass(graph, supports);
    }
    verify(graph)
}

/// Rebuild the node list: `replace[i]` = Some(node) puts `node` at position i, and
/// `remove[i]` drops node i. Unused values are compacted away.
fn rewrite(graph: &mut Graph, mut replace: Vec<Option<Node>>, remove: &[bool]) {
    let old = std::mem::take(&mut graph.nodes);
    graph.nodes = old
        .into_iter()
        .enumerate()
        .filter_map(|(i, node)| match replace[i].take() {
            Some(new) => Some(new),
            None if remove[i] => None,
            None => Some(node),
        })
        .collect();
    graph.compact();
}

/// Indices of the nodes reading each value.
fn consumers(graph: &Graph) -> Vec<Vec<usize>> {
    let mut users = vec![Vec::new(); graph.values.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        for v in &node.inputs {
            users[v.0 as usize].push(i);
        }
    }
    users
}

/// Whether the value is the graph's output (which must stay observable).
fn is_output(graph: &Graph, v: crate::graph::ValueId) -> bool {
    graph.output == Some(v)
}

#[cfg(test)]
pub(crate) mod tests;
