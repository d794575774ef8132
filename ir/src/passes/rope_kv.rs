//! RoPE of q and k with the KV page write: k is rotated and quantized straight into its
//! page, q is rotated in the same launch. When q and k come from QK-norms (HeadRmsNorm)
//! read only by these RoPEs, the norms join too.

use super::{consumers, is_output, rewrite};
use crate::graph::{Graph, ValueId};
use crate::op::Op;

pub fn fuse_rope_kv_write(graph: &mut Graph, supports: &dyn Fn(&Op) -> bool) -> usize {
    let users = consumers(graph);
    let producers = graph.producers();
    let n = graph.nodes.len();
    let mut replace = vec![None; n];
    let mut remove = vec![false; n];
    let mut fused = 0;
    // The node producing `v`, if `v` is read by `reader` alone.
    let sole_producer = |v: ValueId, reader: usize| {
        let p = producers[v.0 as usize]?;
        (users[v.0 as usize] == [reader] && !is_output(graph, v)).then_some(p)
    };
    for (w, write) in graph.nodes.iter().enumerate() {
        let Op::KvWrite { attention } = write.op else {
            continue;
        };
        let (k_roped, v) = (write.inputs[0], write.inputs[1]);
        // k must come from a Rope read only by this write.
        let Some(rk) = sole_producer(k_roped, w) else {
            continue;
        };
        let Op::Rope { rope } = graph.nodes[rk].op else {
            continue;
        };
        // q: the Rope of the same layer (same params) whose readers all come after the write.
        let rq = graph.nodes.iter().enumerate().position(|(i, n)| {
            i != rk
                && i < w
                && n.layer == write.layer
                && n.op == Op::Rope { rope }
                && users[n.outputs[0].0 as usize].iter().all(|&u| u > w)
        });
        let Some(rq) = rq else { continue };
        if remove[rq] || remove[rk] {
            continue;
        }
        // QK-norms: a HeadRmsNorm of the same eps before each RoPE, read by it alone.
        let norm_of = |rope_node: usize| {
            let p = sole_producer(graph.nodes[rope_node].inputs[0], rope_node)?;
            match graph.nodes[p].op {
                Op::HeadRmsNorm {
                    weight,
                    eps,
                    head_dim,
                } if head_dim == attention.head_dim => Some((p, weight, eps)),
                _ => None,
            }
        };
        let qk_norm = match (norm_of(rq), norm_of(rk)) {
            (Some((nq, q_norm, eps)), Some((nk, k_norm, k_eps))) if eps == k_eps => {
                let op = Op::QkNormRopeKvWrite {
                    q_norm,
                    k_norm,
                    eps,
                    rope,
                    attention,
                };
                supports(&op).then_some((op, nq, nk))
            }
            _ => None,
        };
        let mut new = write.clone();
        match qk_norm {
            Some((op, nq, nk)) => {
                new.op = op;
                new.inputs = vec![graph.nodes[nq].inputs[0], graph.nodes[nk].inputs[0], v];
                remove[nq] = true;
                remove[nk] = true;
            }
            None => {
                let op = Op::RopeKvWrite { rope, attention };
                if !supports(&op) {
                    continue;
                }
                new.op = op;
                new.inputs = vec![graph.nodes[rq].inputs[0], graph.nodes[rk].inputs[0], v];
            }
        }
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
