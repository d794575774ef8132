//! `kiln bench`: llama-bench's tests (pp = prefill of N tokens in one go, tg = N tokens
//! generated one step at a time from an empty context) on a compiled backend, with time
//! to first token, inter-token latency percentiles and a per-kernel table measured
//! against the ceilings of the machine it runs on (copy bandwidth, matmul peak).

pub mod speculative;

use std::collections::BTreeMap;
use std::time::Instant;

use kiln_ir::Op;

use kiln_engine::Error;
use kiln_engine::compiled::{BatchEntry, Compiled};
use kiln_engine::sampler::argmax;

/// Mean and standard deviation of repeated measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    pub fn of(samples: &[f64]) -> Stat {
        let n = samples.len().max(1) as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Stat {
            mean,
            std: var.sqrt(),
        }
    }
}

/// One row of the results table.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    /// `pp512`, `tg128`, ...
    pub test: String,
    /// Sequences per step (tg only; pp is one sequence).
    pub batch: usize,
    /// Tokens per second, all sequences together.
    pub tok_s: Stat,
    /// pp: prefill time plus sampling the first token.
    pub ttft_ms: Option<f64>,
    /// tg: percentiles of the time between tokens.
    pub itl_p50_ms: Option<f64>,
    pub itl_p99_ms: Option<f64>,
}

/// Time per kernel of a decode step, with what it moved and computed.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    pub kernel: String,
    pub launches_per_step: usize,
    pub seconds_per_step: f64,
    pub bytes_per_step: f64,
    pub flops_per_step: f64,
}

impl KernelRow {
    pub fn gb_s(&self) -> f64 {
        self.bytes_per_step / self.seconds_per_step / 1e9
    }

    pub fn tflop_s(&self) -> f64 {
        self.flops_per_step / self.seconds_per_step / 1e12
    }
}

/// Deterministic token ids that are not special tokens.
fn bench_tokens(n: usize, vocab: usize, salt: u64) -> Vec<u32> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ salt;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (100 + x % (vocab as u64 - 100)) as u32
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Prefill of `n_prompt` tokens, `reps` times (one untimed warm-up first).
pub fn prefill(
    compiled: &mut Compiled<'_>,
    n_prompt: usize,
    reps: usize,
) -> Result<TestResult, Error> {
    let vocab = compiled.model().config.vocab_size;
    let tokens = bench_tokens(n_prompt, vocab, 1);
    let mut rates = Vec::new();
    let mut ttft = Vec::new();
    for rep in 0..=reps {
        let seq = compiled.kv().create_sequence();
        let start = Instant::now();
        let mut logits = Vec::new();
        for chunk in tokens.chunks(compiled.plan().max_tokens) {
            logits = compiled.step(&[BatchEntry::last(seq, chunk)])?;
        }
        argmax(&logits);
        let seconds = start.elapsed().as_secs_f64();
        compiled.kv().free(seq)?;
        if rep > 0 {
            rates.push(n_prompt as f64 / seconds);
            ttft.push(seconds * 1e3);
        }
    }
    Ok(TestResult {
        test: format!("pp{n_prompt}"),
        batch: 1,
        tok_s: Stat::of(&rates),
        ttft_ms: Some(Stat::of(&ttft).mean),
        itl_p50_ms: None,
        itl_p99_ms: None,
    })
}

/// `n_gen` decode steps of `batch` sequences from an empty context, `reps` times (one
/// untimed warm-up first). Per-kernel times of the steps are summed into `kernels`.
pub fn decode(
    compiled: &mut Compiled<'_>,
    n_gen: usize,
    batch: usize,
    reps: usize,
    kernels: &mut KernelTimes,
) -> Result<TestResult, Error> {
    let vocab = compiled.model().config.vocab_size;
    let mut rates = Vec::new();
    let mut gaps = Vec::new();
    for rep in 0..=reps {
        let seqs: Vec<_> = (0..batch)
            .map(|_| compiled.kv().create_sequence())
            .collect();
        let mut next: Vec<u32> = (0..batch)
            .map(|b| bench_tokens(1, vocab, b as u64)[0])
            .collect();
        let start = Instant::now();
        let mut last = start;
        for _ in 0..n_gen {
            let entries: Vec<BatchEntry<'_>> = seqs
                .iter()
                .zip(&next)
                .map(|(&s, t)| BatchEntry::last(s, std::slice::from_ref(t)))
                .collect();
            let logits = compiled.step(&entries)?;
            next = logits.chunks_exact(vocab).map(argmax).collect();
            let now = Instant::now();
            if rep > 0 {
                gaps.push((now - last).as_secs_f64() * 1e3);
                if batch == 1 {
                    kernels.add_step(compiled)?;
                }
            }
            last = now;
        }
        let seconds = start.elapsed().as_secs_f64();
        for s in seqs {
            compiled.kv().free(s)?;
        }
        if rep > 0 {
            rates.push((n_gen * batch) as f64 / seconds);
        }
    }
    gaps.sort_by(f64::total_cmp);
    Ok(TestResult {
        test: format!("tg{n_gen}"),
        batch,
        tok_s: Stat::of(&rates),
        ttft_ms: None,
        itl_p50_ms: gaps.first().map(|_| percentile(&gaps, 0.5)),
        itl_p99_ms: gaps.first().map(|_| percentile(&gaps, 0.99)),
    })
}

