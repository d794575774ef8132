//! The int8 decode path of the matmul family. A launch whose matrices are all of a type
//! the int8 matvec reads ([`MATVEC_DTYPES`], packed at load) gets, for steps of at most
//! [`MATVEC_MAX_ROWS`] rows: one quantization of its input into the arena's scratch
//! (`quantize_q8`, or `rmsnorm_quantize_q8` with the RMSNorm folded in), then an int8
//! matvec per weight (in chunks of rows where a weight is larger than a window; the first
//! after a barrier). Its f32 dispatches keep the larger steps ([`Grid::MatmulRest`]).
//!
//! The scratch ([`matvec_scratch_bytes`], after the plan's values): the quants of
//! `MATVEC_MAX_ROWS` rows of the widest such input (`k` bytes a row), then their
//! (d, Σq) pairs (8 bytes per 32 values), each row at `k` of the launch at hand.

use super::*;
use crate::sources::MATVEC_DTYPES;

/// A matmul-family launch as the int8 path runs it.
struct MatvecLaunch {
    quantize: &'static str,
    matvec: &'static str,
    norm: Option<(WeightId, f32)>,
    /// (weight, second weight, output) of each matvec.
    parts: Vec<(WeightId, Option<WeightId>, ValueId)>,
    residual: Option<ValueId>,
}

fn matvec_launch(launch: &kiln_ir::Launch) -> Option<MatvecLaunch> {
    let (ins, outs) = (&launch.inputs, &launch.outputs);
    let out = *outs.first()?;
    let one = |w: WeightId, w2: Option<WeightId>| vec![(w, w2, out)];
    let each = |ws: &[WeightId]| ws.iter().zip(outs).map(|(&w, &o)| (w, None, o)).collect();
    let (quantize, matvec, norm, parts, residual) = match &launch.op {
        Op::MatMul { weights } => ("quantize_q8", "matvec_q8", None, each(weights), None),
        Op::RmsNormMatMul { norm, eps, weights } => (
            "rmsnorm_quantize_q8",
            "matvec_q8",
            Some((*norm, *eps)),
            each(weights),
            None,
        ),
        Op::MatMulAdd { weight } => (
            "quantize_q8",
            "matvec_q8_add",
            None,
            one(*weight, None),
            Some(*ins.get(1)?),
        ),
        Op::MatMulSwiGlu { gate, up } => (
            "quantize_q8",
            "matvec_q8_swiglu",
            None,
            one(*gate, Some(*up)),
            None,
        ),
        Op::RmsNormMatMulSwiGlu {
            norm,
            eps,
            gate,
            up,
        } => (
            "rmsnorm_quantize_q8",
            "matvec_q8_swiglu",
            Some((*norm, *eps)),
            one(*gate, Some(*up)),
            None,
        ),
        Op::MatMulGeGlu { gate, up } => (
            "quantize_q8",
            "matvec_q8_geglu",
            None,
            one(*gate, Some(*up)),
            None,
        ),
        Op::RmsNormMatMulGeGlu {
            norm,
            eps,
            gate,
            up,
        } => (
            "rmsnorm_quantize_q8",
            "matvec_q8_geglu",
            Some((*norm, *eps)),
            one(*gate, Some(*up)),
            None,
        ),
        _ => return None,
    };
    Some(MatvecLaunch {
        quantize,
        matvec,
        norm,
        parts,
        residual,
    })
}

/// The input columns of a launch the int8 path takes (every matrix of a packed type,
/// whole blocks), None for the others.
fn matvec_k(plan: &Plan, launch: &kiln_ir::Launch) -> Option<u32> {
    matvec_launch(launch)?;
    let matrices = launch.op.matrices();
    let k = plan.graph.weight(*matrices.first()?)?.cols;
    let fits = |w: &WeightId| {
        plan.graph.weight(*w).is_some_and(|w| {
            MATVEC_DTYPES.contains(&w.dtype) && w.cols == k && k.is_multiple_of(32)
        })
    };
    matrices.iter().all(fits).then_some(k as u32)
}

