//! A plan's output (the logits) as a device backend reads it: where it lies in the arena,
//! how many rows the last step gave it, the size checks of `read_logits`, `read_argmax`
//! and `read_top_k`, and the little-endian conversions of what comes back.

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, StepShape};
use kiln_ir::graph::Rows;

/// Where a plan's output lies in the arena and what its rows count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    /// Byte offset in the arena.
    pub offset: u64,
    pub rows: Rows,
    pub cols: usize,
    /// Rows at the largest step the plan takes.
    pub max_rows: usize,
}

impl Output {
    /// The output of `plan`, None for a plan without one.
    pub fn of(plan: &Plan) -> Option<Output> {
        let out = plan.graph.output?;
        let ty = &plan.graph.values[out.0 as usize];
        let largest = StepShape {
            tokens: plan.max_tokens,
            outputs: plan.max_outputs,
        };
        Some(Output {
            offset: plan.offsets[out.0 as usize].unwrap_or(0) as u64,
            rows: ty.rows(),
            cols: ty.cols(),
            max_rows: largest.rows(ty.rows()),
        })
    }

    /// Bytes of the output at the largest step (what a readback buffer must hold).
    pub fn max_bytes(&self) -> u64 {
        (self.max_rows * self.cols * 4) as u64
    }

    /// Rows of the output in a step of `shape`.
    pub fn rows_in(&self, shape: StepShape) -> usize {
        shape.rows(self.rows)
    }

    /// Bytes of the output in a step of `shape`.
    pub fn bytes_in(&self, shape: StepShape) -> u64 {
        (self.rows_in(shape) * self.cols * 4) as u64
    }

    /// Check a read of the last step's logits into `values` f32s: there must be a last
    /// step, and `values` must be its rows × cols. Returns the rows.
    pub fn check_logits(
        &self,
        last: Option<StepShape>,
        values: usize,
        backend: &'static str,
    ) -> Result<usize, BackendError> {
        let rows = last.map_or(0, |s| self.rows_in(s));
        if last.is_none() || values != rows * self.cols {
            return Err(BackendError::BadStep {
                backend,
                reason: format!("logits buffer of {values} for {} values", rows * self.cols),
            });
        }
        Ok(rows)
    }

    /// Check a device argmax of the last step: `ids` one per output row, `vocab` the
    /// output's columns.
    pub fn check_argmax(
        &self,
        last: Option<StepShape>,
        ids: usize,
        vocab: usize,
        backend: &'static str,
    ) -> Result<(), BackendError> {
        let rows = last.map_or(0, |s| self.rows_in(s));
        if last.is_none() || ids != rows || vocab != self.cols {
            return Err(BackendError::BadStep {
                backend,
                reason: format!(
                    "argmax of {ids} rows of {vocab} for {rows} rows of {}",
                    self.cols
                ),
            });
        }
        Ok(())
    }

    /// Check a device top-k of the last step: `candidates` k per output row, `vocab` the
    /// output's columns, 1 <= k <= vocab. Returns the rows.
    pub fn check_top_k(
        &self,
        last: Option<StepShape>,
        candidates: usize,
        vocab: usize,
        k: usize,
        backend: &'static str,
    ) -> Result<usize, BackendError> {
        let rows = last.map_or(0, |s| self.rows_in(s));
        if last.is_none() || k == 0 || k > vocab || vocab != self.cols || candidates != rows * k {
            return Err(BackendError::BadStep {
                backend,
                reason: format!(
                    "top-{k} of rows of {vocab} into {candidates} candidates for {rows} rows of {}",
                    self.cols
                ),
            });
        }
        Ok(rows)
    }
}

/// `values` as little-endian bytes (what a step buffer or params block uploads).
pub fn le_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Fill `out` with the f32s of `bytes`, little-endian (a readback).
pub fn f32s_from_le(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Fill `out` with the u32s of `bytes`, little-endian (a readback of token ids).
pub fn u32s_from_le(bytes: &[u8], out: &mut [u32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked_against_the_last_step() {
        let out = Output {
            offset: 64,
            rows: Rows::Outputs,
            cols: 10,
            max_rows: 4,
        };
        assert_eq!(out.max_bytes(), 160);
        let last = Some(StepShape {
            tokens: 7,
            outputs: 2,
        });
        assert_eq!(out.check_logits(last, 20, "test").unwrap(), 2);
        assert!(out.check_logits(last, 21, "test").is_err());
        assert!(out.check_logits(None, 0, "test").is_err(), "no step yet");
        assert!(out.check_argmax(last, 2, 10, "test").is_ok());
        assert!(out.check_argmax(last, 2, 9, "test").is_err());
        assert!(out.check_argmax(last, 7, 10, "test").is_err());
        assert_eq!(out.check_top_k(last, 6, 10, 3, "test").unwrap(), 2);
        assert_eq!(out.check_top_k(last, 20, 10, 10, "test").unwrap(), 2);
        assert!(out.check_top_k(last, 7, 10, 3, "test").is_err());
        assert!(out.check_top_k(last, 0, 10, 0, "test").is_err());
        assert!(out.check_top_k(last, 22, 10, 11, "test").is_err());
        assert!(out.check_top_k(last, 6, 9, 3, "test").is_err());
        assert!(out.check_top_k(None, 6, 10, 3, "test").is_err());
        let mut f = [0.0f32; 2];
        f32s_from_le(&le_bytes(&[1.5f32.to_bits(), (-2.0f32).to_bits()]), &mut f);
        assert_eq!(f, [1.5, -2.0]);
        let mut ids = [0u32; 2];
        u32s_from_le(&le_bytes(&[7, 1 << 20]), &mut ids);
        assert_eq!(ids, [7, 1 << 20]);
    }
}
