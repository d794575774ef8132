//! The graph: weights, values and nodes in execution order.

use crate::DType;
use crate::op::{Op, WeightId};

/// A value (activation) of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Symbolic row counts of activations; concrete only when a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rows {
    /// Tokens in the step (all sequences of a batch together).
    Tokens,
    /// Rows whose logits the step wants (one per sequence when decoding).
    Outputs,
}

/// The type of an activation: token ids, or an f32 matrix (rows, cols).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// The step's token ids, one u32 per token.
    TokenIds,
    /// f32 activations.
    F32 { rows: Rows, cols: usize },
}

impl ValueType {
    pub fn cols(&self) -> usize {
        match self {
            ValueType::TokenIds => 1,
            ValueType::F32 { cols, .. } => *cols,
        }
    }

    pub fn rows(&self) -> Rows {
        match self {
            ValueType::TokenIds => Rows::Tokens,
            ValueType::F32 { rows, .. } => *rows,
        }
    }

    /// Bytes with `tokens` rows of Tokens and `outputs` rows of Outputs.
    pub fn bytes(&self, tokens: usize, outputs: usize) -> usize {
        let rows = match self.rows() {
            Rows::Tokens => tokens,
            Rows::Outputs => outputs,
        };
        rows * self.cols() * 4
    }
}

/// A weight tensor: a matrix (rows, cols) or a vector (rows = 1), stored as `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub name: String,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// The transformer block this node belongs to (None outside the blocks).
    pub layer: Option<usize>,
}

/// A model step as a graph. Nodes are in execution order; every value has one producer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub weights: Vec<Weight>,
    pub values: Vec<ValueType>,
    pub nodes: Vec<Node>,
    /// The token ids of the step.
    pub input: Option<ValueId>,
    /// The logits (Outputs, vocab).
    pub output: Option<ValueId>,
    pub n_layers: usize,
}

impl Graph {
    pub fn new(n_layers: usize) -> Graph {
        Graph {
            n_layers,
            ..Graph::default()
        }
    }

    pub fn add_weight(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> WeightId {
        self.weights.push(Weight {
            name: name.into(),
            dtype,
            rows,
            cols,
        });
        WeightId(self.weights.len() as u32 - 1)
    }

    pub fn weight(&self, id: WeightId) -> Option<&Weight> {
        self.weights.get(id.0 as usize)
    }

    pub fn new_value(&mut self, ty: ValueType) -> ValueId {
        self.values.push(ty);
        ValueId(self.values.len() as u32 - 1)
    }

    pub fn value(&self, id: ValueId) -> Option<&ValueType> {
        self.values.get(id.0 as usize)
    }

    /// Append a node producing new values of the given types; returns their ids.
    pub fn push(
        &mut self,
        op: Op,
        inputs: &[ValueId],
        outputs: &[ValueType],
        layer: Option<usize>,
    ) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = outputs.iter().map(|&t| self.new_value(t)).collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
            layer,
        });
        outputs
    }

    /// How many node inputs (plus the graph output) read each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.values.len()];
        for node in &self.nodes {
            for v in &node.inputs {
                counts[v.0 as usize] += 1;
            }
        }
        if let Some(out) = self.output {
            counts[out.0 as usize] += 1;
        }
        counts
    }

    /// Index of the node producing each value (None for the graph input).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut producers = vec![None; self.values.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for v in &node.outputs {
                producers[v.0 as usize] = Some(i);
            }
        }
        producers
    }

    /// Drop values no node produces or reads (left behind by fusion) and renumber.
    pub fn compact(&mut self) {
        let mut keep = vec![false; self.values.len()];
        for node in &self.nodes {
            for v in node.inputs.iter().chain(&node.outputs) {
                keep[v.0 as usize] = true;
            }
        }
        for v in self.input.iter().chain(&self.output) {
            keep[v.0 as usize] = true;
        }
        let mut remap = vec![None; self.values.len()];
        let mut values = Vec::new();
        for (i, ty) in self.values.iter().enumerate() {
            if keep[i] {
                remap[i] = Some(ValueId(values.len() as u32));
                values.push(*ty);
            }
        }
        let map = |v: &mut ValueId| *v = remap[v.0 as usize].expect("kept");
        for node in &mut self.nodes {
            node.inputs.iter_mut().for_each(map);
            node.outputs.iter_mut().for_each(map);
        }
        self.input.iter_mut().for_each(map);
        self.output.iter_mut().for_each(map);
        self.values = values;
    }

    /// A readable listing: one node a line.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let layer = node.layer.map_or("  -".to_string(), |l| format!("{l:3}"));
            let ins: Vec<String> = node.inputs.iter().map(|v| format!("%{}", v.0)).collect();
            let outs: Vec<String> = node.outputs.iter().map(|v| format!("%{}", v.0)).collect();
            let weights: Vec<String> = node
                .op
                .matrices()
                .iter()
                .filter_map(|&w| self.weight(w))
                .map(|w| format!("{}:{}", w.name, w.dtype))
                .collect();
            out.push_str(&format!(
                "[{layer}] {} = {}({}) {}\n",
                outs.join(", "),
                node.op.name(),
                ins.join(", "),
                weights.join(" ")
            ));
        }
        out
    }
}
