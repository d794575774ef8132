//! The verifier: a graph that passes it can be planned and run without further shape
//! checks. Builders and passes call it; a bad graph is an error when it is built.

use crate::graph::{Graph, Rows, ValueId, ValueType};
use crate::op::{AttentionParams, Op, RopeParams, WeightId};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IrError {
    #[error("node {node} ({op}): {message}")]
    Node {
        node: usize,
        op: &'static str,
        message: String,
    },
    #[error("graph: {0}")]
    Graph(String),
}

/// Check every node's arity, shapes and weights, and that values are defined once and
/// before use.
pub fn verify(graph: &Graph) -> Result<(), IrError> {
    let input = graph
        .input
        .ok_or_else(|| IrError::Graph("no input value".into()))?;
    let output = graph
        .output
        .ok_or_else(|| IrError::Graph("no output value".into()))?;
    if graph.value(input) != Some(&ValueType::TokenIds) {
        return Err(IrError::Graph("the input is not the token ids".into()));
    }
    let mut defined = vec![false; graph.values.len()];
    defined[input.0 as usize] = true;
    let mut kv_written = vec![false; graph.n_layers];
    // The layer whose K/V each (group, slot) holds: two layers must never share one.
    let mut kv_owner: std::collections::HashMap<(usize, usize), usize> = Default::default();
    for (i, node) in graph.nodes.iter().enumerate() {
        let fail = |message: String| IrError::Node {
            node: i,
            op: node.op.name(),
            message,
        };
        for v in &node.inputs {
            if !defined.get(v.0 as usize).copied().unwrap_or(false) {
                return Err(fail(format!("reads %{} before it is defined", v.0)));
            }
        }
        for v in &node.outputs {
            match defined.get_mut(v.0 as usize) {
                None => return Err(fail(format!("writes unknown value %{}", v.0))),
                Some(true) => return Err(fail(format!("redefines %{}", v.0))),
                Some(d) => *d = true,
            }
        }
        if let Some(layer) = node.layer
            && layer >= graph.n_layers
        {
            return Err(fail(format!("layer {layer} of {}", graph.n_layers)));
        }
        let checker = Checker {
            graph,
            node_inputs: &node.inputs,
            node_outputs: &node.outputs,
        };
        checker.check(&node.op, &mut kv_written).map_err(fail)?;
        if let Some(a) = node.op.attention() {
            let owner = *kv_owner.entry((a.kv_group, a.kv_slot)).or_insert(a.layer);
            if owner != a.layer {
                return Err(fail(format!(
                    "layer {} keeps its K/V in group {} slot {}, which holds layer {owner}'s",
                    a.layer, a.kv_group, a.kv_slot
                )));
            }
        }
    }
    if !defined[output.0 as usize] {
        return Err(IrError::Graph("the output is never computed".into()));
    }
    match graph.value(output) {
        Some(ValueType::F32 {
            rows: Rows::Outputs,
            ..
        }) => Ok(()),
        other => Err(IrError::Graph(format!(
            "the output is {other:?}, not logits rows"
        ))),
    }
}

struct Checker<'a> {
    graph: &'a Graph,
    node_inputs: &'a [ValueId],
    node_outputs: &'a [ValueId],
}

type Check = Result<(), String>;

