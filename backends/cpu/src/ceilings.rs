//! The host's ceilings, measured on the pool every kernel runs on: copy bandwidth over
//! buffers far larger than the last-level cache, and the f32 multiply-add peak of the
//! `dot_f32` the float kernels use (L1-resident vectors).

use std::time::Instant;

use kiln_ir::backend::Ceilings;

use crate::pool;

/// Bytes copied (256 MiB: past any last-level cache).
const COPY_BYTES: usize = 256 << 20;

pub fn measure() -> Ceilings {
    Ceilings {
        copy_bytes_per_s: copy_bandwidth(),
        matmul_flop_per_s: f32_peak(),
        matmul_what: "f32 FMA (dot_f32)".into(),
    }
}

/// Read + write bytes per second, best of five copies, every thread copying its share.
fn copy_bandwidth() -> f64 {
    let threads = pool::n_threads().max(1);
    let chunk = COPY_BYTES.div_ceil(threads);
    let src = vec![1u8; COPY_BYTES];
    let mut dst: Vec<Vec<u8>> = (0..threads).map(|_| vec![0u8; chunk]).collect();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        pool::for_each_mut(&mut dst, |i, d| {
            let s = &src[(i * chunk).min(COPY_BYTES)..((i + 1) * chunk).min(COPY_BYTES)];
            d[..s.len()].copy_from_slice(s);
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * COPY_BYTES as f64 / best
}

/// FLOP/s of every thread dotting 1,024-float vectors (two per multiply-add).
fn f32_peak() -> f64 {
    let threads = pool::n_threads().max(1);
    let a = vec![1.000_1f32; 1024];
    let b = vec![0.999_9f32; 1024];
    let iters = 20_000;
    let mut sums = vec![0.0f32; threads];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        pool::for_each_mut(&mut sums, |_, acc| {
            for _ in 0..iters {
                *acc += kiln_ir::quant::dot_f32(std::hint::black_box(&a), std::hint::black_box(&b));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&sums);
    (threads * iters * a.len() * 2) as f64 / best
}

#[cfg(test)]
mod tests {
    #[test]
    fn ceilings_are_positive_and_finite() {
        let c = super::measure();
        assert!(
            c.copy_bytes_per_s.is_finite() && c.copy_bytes_per_s > 1e8,
            "{c:?}"
        );
        assert!(
            c.matmul_flop_per_s.is_finite() && c.matmul_flop_per_s > 1e8,
            "{c:?}"
        );
    }
}
