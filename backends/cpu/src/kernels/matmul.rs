//! The quantized matmul core: out (tokens, rows) = x (tokens, cols) · Wᵀ.
//!
//! Activations are quantized once to 8-bit blocks (Q8_0 for Q4_0/Q8_0 weights, Q8_1 for
//! Q4_1, as llama.cpp's CPU backend does) so the inner loop is an integer block dot;
//! float weights (F32/F16/BF16) dequantize a row at a time and use the f32 dot. Rows are
//! split over threads; each task computes a few rows for every token of the step.

use kiln_ir::DType;
use kiln_ir::quant::{dequantize_row, dot_f32, q8_0, q8_1};

use super::WeightMatrix;
use crate::{pool, simd};

/// Rows per task: enough to amortise scheduling, few enough to balance two cores
/// to many.
const ROWS_PER_TASK: usize = 32;

/// Activations in the form a weight dtype's dot product wants.
#[derive(Debug)]
pub enum Acts<'a> {
    F32 { x: &'a [f32], cols: usize },
    Q8_0 { blocks: Vec<u8>, row_bytes: usize },
    Q8_1 { blocks: Vec<u8>, row_bytes: usize },
}

impl<'a> Acts<'a> {
    /// Prepare `x` (tokens, cols) for weights of `dtype`.
    pub fn new(dtype: DType, x: &'a [f32], cols: usize) -> Acts<'a> {
        let n_tokens = x.len() / cols;
        let quantize = |bytes_per_block: usize, f: fn(&[f32], &mut [u8])| {
            let row_bytes = cols / 32 * bytes_per_block;
            let mut blocks = vec![0u8; n_tokens * row_bytes];
            if n_tokens == 1 {
                f(x, &mut blocks); // decode: not worth waking the other threads
            } else {
                let mut rows: Vec<(&mut [u8], &[f32])> =
                    blocks.chunks_mut(row_bytes).zip(x.chunks(cols)).collect();
                pool::for_each_mut(&mut rows, |_, (dst, src)| f(src, dst));
            }
            (blocks, row_bytes)
        };
        match dtype {
            DType::Q4_0 | DType::Q8_0 => {
                let (blocks, row_bytes) = quantize(q8_0::BLOCK_BYTES, q8_0::quantize_row);
                Acts::Q8_0 { blocks, row_bytes }
            }
            DType::Q4_1 => {
                let (blocks, row_bytes) = quantize(q8_1::BLOCK_BYTES, q8_1::quantize_row);
                Acts::Q8_1 { blocks, row_bytes }
            }
            _ => Acts::F32 { x, cols },
        }
    }

    fn n_tokens(&self) -> usize {
        match self {
            Acts::F32 { x, cols } => x.len() / cols,
            Acts::Q8_0 { blocks, row_bytes } | Acts::Q8_1 { blocks, row_bytes } => {
                blocks.len() / row_bytes
            }
        }
    }
}

/// y (rows, tokens), row-major by weight row: y[r][t] = W[r] · x[t].
pub fn matmul_rows_by_tokens(w: WeightMatrix<'_>, acts: &Acts<'_>) -> Vec<f32> {
    matmuls_rows_by_tokens(&[(w, acts)])
        .pop()
        .expect("one weight in, one out")
}

/// Several weights (q/k/v, gate/up) in one parallel region, so the threads are woken
/// once per launch rather than once per weight. Returns y (rows, tokens) per weight.
pub fn matmuls_rows_by_tokens(jobs: &[(WeightMatrix<'_>, &Acts<'_>)]) -> Vec<Vec<f32>> {
    let mut ys: Vec<Vec<f32>> = jobs
        .iter()
        .map(|(w, acts)| vec![0.0f32; w.rows * acts.n_tokens()]) // (rows, tokens)
        .collect();
    let mut tasks = Vec::new(); // (job, first row, output rows)
    for (j, y) in ys.iter_mut().enumerate() {
        let n_tokens = jobs[j].1.n_tokens();
        for (task, chunk) in y.chunks_mut(ROWS_PER_TASK * n_tokens).enumerate() {
            tasks.push((j, task * ROWS_PER_TASK, chunk));
        }
    }
    pool::for_each_mut(&mut tasks, |_, (j, r0, y_rows)| {
        let (w, acts) = jobs[*j];
        rows_dot(w, *r0, y_rows.len() / acts.n_tokens(), acts, y_rows);
    });
    ys
}

/// y (n_rows, tokens) for weight rows r0..r0+n_rows.
fn rows_dot(w: WeightMatrix<'_>, r0: usize, n_rows: usize, acts: &Acts<'_>, y: &mut [f32]) {
    let n_tokens = acts.n_tokens();
    let rb = w.row_bytes();
    let rows = &w.bytes[r0 * rb..(r0 + n_rows) * rb];
    match acts {
        Acts::F32 { x, cols } => {
            let mut row = vec![0.0f32; *cols]; // (cols) one dequantized weight row
            for (i, y_row) in y.chunks_exact_mut(n_tokens).enumerate() {
                dequantize_row(w.dtype, &rows[i * rb..(i + 1) * rb], &mut row)
                    .expect("row geometry checked at load");
                for (t, o) in y_row.iter_mut().enumerate() {
                    *o = dot_f32(&row, &x[t * cols..(t + 1) * cols]);
                }
            }
        }
        Acts::Q8_0 { blocks, row_bytes } | Acts::Q8_1 { blocks, row_bytes } => {
            // The SIMD kernels write (tokens, rows); y is (rows, tokens).
            let mut by_token = vec![0.0f32; n_tokens * n_rows]; // (tokens, n_rows)
            let kernel = match w.dtype {
                DType::Q4_0 => simd::dot_rows_tokens_q4_0_q8_0,
                DType::Q4_1 => simd::dot_rows_tokens_q4_1_q8_1,
                _ => simd::dot_rows_tokens_q8_0_q8_0,
            };
            kernel(
                rows,
                rb,
                n_rows,
                blocks,
                *row_bytes,
                n_tokens,
                &mut by_token,
                n_rows,
            );
            for (t, token_row) in by_token.chunks_exact(n_rows).enumerate() {
                for (r, &v) in token_row.iter().enumerate() {
                    y[r * n_tokens + t] = v;
                }
            }
        }
    }
}

/// out (tokens, rows) = x · Wᵀ, with `epilogue(t, r, value)` giving the stored value.
pub fn matmul_with(
    w: WeightMatrix<'_>,
    acts: &Acts<'_>,
    out: &mut [f32],
    epilogue: impl Fn(usize, usize, f32) -> f32,
) {
    store(w.rows, &matmul_rows_by_tokens(w, acts), out, epilogue);
}

/// out (tokens, rows) = x (tokens, cols) · Wᵀ.
pub fn matmul(w: WeightMatrix<'_>, x: &[f32], out: &mut [f32]) {
    let acts = Acts::new(w.dtype, x, w.cols);
    matmul_with(w, &acts, out, |_, _, v| v);
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
    let ys = matmuls_rows_by_tokens(&jobs);
    for ((w, y), out) in weights.iter().zip(&ys).zip(outs.iter_mut()) {
        store(w.rows, y, out, |_, _, v| v);
    }
}

/// out (tokens, rows) from y (rows, tokens) through an epilogue.
pub fn store(rows: usize, y: &[f32], out: &mut [f32], epilogue: impl Fn(usize, usize, f32) -> f32) {
    let n_tokens = y.len() / rows;
    for (t, out_row) in out.chunks_exact_mut(rows).enumerate().take(n_tokens) {
        for (r, o) in out_row.iter_mut().enumerate() {
            *o = epilogue(t, r, y[r * n_tokens + t]);
        }
    }
}

/// Whether two weight dtypes take the same activation format.
fn same_acts(a: DType, b: DType) -> bool {
    let class = |d| match d {
        DType::Q4_0 | DType::Q8_0 => 0,
        DType::Q4_1 => 1,
        _ => 2,
    };
    class(a) == class(b)
}