impl Checker<'_> {
    fn check(&self, op: &Op, kv_written: &mut [bool]) -> Check {
        match op {
            Op::Embed { table } => {
                self.arity(1, 1)?;
                if self.ty(self.node_inputs[0]) != ValueType::TokenIds {
                    return Err("embeds something other than token ids".into());
                }
                let (_, cols) = self.matrix(*table)?;
                self.out(0, Rows::Tokens, cols)
            }
            Op::RmsNorm { weight, .. } => {
                self.arity(1, 1)?;
                let (rows, d) = self.f32_in(0)?;
                self.vector(*weight, d)?;
                self.out(0, rows, d)
            }
            Op::MatMul { weights } => {
                self.arity(1, weights.len())?;
                let (rows, k) = self.f32_in(0)?;
                self.matmuls(weights, rows, k)
            }
            Op::Add | Op::SwiGlu | Op::GeGlu => {
                self.arity(2, 1)?;
                let a = self.f32_in(0)?;
                if a != self.f32_in(1)? {
                    return Err("operands differ in shape".into());
                }
                self.out(0, a.0, a.1)
            }
            Op::AddBias { bias } => {
                self.arity(1, 1)?;
                let (rows, d) = self.f32_in(0)?;
                self.vector(*bias, d)?;
                self.out(0, rows, d)
            }
            Op::Scale { factor } => {
                self.arity(1, 1)?;
                if !factor.is_finite() {
                    return Err(format!("scales by {factor}"));
                }
                let (rows, d) = self.f32_in(0)?;
                self.out(0, rows, d)
            }
            Op::HeadRmsNorm {
                weight, head_dim, ..
            } => {
                self.arity(1, 1)?;
                let (rows, cols) = self.f32_in(0)?;
                self.heads(cols, *head_dim)?;
                self.vector(*weight, *head_dim)?;
                self.out(0, rows, cols)
            }
            Op::RmsNormAdd { weight, .. } => {
                self.arity(2, 1)?;
                let a = self.f32_in(0)?;
                if a != self.f32_in(1)? {
                    return Err("operands differ in shape".into());
                }
                self.vector(*weight, a.1)?;
                self.out(0, a.0, a.1)
            }
            Op::Rope { rope } => {
                self.arity(1, 1)?;
                let (rows, cols) = self.f32_in(0)?;
                self.rope(rope, rows, cols)?;
                self.out(0, rows, cols)
            }
            Op::KvWrite { attention } => {
                self.arity(2, 0)?;
                self.attention(attention)?;
                self.f32_in_is(0, Rows::Tokens, attention.kv_dim())?;
                self.f32_in_is(1, Rows::Tokens, attention.kv_dim())?;
                kv_written[attention.layer] = true;
                Ok(())
            }
            Op::Attention { attention } => {
                self.arity(1, 1)?;
                self.attention(attention)?;
                if !kv_written[attention.layer] {
                    return Err(format!(
                        "layer {} attends before its KV write",
                        attention.layer
                    ));
                }
                self.f32_in_is(0, Rows::Tokens, attention.q_dim())?;
                self.out(0, Rows::Tokens, attention.q_dim())
            }
            Op::SelectRows => {
                self.arity(1, 1)?;
                let (_, d) = self.f32_in(0)?;
                self.f32_in_is(0, Rows::Tokens, d)?;
                self.out(0, Rows::Outputs, d)
            }
            Op::RmsNormMatMul { norm, weights, .. } => {
                self.arity(1, weights.len())?;
                let (rows, k) = self.f32_in(0)?;
                self.vector(*norm, k)?;
                self.matmuls(weights, rows, k)
            }
            Op::MatMulSwiGlu { gate, up }
            | Op::RmsNormMatMulSwiGlu { gate, up, .. }
            | Op::MatMulGeGlu { gate, up }
            | Op::RmsNormMatMulGeGlu { gate, up, .. } => {
                self.arity(1, 1)?;
                let (rows, k) = self.f32_in(0)?;
                if let Op::RmsNormMatMulSwiGlu { norm, .. } | Op::RmsNormMatMulGeGlu { norm, .. } =
                    op
                {
                    self.vector(*norm, k)?;
                }
                let g = self.matrix(*gate)?;
                if g != self.matrix(*up)? || g.1 != k {
                    return Err(format!("gate {g:?} and up must match and take {k} inputs"));
                }
                self.out(0, rows, g.0)
            }
            Op::MatMulAdd { weight } => {
                self.arity(2, 1)?;
                let (rows, k) = self.f32_in(0)?;
                let (n, wk) = self.matrix(*weight)?;
                if wk != k {
                    return Err(format!("weight takes {wk} inputs, x has {k}"));
                }
                self.f32_in_is(1, rows, n)?;
                self.out(0, rows, n)
            }
            Op::RopeKvWrite { rope, attention }
            | Op::QkNormRopeKvWrite {
                rope, attention, ..
            } => {
                self.arity(3, 1)?;
                self.attention(attention)?;
                if let Op::QkNormRopeKvWrite { q_norm, k_norm, .. } = op {
                    self.vector(*q_norm, attention.head_dim)?;
                    self.vector(*k_norm, attention.head_dim)?;
                }
                if rope.head_dim != attention.head_dim {
                    return Err(format!(
                        "RoPE heads of {} for attention heads of {}",
                        rope.head_dim, attention.head_dim
                    ));
                }
                self.rope(rope, Rows::Tokens, attention.q_dim())?;
                self.f32_in_is(0, Rows::Tokens, attention.q_dim())?;
                self.f32_in_is(1, Rows::Tokens, attention.kv_dim())?;
                self.f32_in_is(2, Rows::Tokens, attention.kv_dim())?;
                kv_written[attention.layer] = true;
                self.out(0, Rows::Tokens, attention.q_dim())
            }
        }
    }

    fn arity(&self, inputs: usize, outputs: usize) -> Check {
        if self.node_inputs.len() != inputs || self.node_outputs.len() != outputs {
            return Err(format!(
                "takes {inputs} inputs and gives {outputs} outputs, has {} and {}",
                self.node_inputs.len(),
                self.node_outputs.len()
            ));
        }
        Ok(())
    }

    fn ty(&self, v: ValueId) -> ValueType {
        self.graph.values[v.0 as usize]
    }

    fn f32_in(&self, i: usize) -> Result<(Rows, usize), String> {
        match self.ty(self.node_inputs[i]) {
            ValueType::F32 { rows, cols } => Ok((rows, cols)),
            ValueType::TokenIds => Err(format!("input {i} is token ids, not activations")),
        }
    }

    fn f32_in_is(&self, i: usize, rows: Rows, cols: usize) -> Check {
        let found = self.f32_in(i)?;
        if found != (rows, cols) {
            return Err(format!(
                "input {i} is {found:?}, expected ({rows:?}, {cols})"
            ));
        }
        Ok(())
    }

    fn out(&self, i: usize, rows: Rows, cols: usize) -> Check {
        let found = self.ty(self.node_outputs[i]);
        let expected = ValueType::F32 { rows, cols };
        if found != expected {
            return Err(format!("output {i} is {found:?}, expected {expected:?}"));
        }
        Ok(())
    }

    fn matrix(&self, w: WeightId) -> Result<(usize, usize), String> {
        let weight = self
            .graph
            .weight(w)
            .ok_or_else(|| format!("unknown weight {}", w.0))?;
        if weight.cols % weight.dtype.block_len() != 0 {
            return Err(format!(
                "{}: {} columns do not fill {} blocks",
                weight.name, weight.cols, weight.dtype
            ));
        }
        Ok((weight.rows, weight.cols))
    }

    fn vector(&self, w: WeightId, len: usize) -> Check {
        let (rows, cols) = self.matrix(w)?;
        if rows != 1 || cols != len {
            return Err(format!(
                "vector weight {} is ({rows}, {cols}), expected (1, {len})",
                w.0
            ));
        }
        Ok(())
    }

    fn matmuls(&self, weights: &[WeightId], rows: Rows, k: usize) -> Check {
        if weights.is_empty() {
            return Err("no weights".into());
        }
        for (i, &w) in weights.iter().enumerate() {
            let (n, wk) = self.matrix(w)?;
            if wk != k {
                return Err(format!("weight {i} takes {wk} inputs, x has {k}"));
            }
            self.out(i, rows, n)?;
        }
        Ok(())
    }

    fn heads(&self, cols: usize, head_dim: usize) -> Check {
        if head_dim == 0 || !cols.is_multiple_of(head_dim) {
            return Err(format!("{cols} columns are not whole heads of {head_dim}"));
        }
        Ok(())
    }

    fn rope(&self, rope: &RopeParams, rows: Rows, cols: usize) -> Check {
        if rows != Rows::Tokens || rope.head_dim == 0 || !cols.is_multiple_of(rope.head_dim) {
            return Err(format!(
                "({rows:?}, {cols}) is not whole heads of {}",
                rope.head_dim
            ));
        }
        if rope.rope_dims > rope.head_dim || !rope.rope_dims.is_multiple_of(2) {
            return Err(format!(
                "rotates {} of {} dims",
                rope.rope_dims, rope.head_dim
            ));
        }
        if let Some(f) = rope.freq_factors {
            self.vector(f, rope.rope_dims / 2)?;
        }
        Ok(())
    }

    fn attention(&self, a: &AttentionParams) -> Check {
        if a.layer >= self.graph.n_layers {
            return Err(format!("layer {} of {}", a.layer, self.graph.n_layers));
        }
        if a.n_kv_heads == 0 || !a.n_heads.is_multiple_of(a.n_kv_heads) || a.head_dim == 0 {
            return Err(format!(
                "{} query heads over {} KV heads",
                a.n_heads, a.n_kv_heads
            ));
        }
        if a.window == Some(0) {
            return Err("a sliding window of 0 positions".into());
        }
        if !a.scale.is_finite() || a.scale <= 0.0 {
            return Err(format!("an attention scale of {}", a.scale));
        }
        Ok(())
    }
}
