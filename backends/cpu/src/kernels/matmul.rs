//! The quantized matmul core: out (tokens, rows) = x (tokens, cols) · Wᵀ.
//!
//! Activations are quantized once per launch to 8-bit blocks (Q8_0 for Q4_0/Q5_0/Q8_0
//! weights, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, as llama.cpp's CPU backend does)
//! and, for the 32-value formats, staged for the SIMD tiles (`simd::Staged`), so the
//! inner loop is an integer block dot; float weights (F32/F16/BF16, and Q8_K)
//! dequantize a row at a time and use the f32 dot. Rows are split over
//! threads: a task computes a few rows for every token of the step into a buffer of its
//! own, then writes them, through the epilogue, into their columns of the output.

use std::cell::RefCell;

use kiln_ir::DType;
use kiln_ir::quant::{dequantize_row, dot_f32};

use super::WeightMatrix;
use crate::simd::{Format, StageTask, Staged};
use crate::{pool, simd};

/// Fewest rows per task: enough to amortise scheduling, few enough to balance two cores
/// to many.
const ROWS_PER_TASK: usize = 32;

/// Weight bytes × tokens a task covers at least, where the matrix is large enough to
/// give every thread [`TASKS_PER_THREAD`] of them: decode streams its weights, and a task
/// of 32 short rows (Gemma 3's Q8_0 LM head: 32 × 680 bytes) ends its stream every 22 KB,
/// its prefetches running into the rows another thread took. Measured on the LM head
/// (2-core Zen 4, one token): 32-row tasks 14 GB/s, 128 rows 24, 512 rows 29, 2,048 rows
/// 31, two contiguous halves 32.
const TASK_BYTES: usize = 1 << 20;

/// Tasks per thread a large matrix is cut into at least, so that a thread that was
/// preempted or started late leaves little for the others to wait on.
const TASKS_PER_THREAD: usize = 8;

/// Rows per task for a weight of `rows` rows of `row_bytes` against `n_tokens` tokens:
/// [`TASK_BYTES`] of work, fewer where the matrix would not give every thread
/// [`TASKS_PER_THREAD`] tasks, never below [`ROWS_PER_TASK`]. A multiple of
/// [`ROWS_PER_TASK`], so that the tiles of four rows cover a task whole.
fn rows_per_task(rows: usize, row_bytes: usize, n_tokens: usize, threads: usize) -> usize {
    let by_bytes = TASK_BYTES / (row_bytes * n_tokens).max(1);
    let by_balance = rows / (TASKS_PER_THREAD * threads.max(1));
    let rows = by_bytes.min(by_balance);
    (rows / ROWS_PER_TASK).max(1) * ROWS_PER_TASK
}

/// Activations in the form a weight dtype's dot product wants.
#[derive(Debug)]
pub enum Acts<'a> {
    F32 {
        x: &'a [f32],
        cols: usize,
    },
    Quantized {
        /// (tokens, row_bytes) the blocks, what the scalar kernels (and the K-quant
        /// tiles) read.
        blocks: Vec<u8>,
        row_bytes: usize,
        /// The same blocks staged for the SIMD kernels (empty for Q8_K).
        staged: Staged,
    },
}

