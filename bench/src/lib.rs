//! kiln-bench: what the criterion suites of `benches/` share. One suite per kernel family:
//! `matvec`, `rmsnorm`, `rope_kv_write`, `attention`, `decode_step`.
//!
//! Every suite runs on each backend of [`BACKENDS`] that opens, through the
//! [`Backend`] trait only: adding a GPU backend is one line there. A case ([`Case`],
//! in [`cases`]) builds small plans the way the conformance suite does
//! (`tests/src/conformance`): F32 embedding tables of random rows feed the op under test,
//! its result goes through `SelectRows` to the graph's output, and the weights come from
//! one in-memory blob as `SharedBytes` ([`graph`]).
//!
//! The rules the figures keep (STYLE.md point 9):
//! - names `backend/op/shape`, e.g. `cpu/matvec_q4_0/4096x14336/t1`;
//! - `iter_custom`, with `Backend::synchronize` before the clock is read;
//! - throughput in real bytes (what one op must move), FLOPs printed beside;
//! - random data, never zeros;
//! - never a cache figure: weights and KV pages rotate through more memory than the
//!   last-level cache ([`rotation_bytes`]), so each op reads its operands from memory, as
//!   in a model whose other layers have evicted them. Activations, which a model does keep
//!   in cache between ops, do not rotate.
//!
//! One criterion iteration is one op (one matvec, one layer's attention). A step of a
//! plan runs several ops back to back (`ops_per_step`), as a model's layers do, so the
//! fixed cost of a step (embedding the inputs, checking it) is spread as in a real one;
//! [`Workload::time`] runs whole steps and scales the time to the iterations asked for.

pub mod cases;
pub mod decode;
pub mod graph;

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use kiln_backend_cpu::CpuBackend;
use kiln_ir::Graph;
use kiln_ir::backend::{Backend, Step};

/// Opens a backend, or says why there is none on this machine.
pub type Constructor = fn() -> Result<Box<dyn Backend>, String>;

/// The backends the suites run on, by name. A new backend is one line here.
pub const BACKENDS: &[(&str, Constructor)] = &[
    ("cpu", || Ok(Box::new(CpuBackend::new()))),
    // Any adapter, lavapipe included (its figures say what the adapter is).
    ("wgpu", || {
        kiln_backend_wgpu::WgpuBackend::any_device()
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| e.to_string())
    }),
    // An NVIDIA GPU with its driver and NVRTC.
    ("cuda", || {
        kiln_backend_cuda::CudaBackend::new()
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| e.to_string())
    }),
    // The same with the modules of sm_90a, the wgmma prefill attention and prefill matmul
    // on an H100 or H200 (where "cuda" takes sm_90's mma.sync kernels): their A/B, by
    // `cuda_wgmma/` filters.
    ("cuda_wgmma", || {
        let options = kiln_backend_cuda::CudaOptions {
            wgmma: true,
            ..Default::default()
        };
        kiln_backend_cuda::CudaBackend::with_options(options)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| e.to_string())
    }),
    ("vulkan", || {
        kiln_backend_vulkan::VulkanBackend::any_device()
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|e| e.to_string())
    }),
];

/// The backends of [`BACKENDS`] that open here; prints why the others are skipped.
pub fn backends() -> Vec<(&'static str, Constructor)> {
    BACKENDS
        .iter()
        .filter(|(name, make)| match make() {
            Ok(_) => true,
            Err(reason) => {
                println!("skipping backend {name}: {reason}");
                false
            }
        })
        .copied()
        .collect()
}

/// Criterion settings short enough for the whole `cargo bench -p kiln-bench` to take a
/// few minutes on two cores; command-line flags still override them.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Size of the last-level cache of CPU 0 (sysfs `index3`), or 32 MiB when unknown.
pub fn llc_bytes() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size")
        .ok()
        .and_then(|s| parse_cache_size(s.trim()))
        .unwrap_or(32 << 20)
}

