//! `kiln bench`: llama-bench's tests (pp = prefill of N tokens in one go, tg = N tokens
//! generated one step at a time, each after `depth` tokens already in the KV cache, as
//! llama-bench's `-d`) on a compiled backend, with time to first token, inter-token
//! latency percentiles and a per-kernel table (bytes of weights and of KV cache read)
//! measured against the ceilings the backend measures on its device.

pub mod speculative;

use std::collections::BTreeMap;
use std::time::Instant;

use kiln_ir::Op;
use kiln_ir::kv_layout::KvDtype;

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

/// A test's name as llama-bench writes it: `tg128`, `pp512 @ d4096`.
fn test_name(test: &str, n: usize, depth: usize) -> String {
    match depth {
        0 => format!("{test}{n}"),
        d => format!("{test}{n} @ d{d}"),
    }
}

/// Put `depth` tokens (of salt `salt`) into sequence `seq`'s KV cache, untimed.
fn fill(
    compiled: &mut Compiled<'_>,
    seq: kiln_engine::kv::SeqId,
    depth: usize,
    salt: u64,
) -> Result<(), Error> {
    let vocab = compiled.model().config.vocab_size;
    let tokens = bench_tokens(depth, vocab, 1000 + salt);
    for chunk in tokens.chunks(compiled.plan().max_tokens) {
        compiled.step(&[BatchEntry::last(seq, chunk)])?;
    }
    Ok(())
}

/// Prefill of `n_prompt` tokens after `depth` in the cache, `reps` times (one untimed
/// warm-up first).
pub fn prefill(
    compiled: &mut Compiled<'_>,
    n_prompt: usize,
    depth: usize,
    reps: usize,
) -> Result<TestResult, Error> {
    let vocab = compiled.model().config.vocab_size;
    let tokens = bench_tokens(n_prompt, vocab, 1);
    let mut rates = Vec::new();
    let mut ttft = Vec::new();
    for rep in 0..=reps {
        let seq = compiled.kv().create_sequence();
        fill(compiled, seq, depth, 0)?;
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
        test: test_name("pp", n_prompt, depth),
        batch: 1,
        tok_s: Stat::of(&rates),
        ttft_ms: Some(Stat::of(&ttft).mean),
        itl_p50_ms: None,
        itl_p99_ms: None,
    })
}

/// How a decode test's steps hand back their tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Every row's logits read back, the argmax taken on the host (llama-bench's work:
    /// its decode copies the logits to the host).
    Logits,
    /// The backend's argmax (`Backend::read_argmax`: greedy decoding, one id a row).
    Argmax,
    /// Each row's top k (`Backend::read_top_k`: sampling with a top-k filter), the first
    /// of them fed back.
    TopK(usize),
}

impl Pick {
    /// `--top-k`'s number: 0 the logits, 1 the argmax, k > 1 the top k.
    pub fn from_top_k(k: usize) -> Pick {
        match k {
            0 => Pick::Logits,
            1 => Pick::Argmax,
            k => Pick::TopK(k),
        }
    }

    /// What a test's name says of it (nothing for the logits, as before there was a choice).
    fn suffix(self) -> String {
        match self {
            Pick::Logits => String::new(),
            Pick::Argmax => " argmax".into(),
            Pick::TopK(k) => format!(" top-{k}"),
        }
    }