impl<'a> Acts<'a> {
    /// Prepare `x` (tokens, cols) for weights of `dtype`.
    pub fn new(dtype: DType, x: &'a [f32], cols: usize) -> Acts<'a> {
        let Some(format) = Format::for_weights(dtype) else {
            return Acts::F32 { x, cols };
        };
        let quantize_row = format.quantize_acts();
        let act_blocks = format.act_blocks();
        let n_tokens = x.len() / cols;
        let n_blocks = cols / format.block_len();
        let row_bytes = n_blocks * format.act_bytes();
        let mut blocks = vec![0u8; n_tokens * row_bytes]; // (tokens, row_bytes)
        let mut staged = Staged::new(act_blocks, n_tokens, n_blocks);
        // A few tokens at a time: quantize their rows, then stage them (Q8_K: no
        // staging tasks, the blocks are read in place).
        let per_task = Staged::TASK_TOKENS;
        let mut stage_tasks = staged.tasks().into_iter();
        let mut tasks: Vec<_> = blocks
            .chunks_mut(per_task * row_bytes)
            .zip(x.chunks(per_task * cols))
            .map(|rows| (rows, stage_tasks.next()))
            .collect();
        let run = |((dst, src), task): &mut ((&mut [u8], &[f32]), Option<StageTask<'_>>)| {
            for (dst, src) in dst.chunks_mut(row_bytes).zip(src.chunks(cols)) {
                quantize_row(src, dst);
            }
            if let Some(task) = task {
                Staged::stage_task(act_blocks, dst, row_bytes, task);
            }
        };
        if tasks.len() == 1 {
            // Decode: not worth waking the other threads.
            run(&mut tasks[0]);
        } else {
            pool::for_each_mut(&mut tasks, |_, task| run(task));
        }
        drop(tasks);
        drop(stage_tasks);
        Acts::Quantized {
            blocks,
            row_bytes,
            staged,
        }
    }

    fn n_tokens(&self) -> usize {
        match self {
            Acts::F32 { x, cols } => x.len() / cols,
            Acts::Quantized {
                blocks, row_bytes, ..
            } => blocks.len() / row_bytes,
        }
    }
}

thread_local! {
    /// A task's results, (tokens, task rows); reused from task to task.
    static TASK_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// out_j (tokens, rows_j) = epilogue(j, t, r, x_j · W_jᵀ) for every weight j, in one
/// parallel region (the threads are woken once per launch, not once per weight).
pub fn matmuls_with(
    jobs: &[(WeightMatrix<'_>, &Acts<'_>)],
    outs: &mut [&mut [f32]],
    epilogue: impl Fn(usize, usize, usize, f32) -> f32 + Sync,
) {
    assert_eq!(jobs.len(), outs.len(), "one output per weight");
    let targets: Vec<Columns> = jobs
        .iter()
        .zip(outs.iter_mut())
        .map(|((w, acts), out)| Columns::new(out, w.rows, acts.n_tokens()))
        .collect();
    let threads = pool::n_threads();
    let tasks: Vec<(usize, usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, (w, acts))| {
            let per_task = rows_per_task(w.rows, w.row_bytes(), acts.n_tokens(), threads);
            (0..w.rows)
                .step_by(per_task)
                .map(move |r0| (j, r0, per_task.min(w.rows - r0)))
        })
        .collect();
    pool::parallel_for(tasks.len(), |i| {
        let (j, r0, n_rows) = tasks[i];
        let (w, acts) = jobs[j];
        let n_tokens = acts.n_tokens();
        TASK_OUT.with_borrow_mut(|y| {
            y.clear();
            y.resize(n_tokens * n_rows, 0.0); // (tokens, n_rows)
            rows_dot(w, r0, n_rows, acts, y);
            for (t, y_row) in y.chunks_exact_mut(n_rows).enumerate() {
                for (r, v) in y_row.iter_mut().enumerate() {
                    *v = epilogue(j, t, r0 + r, *v);
                }
            }
            targets[j].write(r0, n_rows, y);
        });
    });
}

/// y (tokens, n_rows) for weight rows r0..r0+n_rows.
fn rows_dot(w: WeightMatrix<'_>, r0: usize, n_rows: usize, acts: &Acts<'_>, y: &mut [f32]) {
    let n_tokens = acts.n_tokens();
    let rb = w.row_bytes();
    let rows = &w.bytes[r0 * rb..(r0 + n_rows) * rb];
    match acts {
        Acts::F32 { x, cols } => {
            let mut row = vec![0.0f32; *cols]; // (cols) one dequantized weight row
            for r in 0..n_rows {
                dequantize_row(w.dtype, &rows[r * rb..(r + 1) * rb], &mut row)
                    .expect("row geometry checked at load");
                for t in 0..n_tokens {
                    y[t * n_rows + r] = dot_f32(&row, &x[t * cols..(t + 1) * cols]);
                }
            }
        }
        Acts::Quantized {
            blocks,
            row_bytes,
            staged,
        } => {
            // The weight's own format: activations are shared by every weight whose
            // format takes the same blocks (`same_acts`).
            let format = Format::for_weights(w.dtype).expect("quantized acts for a SIMD format");
            simd::dot_rows_tokens(
                format,
                rows,
                rb,
                n_rows,
                blocks,
                *row_bytes,
                n_tokens,
                Some(staged),
                y,
                n_rows,
            );
        }
    }
}

/// An output (tokens, rows) that the tasks of one region write column blocks of.
struct Columns {
    ptr: *mut f32,
    rows: usize,
    n_tokens: usize,
}

// SAFETY: `matmuls_with` hands each task a distinct range of columns (r0..r0+n_rows of
// one output), and the output stays mutably borrowed until every task has returned.
unsafe impl Sync for Columns {}

impl Columns {
    fn new(out: &mut [f32], rows: usize, n_tokens: usize) -> Columns {
        assert!(out.len() >= rows * n_tokens, "output holds (tokens, rows)");
        Columns {
            ptr: out.as_mut_ptr(),
            rows,
            n_tokens,
        }
    }