/// Per-kernel time summed over decode steps.
#[derive(Debug, Default)]
pub struct KernelTimes {
    steps: usize,
    seconds: BTreeMap<String, (usize, f64, f64, f64)>, // kernel -> (launches, seconds, bytes, flops) per step
}

impl KernelTimes {
    fn add_step(&mut self, compiled: &mut Compiled<'_>) -> Result<(), Error> {
        let times = match compiled.backend().launch_times() {
            Ok(t) => t,
            Err(_) => return Ok(()), // a backend without timers gives no kernel table
        };
        let plan = compiled.plan();
        let first_step = self.steps == 0;
        for t in times {
            let launch = &plan.launches[t.launch];
            // Bytes of weights read: whole matrices, except the embedding (one row a token).
            let weight_bytes: u64 = launch
                .op
                .matrices()
                .iter()
                .filter_map(|&w| plan.graph.weight(w))
                .map(|w| {
                    let rows = if matches!(launch.op, Op::Embed { .. }) {
                        1
                    } else {
                        w.rows
                    };
                    w.dtype.bytes_for((rows * w.cols) as u64).unwrap_or(0)
                })
                .sum();
            let flops: f64 = launch
                .op
                .matrices()
                .iter()
                .filter_map(|&w| plan.graph.weight(w))
                .filter(|_| !matches!(launch.op, Op::Embed { .. }))
                .map(|w| 2.0 * (w.rows * w.cols) as f64)
                .sum();
            let entry = self.seconds.entry(launch.kernel.clone()).or_default();
            if first_step {
                entry.0 += 1;
                entry.2 += weight_bytes as f64;
                entry.3 += flops;
            }
            entry.1 += t.seconds;
        }
        self.steps += 1;
        Ok(())
    }

    /// Rows sorted by time, slowest first.
    pub fn rows(&self) -> Vec<KernelRow> {
        let steps = self.steps.max(1) as f64;
        let mut rows: Vec<KernelRow> = self
            .seconds
            .iter()
            .map(|(kernel, &(launches, seconds, bytes, flops))| KernelRow {
                kernel: kernel.clone(),
                launches_per_step: launches,
                seconds_per_step: seconds / steps,
                bytes_per_step: bytes,
                flops_per_step: flops,
            })
            .collect();
        rows.sort_by(|a, b| b.seconds_per_step.total_cmp(&a.seconds_per_step));
        rows
    }
}

/// Host memory copy bandwidth (read + write bytes per second), best of a few runs over
/// buffers much larger than the last-level cache, all cores copying.
pub fn host_copy_bandwidth() -> f64 {
    use rayon::prelude::*;
    const BYTES: usize = 256 << 20;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    let chunk = BYTES / rayon::current_num_threads().max(1);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * BYTES as f64 / best
}

/// Peak resident memory of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// f32 multiply-add peak of the host (FLOP/s): every core dotting L1-resident vectors
/// with the same `dot_f32` the kernels use. The ceiling for "% of matmul peak".
pub fn host_f32_peak() -> f64 {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads().max(1);
    let a = vec![1.000_1f32; 1024];
    let b = vec![0.999_9f32; 1024];
    let iters = 20_000;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let total: f32 = (0..threads)
            .into_par_iter()
            .map(|_| {
                let mut acc = 0.0f32;
                for _ in 0..iters {
                    acc +=
                        kiln_ir::quant::dot_f32(std::hint::black_box(&a), std::hint::black_box(&b));
                }
                acc
            })
            .sum();
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (threads * iters * a.len() * 2) as f64 / best
}
