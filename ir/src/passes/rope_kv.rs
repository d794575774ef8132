//! RoPE of q and k with the KV page write: k is rotated and quantized straight into its
//! page, q is rotated in the same launch.

use super::{consumers, is_output, rewrite};
use crate::graph::Graph;
use crate::op::Op;

pub fn fuse_rope_kv_write(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> usize {
    let users = consumers(graph);
    let producers = graph.producers();
    let n = graph.nodes.len();
    let mut replace = vec![None; n];
    let mut remove = vec![false; n];
    let mut fused = 0;
    for (w, write) in graph.nodes.iter().enumerate() {
        let Op::KvWrite { attention } = write.op else {
            continue;
        };
        let (k_roped, v) = (write.inputs[0], write.inputs[1]);
        // k must come from a Rope read only by this write.
        let Some(rk) = producers[k_roped.0 as usize] else {
            continue;
        };
        let Op::Rope { rope } = graph.nodes[rk].op else {
            continue;
        };
        if users[k_roped.0 as usize] != [w] || is_output(graph, k_roped) {
            continue;
        }
        // q: the Rope of the same layer (same params) whose readers all come after the write.
        let rq = graph.nodes.iter().enumerate().position(|(i, n)| {
            i != rk
                && i < w
                && n.layer == write.layer
                && n.op == Op::Rope { rope }
                && users[n.outputs[0].0 as usize].iter().all(|&u| u > w)
        });
        let Some(rq) = rq else { continue };
        let op = Op::RopeKvWrite { rope, attention };
        if !supports(&op) || remove[rq] || remove[rk] {
            continue;
        }
        let mut new = write.clone();
        new.op = op;
        new.inputs = vec![graph.nodes[rq].inputs[0], graph.nodes[rk].inputs[0], v];
        new.outputs = graph.nodes[rq].outputs.clone();
        replace[w] = Some(new);
        remove[rq] = true;
        remove[rk] = true;
        fused += 1;
    }
    if fused > 0 {
        rewrite(graph, replace, &remove);
    }
    fused
}