    /// Columns r0..r0+n_rows of every token from `y` (tokens, n_rows).
    fn write(&self, r0: usize, n_rows: usize, y: &[f32]) {
        assert!(r0 + n_rows <= self.rows && y.len() == self.n_tokens * n_rows);
        for (t, y_row) in y.chunks_exact(n_rows).enumerate() {
            // SAFETY: t < n_tokens and r0 + n_rows <= rows, so the n_rows values at
            // t * rows + r0 are inside the output (checked in `new`); no other task writes
            // these columns (see the Sync impl) and `y` is this task's own buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    y_row.as_ptr(),
                    self.ptr.add(t * self.rows + r0),
                    n_rows,
                );
            }
        }
    }
}

/// out (tokens, rows) = x (tokens, cols) · Wᵀ.
pub fn matmul(w: WeightMatrix<'_>, x: &[f32], out: &mut [f32]) {
    let acts = Acts::new(w.dtype, x, w.cols);
    matmuls_with(&[(w, &acts)], &mut [out], |_, _, _, v| v);
}

/// Several weights sharing one input (q/k/v): the input is quantized once per activation
/// format, and all rows of all weights go to the threads together.
pub fn matmul_multi(weights: &[WeightMatrix<'_>], x: &[f32], outs: &mut [&mut [f32]]) {
    let formats: Vec<(DType, Acts<'_>)> = weights.iter().fold(Vec::new(), |mut v, w| {
        if !v.iter().any(|(d, _)| same_acts(*d, w.dtype)) {
            v.push((w.dtype, Acts::new(w.dtype, x, w.cols)));
        }
        v
    });
    let jobs: Vec<(WeightMatrix<'_>, &Acts<'_>)> = weights
        .iter()
        .map(|w| {
            let acts = &formats
                .iter()
                .find(|(d, _)| same_acts(*d, w.dtype))
                .expect("prepared")
                .1;
            (*w, acts)
        })
        .collect();
    matmuls_with(&jobs, outs, |_, _, _, v| v);
}

/// Whether two weight dtypes take the same activation format.
pub(super) fn same_acts(a: DType, b: DType) -> bool {
    let acts = |d| Format::for_weights(d).map(Format::act_blocks);
    acts(a) == acts(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_whole_tiles_sized_by_bytes_and_balance() {
        // Gemma 3's LM head at decode: ~1 MiB of rows, 1,536 rows (a multiple of 32).
        assert_eq!(rows_per_task(262_144, 680, 1, 2), 1536);
        // A small matrix: eight tasks per thread first.
        assert_eq!(rows_per_task(2048, 440, 1, 2), 128);
        // Prefill: the bytes × tokens reach a task's worth at the fewest rows.
        assert_eq!(rows_per_task(262_144, 680, 512, 2), ROWS_PER_TASK);
        // Never below the fewest, whatever the shape or the thread count.
        for (rows, row_bytes, tokens, threads) in [
            (1, 1, 1, 1),
            (33, 34, 3, 64),
            (4096, 8192, 1, 16),
            (100, 0, 0, 0),
        ] {
            let per = rows_per_task(rows, row_bytes, tokens, threads);
            assert!(
                per >= ROWS_PER_TASK && per.is_multiple_of(ROWS_PER_TASK),
                "{per}"
            );
        }
    }
}