    /// One step's next token of every entry.
    fn step(
        self,
        compiled: &mut Compiled<'_>,
        entries: &[BatchEntry<'_>],
    ) -> Result<Vec<u32>, Error> {
        let vocab = compiled.model().config.vocab_size;
        Ok(match self {
            Pick::Logits => compiled
                .step(entries)?
                .chunks_exact(vocab)
                .map(argmax)
                .collect(),
            Pick::Argmax => compiled.step_argmax(entries)?,
            Pick::TopK(k) => {
                let k = k.min(vocab);
                let cand = compiled.step_top_k(entries, k)?;
                cand.chunks_exact(k).map(|row| row[0].id).collect()
            }
        })
    }
}

/// `n_gen` decode steps of `batch` sequences, each after its own `depth` tokens in the
/// cache, `reps` times (one untimed warm-up first), each step's tokens handed back as
/// `pick` says. Per-kernel times of the steps are summed into `kernels`.
pub fn decode(
    compiled: &mut Compiled<'_>,
    n_gen: usize,
    batch: usize,
    depth: usize,
    reps: usize,
    pick: Pick,
    kernels: &mut KernelTimes,
) -> Result<TestResult, Error> {
    let vocab = compiled.model().config.vocab_size;
    let mut rates = Vec::new();
    let mut gaps = Vec::new();
    for rep in 0..=reps {
        let seqs: Vec<_> = (0..batch)
            .map(|_| compiled.kv().create_sequence())
            .collect();
        // Different tokens per sequence: no prefix-cache sharing of the depth's pages.
        for (b, &s) in seqs.iter().enumerate() {
            fill(compiled, s, depth, b as u64)?;
        }
        let mut next: Vec<u32> = (0..batch)
            .map(|b| bench_tokens(1, vocab, b as u64)[0])
            .collect();
        let start = Instant::now();
        let mut last = start;
        for i in 0..n_gen {
            let entries: Vec<BatchEntry<'_>> = seqs
                .iter()
                .zip(&next)
                .map(|(&s, t)| BatchEntry::last(s, std::slice::from_ref(t)))
                .collect();
            next = pick.step(compiled, &entries)?;
            if next.contains(&kiln_ir::backend::NON_FINITE_ROW) {
                return Err(Error::NonFiniteRow);
            }
            let now = Instant::now();
            if rep > 0 {
                gaps.push((now - last).as_secs_f64() * 1e3);
                if batch == 1 {
                    kernels.add_step(compiled, depth + i + 1)?;
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
        test: test_name("tg", n_gen, depth) + &pick.suffix(),
        batch,
        tok_s: Stat::of(&rates),
        ttft_ms: None,
        itl_p50_ms: gaps.first().map(|_| percentile(&gaps, 0.5)),
        itl_p99_ms: gaps.first().map(|_| percentile(&gaps, 0.99)),
    })
}

/// Per-kernel time summed over decode steps, with the bytes each read: its weights, and
/// for attention the KV cache of the positions it attends to.
#[derive(Debug)]
pub struct KernelTimes {
    /// How the cache stores K and V (bytes per position read by attention).
    kv: KvDtype,
    steps: usize,
    seconds: BTreeMap<String, (usize, f64, f64, f64)>, // kernel -> (launches, seconds, bytes, flops) summed
}

impl KernelTimes {
    pub fn new(kv: KvDtype) -> KernelTimes {
        KernelTimes {
            kv,
            steps: 0,
            seconds: BTreeMap::new(),
        }
    }

    /// Bytes an attention launch reads for one query over a context of `positions`.
    fn kv_bytes(&self, op: &Op, positions: usize) -> f64 {
        let Op::Attention { attention: a } = op else {
            return 0.0;
        };
        let read = a.window.map_or(positions, |w| positions.min(w));
        let scale = if self.kv.has_scales() { 4 } else { 0 };
        (read * 2 * a.n_kv_heads * (a.head_dim * self.kv.value_bytes() + scale)) as f64
    }

    /// Add the last step's launch times; `positions`: the context its token attended to.
    fn add_step(&mut self, compiled: &mut Compiled<'_>, positions: usize) -> Result<(), Error> {
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
            let kv_bytes = self.kv_bytes(&launch.op, positions);
            let entry = self.seconds.entry(launch.kernel.clone()).or_default();
            if first_step {
                entry.0 += 1;
            }
            entry.1 += t.seconds;
            entry.2 += weight_bytes as f64 + kv_bytes;
            entry.3 += flops;
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
                bytes_per_step: bytes / steps,
                flops_per_step: flops / steps,
            })
            .collect();
        rows.sort_by(|a, b| b.seconds_per_step.total_cmp(&a.seconds_per_step));
        rows
    }
}

/// Peak resident memory of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::AttentionParams;

    #[test]
    fn tests_are_named_as_llama_bench_names_them() {
        assert_eq!(test_name("tg", 128, 0), "tg128");
        assert_eq!(test_name("pp", 512, 4096), "pp512 @ d4096");
    }

    #[test]
    fn attention_reads_the_kv_of_its_window() {
        let mut a = AttentionParams::new(0, 9, 3, 64);
        let op = |a: &AttentionParams| Op::Attention {
            attention: a.clone(),
        };
        // FP8: 64 one-byte values and a 4-byte scale per (position, KV head), K and V.
        let fp8 = KernelTimes::new(KvDtype::F8E4M3);
        assert_eq!(fp8.kv_bytes(&op(&a), 100), (100 * 2 * 3 * (64 + 4)) as f64);
        let f16 = KernelTimes::new(KvDtype::F16);
        assert_eq!(f16.kv_bytes(&op(&a), 100), (100 * 2 * 3 * 128) as f64);
        a.window = Some(32);
        assert_eq!(f16.kv_bytes(&op(&a), 100), (32 * 2 * 3 * 128) as f64);
        assert_eq!(f16.kv_bytes(&Op::Add, 100), 0.0);
    }
}