/// Words of a row's quants in the scratch (the (d, Σq) plane starts after
/// `MATVEC_MAX_ROWS` of them).
fn quant_words(k: u32) -> u32 {
    k / 4
}

/// Arena bytes of the int8 matvec's scratch for `plan` (0 when no launch takes it).
pub(in crate::program) fn matvec_scratch_bytes(plan: &Plan) -> u64 {
    let widest = (plan.launches.iter())
        .filter_map(|l| matvec_k(plan, l))
        .max();
    // Per row: the quants (k bytes) and a (d, Σq) pair per 32 values (k / 4 bytes).
    widest.map_or(0, |k| {
        u64::from(MATVEC_MAX_ROWS) * (u64::from(k) + u64::from(k) / 4)
    })
}

impl Builder<'_> {
    /// The launch's dispatches with the int8 path before its f32 ones (which keep the
    /// steps it does not take), or `f32` alone.
    pub(super) fn with_matvec_q8(
        &mut self,
        launch: &kiln_ir::Launch,
        f32: Vec<Dispatch>,
    ) -> Result<Vec<Dispatch>, KernelError> {
        let (Some(m), Some(k)) = (matvec_launch(launch), matvec_k(self.plan, launch)) else {
            return Ok(f32);
        };
        let x = launch.inputs[0];
        let rows = self.rows(m.parts[0].2);
        let q = self.q8_scratch;
        let ds = q + MATVEC_MAX_ROWS * quant_words(k);
        let norm_range: Vec<(u64, u64)> =
            m.norm.iter().map(|(g, _)| self.range(*g, None)).collect();
        self.place(&norm_range)?;
        let (norm_at, eps) = m.norm.map_or((0, 0.0), |(g, eps)| (self.vector(g), eps));
        let words = vec![
            header_word(rows),
            k,
            self.at(x),
            q,
            ds,
            norm_at,
            eps.to_bits(),
            0,
        ];
        let resources = match m.norm {
            Some(_) => vec![Params, Arena, Weights, Step],
            None => vec![Params, Arena, Step],
        };
        let mut all =
            vec![self.dispatch(m.quantize, None, words, resources, Grid::Quantize { rows })];
        for &(w, w2, out) in &m.parts {
            let (dtype, n, _, row_bytes) = self.weight(w);
            let chunk = match w2 {
                None => self.rows_per_window(w, row_bytes),
                Some(_) => n.max(1),
            };
            for r0 in (0..n.max(1)).step_by(chunk as usize) {
                let r1 = (r0 + chunk).min(n);
                let mut ranges = vec![self.range(w, Some((r0, r1)))];
                ranges.extend(w2.map(|w2| self.range(w2, None)));
                self.place(&ranges)?;
                let words = vec![
                    header_word(rows),
                    k,
                    r1 - r0,
                    row_bytes,
                    q,
                    ds,
                    self.at(out) + r0,
                    self.row_at(w, r0),
                    w2.map_or(0, |w2| self.row_at(w2, 0)),
                    m.residual.map_or(0, |r| self.at(r) + r0),
                    n,
                    0,
                ];
                let grid = Grid::Matvec { rows, n: r1 - r0 };
                let resources = vec![Params, Arena, Weights, Step];
                let mut d = self.dispatch(m.matvec, Some(dtype), words, resources, grid);
                // The quantization before it is the only write it waits for.
                d.barrier = all.len() == 1;
                all.push(d);
            }
        }
        for mut d in f32 {
            match d.grid {
                Grid::Matmul { rows, n, max_rows } => {
                    d.grid = Grid::MatmulRest { rows, n, max_rows };
                }
                // The tiled GEMM takes the steps past the int8 path's.
                Grid::Gemm {
                    rows,
                    tiles,
                    min_rows,
                } => {
                    let min_rows = min_rows.max(MATVEC_MAX_ROWS + 1);
                    d.grid = Grid::Gemm {
                        rows,
                        tiles,
                        min_rows,
                    };
                }
                _ => {}
            }
            all.push(d);
        }
        Ok(all)
    }
}
