//! Lowering: a fused graph becomes a Plan for one backend: the ordered kernel launches
//! of one step and the arena offset of every activation.

use crate::graph::{Graph, ValueId};
use crate::op::Op;
use crate::planner::{ArenaLayout, BufferRequest, plan_arena};
use crate::verify::{IrError, verify};

/// One kernel launch: an op of the graph with its kernel name.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// `<op>_<dtype>`, e.g. `rmsnorm_matmul_q4_1`: the kernel file stem and variant.
    pub kernel: String,
    pub op: Op,
    pub layer: Option<usize>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// The launches of one step and where their activations live.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The (fused) graph the launches come from: weights and value types.
    pub graph: Graph,
    pub launches: Vec<Launch>,
    /// Arena byte offset of every value; None for the token ids (a step input).
    pub offsets: Vec<Option<usize>>,
    /// The most tokens (all sequences together) a step may carry.
    pub max_tokens: usize,
    /// The most rows of logits a step may want.
    pub max_outputs: usize,
    pub arena_bytes: usize,
    /// The arena without reuse (one buffer per value), for comparison.
    pub naive_bytes: usize,
}

impl Plan {
    /// Launches per transformer block (the first block; all are alike).
    pub fn launches_per_layer(&self) -> usize {
        self.launches.iter().filter(|l| l.layer == Some(0)).count()
    }
}

/// Kernel name of an op: its name and the dtype of its weights (`f32` without weights).
pub fn kernel_name(op: &Op, graph: &Graph) -> String {
    let dtypes: Vec<_> = op
        .matrices()
        .iter()
        .filter_map(|&w| graph.weight(w).map(|w| w.dtype))
        .collect();
    let dtype = match dtypes.first() {
        None => "f32",
        Some(d) if dtypes.iter().all(|x| x == d) => d.name(),
        Some(_) => "mixed",
    };
    format!("{}_{dtype}", op.name())
}

/// Lower a verified graph for a backend, sizing the arena for steps of up to
/// `max_tokens` tokens and `max_outputs` logits rows.
pub fn lower(
    graph: Graph,
    supports: &dyn Fn(&Op) -> bool,
    max_tokens: usize,
    max_outputs: usize,
) -> Result<Plan, IrError> {
    verify(&graph)?;
    if max_tokens == 0 || max_outputs == 0 || max_outputs > max_tokens {
        return Err(IrError::Graph(format!(
            "a step of {max_tokens} tokens with {max_outputs} outputs"
        )));
    }
    let mut launches = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        if !supports(&node.op) {
            return Err(IrError::Node {
                node: i,
                op: node.op.name(),
                message: "the backend does not support this op".into(),
            });
        }
        launches.push(Launch {
            kernel: kernel_name(&node.op, &graph),
            op: node.op.clone(),
            layer: node.layer,
            inputs: node.inputs.clone(),
            outputs: node.outputs.clone(),
        });
    }

    // Lifetimes in launch indices; the output stays live to the end of the step.
    let n = graph.values.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0; n];
    for (i, l) in launches.iter().enumerate() {
        for v in &l.outputs {
            first[v.0 as usize] = first[v.0 as usize].min(i);
            last[v.0 as usize] = last[v.0 as usize].max(i);
        }
        for v in &l.inputs {
            last[v.0 as usize] = last[v.0 as usize].max(i);
        }
    }
    if let Some(out) = graph.output {
        last[out.0 as usize] = launches.len();
    }
    let mut requested = Vec::new();
    let mut requests = Vec::new();
    for (v, ty) in graph.values.iter().enumerate() {
        if Some(ValueId(v as u32)) == graph.input || first[v] == usize::MAX {
            continue;
        }
        requested.push(v);
        requests.push(BufferRequest {
            bytes: ty.bytes(max_tokens, max_outputs),
            first_use: first[v],
            last_use: last[v],
        });
    }
    let ArenaLayout {
        offsets: placed,
        arena_bytes,
        naive_bytes,
    } = plan_arena(&requests);
    let mut offsets = vec![None; n];
    for (v, offset) in requested.into_iter().zip(placed) {
        offsets[v] = Some(offset);
    }
    Ok(Plan {
        graph,
        launches,
        offsets,
        max_tokens,
        max_outputs,
        arena_bytes,
        naive_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::{fuse, tests::tiny_llama};

    #[test]
    fn lowering_names_kernels_and_reuses_the_arena() {
        let mut g = tiny_llama(4);
        fuse(&mut g, &|_| true).unwrap();
        let plan = lower(g, &|_| true, 8, 1).unwrap();
        assert_eq!(plan.launches_per_layer(), 6);
        let kernels: Vec<&str> = plan
            .launches
            .iter()
            .take(3)
            .map(|l| l.kernel.as_str())
            .collect();
        assert_eq!(
            kernels,
            ["embed_q8_0", "rmsnorm_matmul_q4_0", "rope_kv_write_f32"]
        );
        assert!(
            plan.arena_bytes < plan.naive_bytes / 2,
            "{} vs {}",
            plan.arena_bytes,
            plan.naive_bytes
        );
        // Every activation has an offset; values used by one launch never overlap.
        for l in &plan.launches {
            let mut spans: Vec<(usize, usize)> = l
                .inputs
                .iter()
                .chain(&l.outputs)
                .filter(|&&v| Some(v) != plan.graph.input)
                .map(|v| {
                    let off = plan.offsets[v.0 as usize].unwrap();
                    (off, off + plan.graph.values[v.0 as usize].bytes(8, 1))
                })
                .collect();
            spans.sort();
            assert!(
                spans.windows(2).all(|w| w[0].1 <= w[1].0),
                "{}: {spans:?}",
                l.kernel
            );
        }
    }

    #[test]
    fn lowering_refuses_unsupported_ops_and_bad_sizes() {
        let g = tiny_llama(1);
        assert!(lower(g.clone(), &|op| !matches!(op, Op::Attention { .. }), 8, 1).is_err());
        assert!(lower(g.clone(), &|_| true, 0, 1).is_err());
        assert!(lower(g, &|_| true, 4, 8).is_err());
    }
}
