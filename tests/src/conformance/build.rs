//! The blocks the op builders share: a graph builder that stores weights as a model file
//! would, KV paging in shuffled order, and the step schedule (poison first, then the
//! steps that matter) with the choice of output rows.

use std::ops::Range;
use std::sync::Arc;

use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_ir::quant::{dequantize_row, quantize_row};
use kiln_ir::{DType, Graph, Op, RopeMode, RopeParams, Rows, ValueId, ValueType, WeightId};

use super::ops::RopeSpec;
use super::reference::{self as oracle, f64s};
use super::{Built, Probe, Rng, StepData};

/// A graph under construction with its weights, stored as a model file would hold them.
pub(super) struct Builder {
    pub(super) graph: Graph,
    ids: ValueId,
    blob: Vec<u8>,
    weights: Vec<(String, Range<usize>)>,
}

impl Builder {
    pub(super) fn new() -> Builder {
        let mut graph = Graph::new(1);
        let ids = graph.new_value(ValueType::TokenIds);
        graph.input = Some(ids);
        Builder {
            graph,
            ids,
            blob: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Store `values` (rows, cols) as `dtype`; returns the weight and its values as
    /// stored (dequantized), widened for the oracle.
    pub(super) fn weight(
        &mut self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> (WeightId, Vec<f64>) {
        let row_bytes = dtype.bytes_for(cols as u64).expect("whole blocks") as usize;
        let start = self.blob.len().next_multiple_of(32); // GGUF aligns tensor data
        self.blob.resize(start + rows * row_bytes, 0);
        let mut stored = vec![0.0f32; rows * cols]; // (rows, cols)
        for r in 0..rows {
            let bytes = &mut self.blob[start + r * row_bytes..][..row_bytes];
            quantize_row(dtype, &values[r * cols..][..cols], bytes).expect("row geometry");
            dequantize_row(dtype, bytes, &mut stored[r * cols..][..cols]).expect("row geometry");
        }
        self.weights
            .push((name.to_string(), start..self.blob.len()));
        (
            self.graph.add_weight(name, dtype, rows, cols),
            f64s(&stored),
        )
    }

    /// Activations: an F32 table of `vocab` random rows of `cols`, embedded by the step's
    /// token ids. Returns the value and the table (vocab, cols).
    pub(super) fn input(
        &mut self,
        name: &str,
        vocab: usize,
        cols: usize,
        amplitude: f32,
        rng: &mut Rng,
    ) -> (ValueId, Vec<f32>) {
        let table = rng.blocky(vocab * cols, amplitude);
        let (id, _) = self.weight(name, DType::F32, vocab, cols, &table);
        (self.node(Op::Embed { table: id }, &[self.ids], cols), table)
    }

    /// [`Builder::input`] with the ranges of a real model's activations: every 37th
    /// column (from 5) an outlier of 1e5 to 2e5, past f16's largest (65504), as the
    /// outlier features of large models' residual streams; the other columns of row r at
    /// 10^(r mod 5 − 2), 1e-2 to 1e2. What the WGSL GEMM's f16 tiles must scale, never
    /// overflow. (The outliers keep the rows' norms alike, so a zeroed row still fails.)
    pub(super) fn input_outliers(
        &mut self,
        name: &str,
        vocab: usize,
        cols: usize,
        rng: &mut Rng,
    ) -> (ValueId, Vec<f32>) {
        let mut table = rng.blocky(vocab * cols, 1.0);
        for (r, row) in table.chunks_mut(cols).enumerate() {
            let scale = 10f32.powi(r as i32 % 5 - 2);
            for (c, v) in row.iter_mut().enumerate() {
                *v *= scale;
                if c % 37 == 5 {
                    *v = (2e5 * rng.uniform(0.5, 1.0)).copysign(*v);
                }
            }
        }
        let (id, _) = self.weight(name, DType::F32, vocab, cols, &table);
        (self.node(Op::Embed { table: id }, &[self.ids], cols), table)
    }

    /// A random (rows, cols) matrix stored as `dtype`.
    pub(super) fn matrix(
        &mut self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        rng: &mut Rng,
    ) -> (WeightId, Vec<f64>) {
        let values = rng.blocky(rows * cols, 1.0);
        self.weight(name, dtype, rows, cols, &values)
    }

    /// A random RMSNorm weight in [0.5, 1.5).
    pub(super) fn norm(&mut self, name: &str, d: usize, rng: &mut Rng) -> (WeightId, Vec<f64>) {
        let values = rng.uniform_vec(d, 0.5, 1.5);
        self.weight(name, DType::F32, 1, d, &values)
    }

    /// The op's RoPE parameters and the oracle's, with random frequency factors if asked.
    pub(super) fn rope(
        &mut self,
        head_dim: usize,
        spec: RopeSpec,
        rng: &mut Rng,
    ) -> (RopeParams, oracle::Rope) {
        let factors = spec.factors.then(|| {
            let values = rng.uniform_vec(spec.rope_dims / 2, 1.0, 4.0);
            self.weight("rope_freqs", DType::F32, 1, spec.rope_dims / 2, &values)
        });
        let params = RopeParams {
            head_dim,
            rope_dims: spec.rope_dims,
            theta: spec.theta,
            freq_scale: spec.freq_scale,
            freq_factors: factors.as_ref().map(|(id, _)| *id),
            mode: spec.mode,
        };
        let reference = oracle::Rope {
            head_dim,
            rope_dims: spec.rope_dims,
            theta: f64::from(spec.theta),
            freq_scale: f64::from(spec.freq_scale),
            freq_factors: factors.map(|(_, f)| f),
            neox: spec.mode == RopeMode::Neox,
        };
        (params, reference)
    }

    /// A node with one (tokens, cols) output.
    pub(super) fn node(&mut self, op: Op, inputs: &[ValueId], cols: usize) -> ValueId {
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
}

/// KV pages for sequences of `lens` positions, handed out in a shuffled order from a pool
/// with a few spare pages.
pub(super) struct Paging {
    tables: Vec<Vec<u32>>,
    pool: usize,
}

impl Paging {
    pub(super) fn new(rng: &mut Rng, lens: &[usize], page_size: usize) -> Paging {
        let needed: Vec<usize> = lens.iter().map(|l| l.div_ceil(page_size)).collect();
        let pool = needed.iter().sum::<usize>() + 3;
        let mut pages: Vec<u32> = (0..pool as u32).collect();
        rng.shuffle(&mut pages);
        let mut rest = pages.as_slice();
        let tables = needed
            .iter()
            .map(|&n| {
                let (table, tail) = rest.split_at(n);
                rest = tail;
                table.to_vec()
            })
            .collect();
        Paging { tables, pool }
    }
}

/// A step before its output rows are chosen: per probe, (tokens, cols) expected values
/// and powers.
pub(super) struct Planned {
    pub(super) token_ids: Vec<u32>,
    pub(super) positions: Vec<u32>,
    pub(super) token_seq: Vec<u32>,
    pub(super) expected: Vec<Vec<f64>>,
    pub(super) power: Option<Vec<Vec<f64>>>,
}

impl Planned {
    pub(super) fn new(n_probes: usize) -> Planned {
        Planned {
            token_ids: Vec::new(),
            positions: Vec::new(),
            token_seq: Vec::new(),
            expected: vec![Vec::new(); n_probes],
            power: None,
        }
    }
}

/// Expected values whose power is their square.
pub(super) fn plain(values: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let power = values.iter().map(|v| v * v).collect();
    (values, power)
}

/// The steps of an op that works row by row: the first (ids tokens..2·tokens) poisons
/// the arena, the second (ids 0..tokens) must overwrite it; both are checked. The tokens
/// are split over two sequences at random start positions up to `max_start` (for RoPE).
/// `reference(ids, positions)` gives each probe's (tokens, cols) values and powers.
pub(super) fn rowwise(
    b: Builder,
    rng: &mut Rng,
    tokens: usize,
    max_start: usize,
    probes: &[(ValueId, usize)],
    reference: impl Fn(&[usize], &[u32]) -> Vec<(Vec<f64>, Vec<f64>)>,
) -> Built {
    let lens: Vec<usize> = [tokens.div_ceil(2), tokens / 2]
        .into_iter()
        .filter(|&l| l > 0)
        .collect();
    let padded: Vec<usize> = lens.iter().map(|l| l + max_start).collect();
    let paging = Paging::new(rng, &padded, 16);
    let layout = KvLayout::new(1, 1, 32)
        .and_then(|l| l.with_dtype(KvDtype::F16))
        .expect("a valid KV layout");
    let steps = [tokens, 0]
        .into_iter()
        .map(|base| {
            let mut step = Planned::new(probes.len());
            for (seq, &len) in lens.iter().enumerate() {
                let start = rng.below(max_start + 1);
                step.positions
                    .extend((start..start + len).map(|p| p as u32));
                step.token_seq.extend(std::iter::repeat_n(seq as u32, len));
            }
            let ids: Vec<usize> = (base..base + tokens).collect();
            step.token_ids = ids.iter().map(|&i| i as u32).collect();
            let (expected, power) = reference(&ids, &step.positions).into_iter().unzip();
            step.expected = expected;
            step.power = Some(power);
            step
        })
        .collect();
    finish(b, rng, probes, layout, paging, steps)
}

/// Route each probe through SelectRows to the graph's output and choose every step's
/// output rows: a shuffled subset in the first step, every row after.
pub(super) fn finish(
    mut b: Builder,
    rng: &mut Rng,
    probes: &[(ValueId, usize)],
    kv_layout: KvLayout,
    paging: Paging,
    planned: Vec<Planned>,
) -> Built {
    let mut out = Vec::new();
    for &(value, cols) in probes {
        let selected = b.graph.push(
            Op::SelectRows,
            &[value],
            &[ValueType::F32 {
                rows: Rows::Outputs,
                cols,
            }],
            None,
        )[0];
        out.push(Probe {
            value: selected,
            cols,
            expected: Vec::new(),
            power: Vec::new(),
        });
    }
    let mut steps = Vec::new();
    for (i, p) in planned.into_iter().enumerate() {
        let n = p.token_ids.len();
        let mut rows: Vec<u32> = (0..n as u32).collect();
        if i == 0 {
            rng.shuffle(&mut rows);
            rows.truncate(n.div_ceil(2));
        }
        let power = p
            .power
            .unwrap_or_else(|| p.expected.iter().map(|e| plain(e.clone()).1).collect());
        for (probe, (expected, power)) in out.iter_mut().zip(p.expected.iter().zip(&power)) {
            let pick = |all: &[f64]| {
                rows.iter()
                    .flat_map(|&r| &all[r as usize * probe.cols..][..probe.cols])
                    .copied()
                    .collect()
            };
            probe.expected.push(pick(expected));
            probe.power.push(pick(power));
        }
        steps.push(StepData {
            token_ids: p.token_ids,
            positions: p.positions,
            token_seq: p.token_seq,
            block_tables: paging.tables.clone(),
            output_rows: rows,
        });
    }
    let max_tokens = steps
        .iter()
        .map(|s| s.token_ids.len())
        .max()
        .expect("a case has steps");
    Built {
        graph: b.graph,
        blob: Arc::new(b.blob),
        weights: b.weights,
        kv_layout,
        kv_pages: paging.pool,
        max_tokens,
        max_outputs: max_tokens,
        steps,
        probes: out,
    }
}