/// "491520K", "32M", "1G" or a plain byte count.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// Bytes of weights (or KV pages) a case cycles through: 1.25 × the last-level cache, so
/// an op's operands were always evicted since their last use; `KILN_BENCH_ROTATION_MIB`
/// sets it instead.
pub fn rotation_bytes() -> usize {
    std::env::var("KILN_BENCH_ROTATION_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(llc_bytes() / 4 * 5, |mib| mib << 20)
}

/// The conformance suite's generator: the benchmarks draw their data the same way.
pub use kiln_tests::conformance::Rng;

/// One step's inputs, owned (a [`Step`] borrows them).
#[derive(Clone, Debug, Default)]
pub struct StepData {
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub token_seq: Vec<u32>,
    pub block_tables: Vec<Vec<u32>>,
    pub output_rows: Vec<u32>,
}

impl StepData {
    /// `n` tokens of one sequence at positions `start..start + n`, with the logits of the
    /// last one wanted.
    pub fn sequence(token_ids: Vec<u32>, start: usize, table: Vec<u32>) -> StepData {
        let n = token_ids.len();
        StepData {
            positions: (start..start + n).map(|p| p as u32).collect(),
            token_seq: vec![0; n],
            block_tables: vec![table],
            output_rows: vec![n as u32 - 1],
            token_ids,
        }
    }

    /// Execute on the loaded plan (not waiting for the device).
    pub fn execute(&self, backend: &mut dyn Backend) -> Result<(), String> {
        let tables: Vec<&[u32]> = self.block_tables.iter().map(Vec::as_slice).collect();
        let step = Step {
            token_ids: &self.token_ids,
            positions: &self.positions,
            token_seq: &self.token_seq,
            block_tables: &tables,
            output_rows: &self.output_rows,
        };
        backend.execute(&step).map_err(|e| format!("execute: {e}"))
    }
}

/// Most arithmetic [`Workload::new`] spends running every plan once before timing.
const PRIME_FLOPS: u64 = 8_000_000_000;

/// A case made concrete on one backend: loaded plans (instances) and the steps cycled
/// through them.
pub struct Workload {
    /// `backend/op/shape`.
    pub name: String,
    /// Bytes one op must move (weights read, or KV read) and its FLOPs.
    pub bytes: u64,
    pub flops: u64,
    /// Bytes of weights or KV pages the rotation cycles through.
    pub footprint: u64,
    /// Ops each step runs (one per layer of the plan).
    pub ops_per_step: usize,
    instances: Vec<Box<dyn Backend>>,
    steps: Vec<StepData>,
    /// Columns of the plan's output (rows: the steps' output rows).
    out_cols: usize,
    cursor: usize,
    timed: Duration,
    timed_ops: u64,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("name", &self.name)
            .field("instances", &self.instances.len())
            .field("steps", &self.steps.len())
            .field("ops_per_step", &self.ops_per_step)
            .field("footprint", &self.footprint)
            .finish()
    }
}

impl Workload {
    /// Every (instance, step) pair is visited in turn; the first is run and checked.
    pub fn new(
        name: String,
        (bytes, flops): (u64, u64),
        footprint: u64,
        ops_per_step: usize,
        instances: Vec<Box<dyn Backend>>,
        steps: Vec<StepData>,
        out_cols: usize,
    ) -> Result<Workload, String> {
        if instances.is_empty() || steps.is_empty() || ops_per_step == 0 {
            return Err(format!("{name}: no instance, step or op"));
        }
        let mut w = Workload {
            name,
            bytes,
            flops,
            footprint,
            ops_per_step,
            instances,
            steps,
            out_cols,
            cursor: 0,
            timed: Duration::ZERO,
            timed_ops: 0,
        };
        w.run_checked(0)?;
        // First-touch costs (arena pages, a pool's first use) stay out of the timing: run
        // each plan once more, unless that alone would cost more than ~0.2 s of
        // arithmetic, where they vanish anyway.
        let prime_flops = flops * ops_per_step as u64 * w.instances.len() as u64;
        if prime_flops <= PRIME_FLOPS {
            for i in 0..w.instances.len() {
                w.run_checked(i)?;
            }
        }
        Ok(w)
    }

    fn pairs(&self) -> usize {
        self.instances.len() * self.steps.len()
    }

