//! Building the plans of a case: weights in one blob as a model file holds them, graphs
//! fed by F32 embedding tables of random rows (the conformance suite's device), and
//! loading them on a backend.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use kiln_ir::backend::{Backend, SharedBytes, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::quant::quantize_row;
use kiln_ir::{DType, Graph, Op, Rows, ValueId, ValueType, WeightId, lower};

use crate::{Constructor, Rng};

/// Weights back to back, 32-byte aligned as in a GGUF file, by name.
#[derive(Debug, Default)]
pub struct Blob {
    bytes: Vec<u8>,
    ranges: HashMap<String, Range<usize>>,
}

impl Blob {
    pub fn with_capacity(bytes: usize) -> Blob {
        Blob {
            bytes: Vec::with_capacity(bytes),
            ranges: HashMap::new(),
        }
    }

    /// Append `bytes` as weight `name`.
    pub fn push(&mut self, name: &str, bytes: &[u8]) {
        let start = self.bytes.len().next_multiple_of(32);
        self.bytes.resize(start, 0);
        self.bytes.extend_from_slice(bytes);
        self.ranges
            .insert(name.to_string(), start..self.bytes.len());
    }

    /// Append `values` (rows, cols) stored as `dtype`.
    pub fn push_values(
        &mut self,
        name: &str,
        dtype: DType,
        cols: usize,
        values: &[f32],
    ) -> Result<(), String> {
        let bytes = quantize_rows(dtype, cols, values)?;
        self.push(name, &bytes);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The blob, shareable by every plan of a workload.
    pub fn share(self) -> Shared {
        Shared {
            blob: Arc::new(self.bytes),
            ranges: self.ranges,
        }
    }
}

/// `values` (rows, cols) quantized row by row to `dtype`.
pub fn quantize_rows(dtype: DType, cols: usize, values: &[f32]) -> Result<Vec<u8>, String> {
    let row_bytes = row_bytes(dtype, cols)?;
    let rows = values.len() / cols;
    let mut bytes = vec![0u8; rows * row_bytes];
    for (src, dst) in values.chunks(cols).zip(bytes.chunks_mut(row_bytes)) {
        quantize_row(dtype, src, dst).map_err(|e| format!("quantize {dtype}: {e}"))?;
    }
    Ok(bytes)
}

/// Bytes of one row of `cols` values of `dtype`.
pub fn row_bytes(dtype: DType, cols: usize) -> Result<usize, String> {
    dtype
        .bytes_for(cols as u64)
        .map(|b| b as usize)
        .ok_or_else(|| format!("{cols} values are not whole {dtype} blocks"))
}

/// A random (rows, cols) matrix stored as `dtype`. Up to 64 distinct random rows are
/// quantized and repeated: the values a kernel reads are random (never zeros), and
/// building the many copies a rotation needs stays cheap.
pub fn random_matrix(
    dtype: DType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> Result<Vec<u8>, String> {
    let distinct = rows.min(64);
    let slab = quantize_rows(dtype, cols, &rng.blocky(distinct * cols, 1.0))?;
    let mut bytes = Vec::with_capacity(rows * row_bytes(dtype, cols)?);
    while bytes.len() < rows * row_bytes(dtype, cols)? {
        let take = (rows * row_bytes(dtype, cols)? - bytes.len()).min(slab.len());
        bytes.extend_from_slice(&slab[..take]);
    }
    Ok(bytes)
}

/// The weights of a workload, shared by all its plans (each takes what its graph names).
#[derive(Clone, Debug)]
pub struct Shared {
    blob: Arc<Vec<u8>>,
    ranges: HashMap<String, Range<usize>>,
}

impl WeightSource for Shared {
    fn weight(&self, name: &str) -> Option<SharedBytes> {
        let range = self.ranges.get(name)?;
        SharedBytes::new(self.blob.clone(), range.clone())
    }
}

/// A graph under construction: token ids in, one output through `SelectRows`.
#[derive(Debug)]
pub struct GraphBuilder {
    pub graph: Graph,
    ids: ValueId,
}

impl GraphBuilder {
    pub fn new(n_layers: usize) -> GraphBuilder {
        let mut graph = Graph::new(n_layers);
        let ids = graph.new_value(ValueType::TokenIds);
        graph.input = Some(ids);
        GraphBuilder { graph, ids }
    }

    pub fn weight(&mut self, name: &str, dtype: DType, rows: usize, cols: usize) -> WeightId {
        self.graph.add_weight(name, dtype, rows, cols)
    }

    /// Activations (tokens, cols): rows of the F32 table `name` of `vocab` rows.
    pub fn embed(&mut self, name: &str, vocab: usize, cols: usize) -> ValueId {
        let table = self.weight(name, DType::F32, vocab, cols);
        self.node(Op::Embed { table }, &[self.ids], cols)
    }

    /// A node with one (tokens, cols) output.
    pub fn node(&mut self, op: Op, inputs: &[ValueId], cols: usize) -> ValueId {
        self.graph.push(
            op,
            inputs,
            &[ValueType::F32 {
                rows: Rows::Tokens,
                cols,
            }],
            None,
        )[0]
    }

    /// A node with no output (a KV write).
    pub fn effect(&mut self, op: Op, inputs: &[ValueId]) {
        self.graph.push(op, inputs, &[], None);
    }

    /// The graph, with `value` (tokens, cols) selected into its output.
    pub fn finish(mut self, value: ValueId, cols: usize) -> Graph {
        let out = self.graph.push(
            Op::SelectRows,
            &[value],
            &[ValueType::F32 {
                rows: Rows::Outputs,
                cols,
            }],
            None,
        )[0];
        self.graph.output = Some(out);
        self.graph
    }
}

/// Open a backend, lower `graph` for it (unfused: the graph already holds the op under
/// test) and load it with `kv_pages` pages of `kv`.
pub fn load(
    make: Constructor,
    graph: Graph,
    weights: &Shared,
    kv: &KvLayout,
    kv_pages: usize,
    (max_tokens, max_outputs): (usize, usize),
) -> Result<Box<dyn Backend>, String> {
    let mut backend = make()?;
    let unlowered = graph.clone();
    let plan = lower(
        graph,
        &|op| backend.supports(op, &unlowered),
        max_tokens,
        max_outputs,
    )
    .map_err(|e| format!("lower: {e}"))?;
    backend
        .load_plan(&plan, weights, kv, kv_pages)
        .map_err(|e| format!("load_plan: {e}"))?;
    Ok(backend)
}

/// Per sequence, `pages` pages from a pool of `n_seqs × pages`, handed out in a shuffled
/// order (a pool after some churn, as the conformance suite pages).
pub fn shuffled_tables(rng: &mut Rng, n_seqs: usize, pages: usize) -> Vec<Vec<u32>> {
    let mut all: Vec<u32> = (0..(n_seqs * pages) as u32).collect();
    rng.shuffle(&mut all);
    all.chunks(pages).map(<[u32]>::to_vec).collect()
}
