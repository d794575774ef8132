//! The step buffer, the same for every GPU kernel set (WGSL and CUDA). Every kernel reads the step (checked first with
//! `kiln_ir::backend::StepLimits`) from one `u32` buffer: a header of region offsets (the `STEP_*` constants of prelude.wgsl), then
//! token ids, positions, each token's sequence, the output rows, where each block table
//! starts (group-major: the table of sequence s in KV group g is entry g·n_seqs + s), the
//! RoPE cos/sin of every (token, pair) of each RoPE geometry of the plan as f32 bits,
//! with a directory of them, and the block tables themselves. (STEP_ROPE and
//! STEP_ROPE_PAIRS name the first geometry's table, what the CUDA kernels read.)

use kiln_ir::Plan;
use kiln_ir::backend::{Step, WeightSource};
use kiln_ir::{RopeMode, RopeParams};

use crate::HostError;

/// Words of the header (prelude.wgsl: STEP_N_TOKENS .. STEP_ROPE_PAIRS, padded).
pub const HEADER_WORDS: usize = 16;

/// The RoPE geometry of a plan, with its frequency factors decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeTable {
    pub params: RopeParams,
    pub factors: Option<Vec<f32>>,
}

impl RopeTable {
    pub fn pairs(&self) -> usize {
        self.params.rope_dims / 2
    }

    /// cos/sin of every (token, pair), in f64 like the CPU backend's table.
    fn push(&self, positions: &[u32], out: &mut Vec<u32>) {
        let rope = &self.params;
        for &pos in positions {
            let p = f64::from(pos) * f64::from(rope.freq_scale);
            for i in 0..self.pairs() {
                let factor = self.factors.as_ref().map_or(1.0, |f| f64::from(f[i]));
                let theta = f64::from(rope.theta).powf(-2.0 * i as f64 / rope.rope_dims as f64);
                let (sin, cos) = (p * theta / factor).sin_cos();
                out.push((cos as f32).to_bits());
                out.push((sin as f32).to_bits());
            }
        }
    }
}

/// Words of each RoPE geometry's directory entry: offset of its cos/sin, pairs, NeoX.
pub const ROPE_DIR_WORDS: usize = 3;

/// The step buffer's words for a checked step, with the cos/sin of each RoPE geometry
/// of the plan (`ropes`, in the order the kernels' params index them) and the plan's
/// KV groups (`n_groups`, at least 1).
pub fn words(step: &Step<'_>, ropes: &[RopeTable], n_groups: usize) -> Result<Vec<u32>, HostError> {
    let n = step.token_ids.len();
    let seqs = step.block_tables.len();
    let pairs: usize = ropes.iter().map(RopeTable::pairs).sum();
    let table_words: usize = step.block_tables.iter().map(|t| t.len()).sum();
    let total = HEADER_WORDS
        + 3 * n
        + step.output_rows.len()
        + seqs
        + ROPE_DIR_WORDS * ropes.len()
        + 2 * n * pairs
        + table_words;
    if total > u32::MAX as usize {
        return Err(HostError::BadStep(format!("a step of {total} words")));
    }
    let mut w = vec![0u32; HEADER_WORDS];
    w[0] = n as u32;
    w[1] = step.output_rows.len() as u32;
    let region = |w: &mut Vec<u32>, slot: usize, data: &[u32]| {
        w[slot] = w.len() as u32;
        w.extend_from_slice(data);
    };
    region(&mut w, 2, step.token_ids);
    region(&mut w, 3, step.positions);
    region(&mut w, 4, step.token_seq);
    region(&mut w, 5, step.output_rows);
    region(&mut w, 6, &vec![0; seqs]);
    w[9] = (seqs / n_groups.max(1)) as u32;
    region(&mut w, 10, &vec![0; ROPE_DIR_WORDS * ropes.len()]);
    for (r, rope) in ropes.iter().enumerate() {
        let dir = w[10] as usize + ROPE_DIR_WORDS * r;
        w[dir] = w.len() as u32;
        w[dir + 1] = rope.pairs() as u32;
        w[dir + 2] = u32::from(rope.params.mode == RopeMode::Neox);
        if r == 0 {
            w[7] = w[dir];
            w[8] = w[dir + 1];
        }
        rope.push(step.positions, &mut w);
    }
    for (s, table) in step.block_tables.iter().enumerate() {
        let start = w.len() as u32;
        let at = w[6] as usize + s;
        w[at] = start;
        w.extend_from_slice(table);
    }
    Ok(w)
}

/// The step buffer's bytes for a checked step (little-endian words), what a backend
/// uploads before running the step.
pub fn pack(step: &Step<'_>, ropes: &[RopeTable], n_groups: usize) -> Result<Vec<u8>, HostError> {
    words(step, ropes, n_groups).map(|w| crate::output::le_bytes(&w))
}

/// Each RoPE geometry of `plan`'s launches once, in order of first use (Gemma 3: one base
/// for local layers, one for global): the order the kernels index the step's tables by.
pub fn rope_geometries(plan: &Plan) -> Vec<RopeParams> {
    let mut ropes: Vec<RopeParams> = Vec::new();
    for r in plan.launches.iter().filter_map(|l| l.op.rope()) {
        if !ropes.contains(r) {
            ropes.push(*r);
        }
    }
    ropes
}

/// The RoPE table of geometry `params`, its frequency factors (a weight) read and decoded.
pub fn rope_table(
    plan: &Plan,
    source: &dyn WeightSource,
    params: RopeParams,
) -> Result<RopeTable, HostError> {
    let factors = match params.freq_factors {
        None => None,
        Some(id) => {
            let w = &plan.graph.weights[id.0 as usize];
            let bad = |reason: String| HostError::Weight {
                name: w.name.clone(),
                reason,
            };
            let bytes = source
                .weight(&w.name)
                .ok_or_else(|| bad("not in the model".into()))?;
            let mut v = vec![0.0f32; w.rows * w.cols];
            kiln_ir::quant::dequantize_row(w.dtype, bytes.as_slice(), &mut v)
                .map_err(|e| bad(e.to_string()))?;
            if v.len() < params.rope_dims / 2 {
                return Err(bad(format!(
                    "{} factors for {} dims",
                    v.len(),
                    params.rope_dims
                )));
            }
            Some(v)
        }
    };
    Ok(RopeTable { params, factors })
}