    /// Run pair `i` (instance i mod instances, then the next step), wait, and check that
    /// the output is finite.
    fn run_checked(&mut self, i: usize) -> Result<Vec<f32>, String> {
        let n = self.instances.len();
        let (backend, step) = (&mut self.instances[i % n], &self.steps[i / n]);
        step.execute(backend.as_mut())?;
        backend.synchronize().map_err(|e| e.to_string())?;
        let mut out = vec![f32::NAN; step.output_rows.len() * self.out_cols];
        backend
            .read_logits(&mut out)
            .map_err(|e| format!("read_logits: {e}"))?;
        match out.iter().position(|v| !v.is_finite()) {
            Some(at) => Err(format!("{}: output {at} is {}", self.name, out[at])),
            None => Ok(out),
        }
    }

    /// Run every (instance, step) pair once and check each output (tests).
    pub fn run_all_checked(&mut self) -> Result<(), String> {
        for i in 0..self.pairs() {
            self.run_checked(i)?;
        }
        Ok(())
    }

    /// Time `iters` ops: whole steps, cycling through the rotation, then synchronize
    /// every instance before reading the clock. The time of the steps run is scaled to
    /// `iters` ops.
    pub fn time(&mut self, iters: u64) -> Result<Duration, String> {
        let per_step = self.ops_per_step as u64;
        let n_steps = iters.div_ceil(per_step).max(1);
        let n = self.instances.len();
        let pairs = self.pairs();
        let start = Instant::now();
        for _ in 0..n_steps {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % pairs;
            self.steps[i / n].execute(self.instances[i % n].as_mut())?;
        }
        for backend in &mut self.instances {
            backend.synchronize().map_err(|e| e.to_string())?;
        }
        let elapsed = start.elapsed();
        self.timed += elapsed;
        self.timed_ops += n_steps * per_step;
        Ok(elapsed.mul_f64(iters as f64 / (n_steps * per_step) as f64))
    }

    /// One line: mean rates over every op timed (warm-up included), and the rotation.
    pub fn report(&self) {
        report(
            &self.name,
            self.bytes,
            self.flops,
            self.timed,
            self.timed_ops,
            &format!(
                "{} plan(s) × {} step(s), {} op(s) a step, rotation {}",
                self.instances.len(),
                self.steps.len(),
                self.ops_per_step,
                mib(self.footprint)
            ),
        );
    }
}

/// Prints `name: time/op, GB/s, GFLOP/s (bytes/op, FLOPs/op) — extra`.
pub fn report(name: &str, bytes: u64, flops: u64, timed: Duration, ops: u64, extra: &str) {
    if ops == 0 {
        return;
    }
    let per_op = timed.as_secs_f64() / ops as f64;
    println!(
        "  {name}: {:.1} µs/op, {:.2} GB/s, {:.2} GFLOP/s ({} and {:.3} GFLOP an op; {extra})",
        per_op * 1e6,
        bytes as f64 / per_op / 1e9,
        flops as f64 / per_op / 1e9,
        mib(bytes),
        flops as f64 / 1e9,
    );
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// A benchmark case, independent of the backend.
pub trait Case {
    /// `op/shape`, e.g. `matvec_q4_0/576x1536/t1`.
    fn id(&self) -> String;
    /// Bytes and FLOPs of one op.
    fn bytes(&self) -> u64;
    fn flops(&self) -> u64;
    /// A graph with the case's ops, for asking the backend whether it supports them.
    fn graph(&self) -> Graph;
    /// Build the workload: weights or KV pages for `rotation` bytes, plans loaded.
    fn build(
        &self,
        backend: (&'static str, Constructor),
        rotation: usize,
    ) -> Result<Workload, String>;
}

/// The ops of `graph` a backend has no kernel for.
pub fn unsupported(backend: &dyn Backend, graph: &Graph) -> Vec<&'static str> {
    graph
        .nodes
        .iter()
        .filter(|n| !backend.supports(&n.op, graph))
        .map(|n| n.op.name())
        .collect()
}

/// Run `cases` on every backend present: one criterion group per backend, throughput in
/// bytes. A workload is built only when criterion runs its benchmark (so a filter skips
/// the building too) and dropped after it.
pub fn run_suite(c: &mut Criterion, cases: &[Box<dyn Case>]) {
    let rotation = rotation_bytes();
    println!(
        "last-level cache {}: weights and KV rotate through {}",
        mib(llc_bytes() as u64),
        mib(rotation as u64)
    );
    for (name, make) in backends() {
        let Ok(probe) = make() else { continue };
        let mut group = c.benchmark_group(name);
        for case in cases {
            let missing = unsupported(probe.as_ref(), &case.graph());
            if !missing.is_empty() {
                println!("skipping {name}/{}: unsupported {missing:?}", case.id());
                continue;
            }
            bench_case(&mut group, case.as_ref(), (name, make), rotation);
        }
        group.finish();
    }
}

fn bench_case(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &dyn Case,
    backend: (&'static str, Constructor),
    rotation: usize,
) {
    let mut workload: Option<Workload> = None;
    group.throughput(Throughput::Bytes(case.bytes()));
    group.bench_function(case.id(), |b| {
        let w = workload.get_or_insert_with(|| {
            case.build(backend, rotation)
                .unwrap_or_else(|e| panic!("{}/{}: {e}", backend.0, case.id()))
        });
        b.iter_custom(|iters| w.time(iters).unwrap_or_else(|e| panic!("{}: {e}", w.name)));
    });
    if let Some(w) = workload {
        w.report();
    }
}

#[cfg(test)]
mod tests {
    use kiln_ir::DType;
    use kiln_ir::kv_layout::KvDtype;

    use super::cases::{Attention, AttentionMode, Matvec, RmsNorm, RopeKvWrite};
    use super::*;

    /// Small enough to build in milliseconds, large enough for several instances.
    const ROTATION: usize = 256 << 10;

    fn cpu() -> (&'static str, Constructor) {
        BACKENDS[0]
    }

    fn check(case: &dyn Case) {
        let mut w = case
            .build(cpu(), ROTATION)
            .unwrap_or_else(|e| panic!("{}: {e}", case.id()));
        w.run_all_checked()
            .unwrap_or_else(|e| panic!("{}: {e}", case.id()));
        assert!(w.time(3).unwrap() > Duration::ZERO, "{}", w.name);
        assert!(w.bytes > 0 && w.flops > 0, "{}", w.name);
        assert!(w.name.starts_with("cpu/"), "{}", w.name);
    }

    #[test]
    fn parses_cache_sizes() {
        assert_eq!(parse_cache_size("491520K"), Some(480 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size("lots"), None);
    }

    #[test]
    fn every_case_kind_builds_and_runs() {
        for dtype in [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::F16,
            DType::Q5_0,
        ] {
            for tokens in [1, 4] {
                check(&Matvec {
                    dtype,
                    k: 64,
                    n: 96,
                    tokens,
                });
            }
        }
        for dtype in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
            check(&Matvec {
                dtype,
                k: 256,
                n: 37,
                tokens: 5,
            });
        }
        check(&RmsNorm { d: 96, tokens: 3 });
        for kv in [KvDtype::F8E4M3, KvDtype::F16] {
            check(&RopeKvWrite {
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 32,
                kv,
                tokens: 5,
            });
            for mode in [
                AttentionMode::Decode { ctx: 40 },
                AttentionMode::Prefill { tokens: 20 },
                AttentionMode::Batch { ctx: 33, seqs: 3 },
            ] {
                check(&Attention {
                    n_heads: 4,
                    n_kv_heads: 2,
                    head_dim: 32,
                    kv,
                    mode,
                });
            }
        }
    }

    #[test]
    fn the_rotation_exceeds_what_it_is_given() {
        let case = Matvec {
            dtype: DType::Q4_0,
            k: 64,
            n: 96,
            tokens: 1,
        };
        let w = case.build(cpu(), ROTATION).unwrap();
        assert!(w.footprint >= ROTATION as u64, "{w:?}");
        assert!(w.instances.len() * w.ops_per_step >= 2, "{w:?}");
    }

    #[test]
    fn a_decode_step_runs() {
        let Some(model) = decode::tests::tiny_model() else {
            return;
        };
        let models = [model];
        let mut d = decode::Decoder::new(&models, cpu().1, 16).expect("decoder");
        assert!(d.time(2).unwrap() > Duration::ZERO);
    }
}
