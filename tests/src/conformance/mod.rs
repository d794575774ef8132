//! The backend conformance suite, in the manner of ggml's `test-backend-ops`: a table of
//! small graphs, each around one op (or one fused op) under test, run on a backend and
//! compared with the f64 oracle of [`reference`] by normalized mean squared error,
//! NMSE = Σ(out − ref)² / Σ ref², against a limit per case.
//!
//! - [`cases`]: the table of cases and their limits.
//! - `ops`, `build`: the builders of each case's graph, data and expected outputs.
//! - [`reference`]: the oracle, plain loops.
//! - here: the runner ([`run_case`]), the bad-step checks, and what the per-backend
//!   `conformance_suite!` macro of `tests/tests/conformance.rs` calls.
//!
//! How a case feeds arbitrary activations through a graph that must start from token
//! ids: its inputs are F32 embedding tables of random rows, so `Embed` of ids 0..T gives
//! exactly the random activations; the op's result goes through `SelectRows` to become
//! the graph's output. Every case runs several steps on one loaded plan, each checked
//! against its own reference, so an output element a step leaves unwritten holds the
//! previous step's (different) value and fails.

mod build;
pub mod cases;
mod gemma_ops;
mod ops;
pub mod reference;

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use kiln_backends::Ci;
use kiln_ir::backend::{Backend, BackendError, SharedBytes, Step, WeightSource, argmax};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, ValueId, lower};
use kiln_testkit::{Outcome, Trial, fail, pass, skip, test};

pub use cases::{AttentionSpec, Case, GemmaAttention, Metric, RopeSpec, cases};
pub use ops::{attention_case, matmul_term_case};

/// A small xorshift64* generator: the suite's data is reproducible from a case's name.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Seeded by the FNV-1a hash of `name`.
    pub fn from_name(name: &str) -> Rng {
        let hash = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        Rng::new(hash)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `n` values of magnitude about `amplitude` whose scale and offset change every 32
    /// values, so every quantization block (of weights or of activations) has its own
    /// scale and minimum: a kernel that reads the wrong block's scale fails.
    pub fn blocky(&mut self, n: usize, amplitude: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let scale = amplitude * self.uniform(0.1, 2.0);
            let offset = self.uniform(-0.5, 0.5);
            for _ in 0..32.min(n - out.len()) {
                out.push(scale * (self.uniform(-1.0, 1.0) + offset));
            }
        }
        out
    }
}

/// A case made concrete: its graph (output not yet chosen), weights, KV pool and steps,
/// with the expected output of every probe after every step.
#[derive(Debug)]
pub struct Built {
    pub graph: Graph,
    /// All weights back to back, as in a model file; `weights` names their ranges.
    pub blob: Arc<Vec<u8>>,
    pub weights: Vec<(String, Range<usize>)>,
    pub kv_layout: KvLayout,
    pub kv_pages: usize,
    /// The plan's limits: the largest step of the case, tokens and output rows.
    pub max_tokens: usize,
    pub max_outputs: usize,
    pub steps: Vec<StepData>,
    pub probes: Vec<Probe>,
}

/// One step's inputs, owned (a [`Step`] borrows them).
#[derive(Clone, Debug)]
pub struct StepData {
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub token_seq: Vec<u32>,
    pub block_tables: Vec<Vec<u32>>,
    pub output_rows: Vec<u32>,
}

impl StepData {
    /// Run it on the loaded plan and read the output, (outputs, cols); the backend's
    /// `read_argmax` must pick each row's argmax of what it read.
    fn run(&self, backend: &mut dyn Backend, cols: usize) -> Result<Vec<f32>, String> {
        let tables: Vec<&[u32]> = self.block_tables.iter().map(Vec::as_slice).collect();
        let step = Step {
            token_ids: &self.token_ids,
            positions: &self.positions,
            token_seq: &self.token_seq,
            block_tables: &tables,
            output_rows: &self.output_rows,
        };
        backend
            .execute(&step)
            .map_err(|e| format!("execute: {e}"))?;
        backend
            .synchronize()
            .map_err(|e| format!("synchronize: {e}"))?;
        let mut out = vec![f32::NAN; self.output_rows.len() * cols]; // (outputs, cols)
        backend
            .read_logits(&mut out)
            .map_err(|e| format!("read_logits: {e}"))?;
        let mut ids = vec![u32::MAX; self.output_rows.len()]; // (outputs)
        backend
            .read_argmax(cols, &mut ids)
            .map_err(|e| format!("read_argmax: {e}"))?;
        let host: Vec<u32> = out.chunks_exact(cols).map(argmax).collect();
        if ids != host {
            return Err(format!(
                "read_argmax picks {ids:?} where the logits' argmax is {host:?}"
            ));
        }
        Ok(out)
    }
}

/// A value of the graph the case checks (a `SelectRows` output), and what it must hold.
#[derive(Clone, Debug)]
pub struct Probe {
    pub value: ValueId,
    pub cols: usize,
    /// Per step: (outputs, cols) expected values.
    pub expected: Vec<Vec<f64>>,
    /// Per step: (outputs, cols) expected power, the denominator of [`Metric::TermPower`].
    pub power: Vec<Vec<f64>>,
}

/// Weights by name, from one shared blob.
struct Weights<'a>(&'a Built);

impl WeightSource for Weights<'_> {
    fn weight(&self, name: &str) -> Option<SharedBytes> {
        let (_, range) = self.0.weights.iter().find(|(n, _)| n == name)?;
        SharedBytes::new(self.0.blob.clone(), range.clone())
    }
}

/// Lower the case's graph with `probe` as its output and load it.
fn load(backend: &mut dyn Backend, built: &Built, probe: &Probe) -> Result<(), String> {
    let mut graph = built.graph.clone();
    graph.output = Some(probe.value);
    let unlowered = graph.clone();
    let supports = |op: &kiln_ir::Op| backend.supports(op, &unlowered);
    let plan = lower(graph, &supports, built.max_tokens, built.max_outputs)
        .map_err(|e| format!("lower: {e}"))?;
    backend
        .load_plan(&plan, &Weights(built), &built.kv_layout, built.kv_pages)
        .map_err(|e| format!("load_plan: {e}"))
}

/// The ops of the case the backend has no kernel for (a case with any is skipped).
pub fn unsupported_ops(backend: &dyn Backend, case: &Case) -> Vec<String> {
    let graph = case.build().graph;
    graph
        .nodes
        .iter()
        .filter(|n| !backend.supports(&n.op, &graph))
        .map(|n| {
            // Name the weight types: a backend without kernels for a block format (the
            // K-quants on the GPU backends, for now) skips every case that uses it.
            let dtypes: Vec<&str> = (n.op.matrices().iter())
                .filter_map(|&w| graph.weight(w).map(|w| w.dtype.name()))
                .collect();
            if dtypes.is_empty() {
                n.op.name().to_string()
            } else {
                format!("{} of {} weights", n.op.name(), dtypes.join(", "))
            }
        })
        .collect()
}

/// Run a case: for each probe, lower and load the graph, run every step, and compare the
/// outputs with the reference. Returns the worst error over probes and steps (NMSE, or
/// the case's other [`Metric`]); an error when a step fails or an output is not finite.
pub fn run_case(backend: &mut dyn Backend, case: &Case) -> Result<f64, String> {
    let built = case.build();
    run_built(backend, &built, case.metric, case.element_limit)
}

/// [`run_case`] over a KV cache larger than 4 GiB: the pages of sequence s ≥ 1 become
/// sequence 0's moved up by s·2³² bytes, so that every page in use past 4 GiB is one
/// that a 32-bit page offset would fold onto a page of sequence 0 (its keys and values
/// overwritten, its attention wrong). The page size must divide 4 GiB; one KV group;
/// sequence 0 the longest.
pub fn run_case_with_pages_past_4_gib(
    backend: &mut dyn Backend,
    case: &Case,
) -> Result<f64, String> {
    let mut built = case.build();
    let page_bytes = built.kv_layout.page_bytes() as u64;
    if !(1u64 << 32).is_multiple_of(page_bytes) || built.kv_layout.n_groups() != 1 {
        return Err(format!(
            "pages of {page_bytes} bytes in {} groups",
            built.kv_layout.n_groups()
        ));
    }
    let fold = ((1u64 << 32) / page_bytes) as u32;
    for step in &mut built.steps {
        let first = step.block_tables[0].clone();
        for (s, table) in step.block_tables.iter_mut().enumerate().skip(1) {
            if table.len() > first.len() {
                return Err("a sequence longer than the first".into());
            }
            for (page, &under) in table.iter_mut().zip(&first) {
                *page = under + s as u32 * fold;
            }
        }
    }
    let tables = built
        .steps
        .iter()
        .flat_map(|s| s.block_tables.iter().flatten());
    built.kv_pages = tables.map(|&p| p as usize + 1).max().unwrap_or(0);
    run_built(backend, &built, case.metric, case.element_limit)
}

fn run_built(
    backend: &mut dyn Backend,
    built: &Built,
    metric: Metric,
    element_limit: Option<f64>,
) -> Result<f64, String> {
    let mut worst = 0.0f64;
    for (p, probe) in built.probes.iter().enumerate() {
        load(backend, built, probe)?;
        for (s, step) in built.steps.iter().enumerate() {
            let got = step
                .run(backend, probe.cols)
                .map_err(|e| format!("probe {p}, step {s}: {e}"))?;
            let err = error(metric, &got, &probe.expected[s], &probe.power[s])
                .map_err(|e| format!("probe {p}, step {s}: {e}"))?;
            if let Some(limit) = element_limit {
                check_each_element(&got, &probe.expected[s], probe.cols, limit)
                    .map_err(|e| format!("probe {p}, step {s}: {e}"))?;
            }
            worst = worst.max(err);
        }
    }
    Ok(worst)
}

/// Σ(got − expected)² over the metric's denominator; an error for a non-finite output.
pub fn error(metric: Metric, got: &[f32], expected: &[f64], power: &[f64]) -> Result<f64, String> {
    if got.len() != expected.len() {
        return Err(format!(
            "{} outputs, expected {}",
            got.len(),
            expected.len()
        ));
    }
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        return Err(format!("output element {i} is {}", got[i]));
    }
    let err: f64 = got
        .iter()
        .zip(expected)
        .map(|(&g, e)| (f64::from(g) - e).powi(2))
        .sum();
    let denominator: f64 = match metric {
        Metric::Nmse => expected.iter().map(|e| e * e).sum(),
        Metric::TermPower => power.iter().sum(),
    };
    Ok(err / denominator)
}

/// Every element's squared error within `limit` times the mean square of `expected`
/// ((outputs, cols) both); the first one past it is the error.
pub fn check_each_element(
    got: &[f32],
    expected: &[f64],
    cols: usize,
    limit: f64,
) -> Result<(), String> {
    let mean_square = expected.iter().map(|e| e * e).sum::<f64>() / expected.len().max(1) as f64;
    let bad = (got.iter().zip(expected).enumerate())
        .find(|&(_, (&g, &e))| (f64::from(g) - e).powi(2) > limit * mean_square);
    match bad {
        None => Ok(()),
        Some((i, (g, e))) => Err(format!(
            "output row {}, column {}: {g}, expected {e:.6} (RMS {:.3e})",
            i / cols.max(1),
            i % cols.max(1),
            mean_square.sqrt()
        )),
    }
}

/// A backend (or a configuration of one) the suite runs: each trial opens its own.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub ci: Ci,
    pub open: Opener,
}

/// Opens a target's backend.
pub type Opener = Arc<dyn Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

impl Target {
    pub fn new(name: &str, ci: Ci, open: Opener) -> Target {
        Target {
            name: name.into(),
            ci,
            open,
        }
    }

    /// The backend, or the outcome of a test that cannot run: a skip with the reason, or a
    /// failure where CI must have the device.
    pub fn backend(&self) -> Result<Box<dyn Backend>, Outcome> {
        (self.open)().map_err(|e| {
            if self.ci == Ci::Lavapipe && crate::gpu_backends_required() {
                fail(format!(
                    "KILN_REQUIRE_GPU_BACKENDS=1 but {} has no device: {e}",
                    self.name
                ))
            } else {
                skip(format!("{}: {e}", self.name))
            }
        })
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.name)
    }
}

/// Every backend of the registry this test build carries, opened as tests open them
/// (CPU implementations of a device API such as lavapipe allowed).
pub fn registry_targets() -> Vec<Target> {
    kiln_backends::ALL
        .iter()
        .filter_map(|b| {
            let open = b.open_for_tests?;
            Some(Target::new(b.name, b.ci, Arc::new(open)))
        })
        .collect()
}

/// The trials of one target: `<target>::<case>` for every case of the table, then
/// `<target>::bad_steps_are_errors` and `<target>::copy_kv_page_keeps_the_context`.
pub fn trials(target: &Target) -> Vec<Trial> {
    let mut trials: Vec<Trial> = cases()
        .into_iter()
        .map(|case| {
            let target = target.clone();
            test(format!("{}::{}", target.name, case.name), move || {
                check_case(&target, &case)
            })
        })
        .collect();
    let checks: [(&str, fn(&mut dyn Backend) -> Result<(), String>); 2] = [
        ("bad_steps_are_errors", check_bad_steps),
        ("copy_kv_page_keeps_the_context", check_copy_kv_page),
    ];
    for (name, check) in checks {
        let target = target.clone();
        trials.push(test(format!("{}::{name}", target.name), move || {
            let mut backend = match target.backend() {
                Ok(b) => b,
                Err(outcome) => return outcome,
            };
            check(backend.as_mut()).map_err(|e| format!("{}: {e}", target.name))?;
            pass()
        }));
    }
    trials
}

/// Run one case on the target and hold its error to the case's limit.
fn check_case(target: &Target, case: &Case) -> Outcome {
    let mut backend = match target.backend() {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    let unsupported = unsupported_ops(backend.as_ref(), case);
    if !unsupported.is_empty() {
        return skip(format!("{} has no kernel for {unsupported:?}", target.name));
    }
    let err = run_case(backend.as_mut(), case).map_err(|e| format!("{}: {e}", target.name))?;
    if kiln_testkit::verbose() {
        println!(
            "{} {}: {} {err:.3e} (limit {:.0e}) {}",
            target.name, case.name, case.metric, case.limit, case.shape
        );
    }
    if err > case.limit {
        return fail(format!(
            "{} {}: {} {err:.3e} over the limit {:.0e}",
            target.name, case.name, case.metric, case.limit
        ));
    }
    pass()
}

/// The case of the table named `name`.
pub fn find_case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no conformance case {name}"))
}

/// Every limit can fail: in every checked step, the expected outputs with one row of
/// typical size (the median norm) zeroed exceed it, so a row a backend leaves unwritten or
/// takes from the wrong token fails. (The FP8 KV limit is above the noise of its own
/// quantization, so it cannot see the weakest rows of a long step; f32 limits can.)
pub fn check_limits_can_fail() {
    for case in cases() {
        let built = case.build();
        for probe in &built.probes {
            for (expected, power) in probe.expected.iter().zip(&probe.power) {
                let mut damaged: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
                let mut rows: Vec<(usize, f64)> =
                    damaged.chunks(probe.cols).map(norm).enumerate().collect();
                rows.sort_by(|a, b| a.1.total_cmp(&b.1));
                let typical = rows[rows.len() / 2].0;
                damaged[typical * probe.cols..][..probe.cols].fill(0.0);
                let err = error(case.metric, &damaged, expected, power).expect("finite");
                assert!(
                    err > case.limit,
                    "{}: a zeroed row gives {err:.2e}, within the limit {:.0e}",
                    case.name,
                    case.limit
                );
            }
        }
    }
}

fn norm(row: &[f32]) -> f64 {
    row.iter().map(|&v| f64::from(v).powi(2)).sum()
}

/// The case the bad-step checks load: paged attention over several sequences.
pub const BAD_STEP_CASE: &str = "attention_h64_gqa4_f16_p5";

/// Steps that break the step contract are errors, not panics, and leave the backend
/// able to run the good steps that follow. Also: executing with no plan loaded, and a
/// logits buffer of the wrong size.
pub fn check_bad_steps(backend: &mut dyn Backend) -> Result<(), String> {
    let case = find_case(BAD_STEP_CASE);
    let built = case.build();
    let good = &built.steps[0];
    let cols = built.probes[0].cols;
    expect_error(backend, "a step before any plan is loaded", good, cols)?;
    load(backend, &built, &built.probes[0])?;

    let vocab = built.graph.weights[0].rows as u32;
    let n = good.token_ids.len();
    let mut bad: Vec<(&str, StepData)> = Vec::new();
    let mut edit = |what, f: &dyn Fn(&mut StepData)| {
        let mut step = good.clone();
        f(&mut step);
        bad.push((what, step));
    };
    edit("a token id outside the vocabulary", &|s| {
        s.token_ids[n - 1] = vocab
    });
    edit("a position its block table does not cover", &|s| {
        let seq = s.token_seq[n - 1] as usize;
        s.positions[n - 1] = (s.block_tables[seq].len() * built.kv_layout.kv_page_size()) as u32;
    });
    edit("a block table with a page outside the pool", &|s| {
        s.block_tables[0][0] = built.kv_pages as u32
    });
    edit("a token of a sequence with no block table", &|s| {
        s.token_seq[0] = s.block_tables.len() as u32
    });
    edit("more tokens than the plan takes", &|s| {
        let extra = built.max_tokens + 1 - s.token_ids.len();
        for _ in 0..extra {
            s.token_ids.push(0);
            s.positions.push(0);
            s.token_seq.push(0);
        }
    });
    edit("an output row past the step's tokens", &|s| {
        s.output_rows.push(n as u32)
    });
    edit("more output rows than the plan takes", &|s| {
        s.output_rows = vec![0; built.max_outputs + 1]
    });
    edit("fewer positions than tokens", &|s| {
        s.positions.pop();
    });
    edit("fewer token_seq entries than tokens", &|s| {
        s.token_seq.pop();
    });
    edit("no tokens", &|s| {
        s.token_ids.clear();
        s.positions.clear();
        s.token_seq.clear();
        s.output_rows.clear();
    });
    for (what, step) in &bad {
        expect_error(backend, what, step, cols)?;
    }

    good.run(backend, cols)?;
    let mut wrong = vec![0.0f32; good.output_rows.len() * cols + 1];
    if backend.read_logits(&mut wrong).is_ok() {
        return Err("read_logits into a buffer of the wrong size succeeded".into());
    }
    let mut ids = vec![0u32; good.output_rows.len() + 1];
    if backend.read_argmax(cols, &mut ids).is_ok() {
        return Err("read_argmax of more rows than the step has succeeded".into());
    }
    // The backend still runs the case correctly after all that.
    let err = run_built(backend, &built, case.metric, case.element_limit)?;
    if err > case.limit {
        return Err(format!(
            "after the bad steps {BAD_STEP_CASE} gives {err:.2e} (limit {:.0e})",
            case.limit
        ));
    }
    Ok(())
}

/// The case the KV page copy check runs: FP8 pages (values and scales) of 5 tokens,
/// sequences whose context ends inside a page.
pub const COPY_KV_PAGE_CASE: &str = "attention_h64_gqa4_fp8_p5";

/// `copy_kv_page` keeps a sequence's context: run the case up to its last step, move the
/// written pages of its sequences to the spare pages of the pool with `copy_kv_page` (a
/// full page whole, the page being filled with its written slots only, as copy-on-write
/// asks), then run the last step on the copies: it must still match the oracle.
pub fn check_copy_kv_page(backend: &mut dyn Backend) -> Result<(), String> {
    let case = find_case(COPY_KV_PAGE_CASE);
    let built = case.build();
    let probe = &built.probes[0];
    load(backend, &built, probe)?;
    let (last, before) = built.steps.split_last().ok_or("a case without steps")?;
    for step in before {
        step.run(backend, probe.cols)?;
    }
    let page_size = built.kv_layout.kv_page_size();
    let used: Vec<u32> = last.block_tables.iter().flatten().copied().collect();
    let mut spare = (0..built.kv_pages as u32).filter(|p| !used.contains(p));
    let mut moved = last.clone();
    let mut copies = Vec::new();
    // Last sequence first: its context ends inside a page.
    for seq in (0..moved.block_tables.len()).rev() {
        // Positions written before the last step: those below its first of `seq`.
        let written = last
            .positions
            .iter()
            .zip(&last.token_seq)
            .filter(|&(_, &s)| s as usize == seq)
            .map(|(&p, _)| p as usize)
            .min()
            .unwrap_or(0);
        for (i, page) in moved.block_tables[seq].iter_mut().enumerate() {
            let filled = written.saturating_sub(i * page_size).min(page_size);
            let Some(to) = spare.next().filter(|_| filled > 0) else {
                break;
            };
            backend
                .copy_kv_page(*page, to, filled)
                .map_err(|e| format!("copy_kv_page({page}, {to}, {filled}): {e}"))?;
            copies.push((*page, to, filled));
            *page = to;
        }
    }
    if !copies.iter().any(|&(_, _, n)| n < page_size) || copies.len() < 2 {
        return Err(format!("the check copies too little: {copies:?}"));
    }
    let got = moved.run(backend, probe.cols)?;
    let n = built.steps.len() - 1;
    let err = error(case.metric, &got, &probe.expected[n], &probe.power[n])?;
    if err > case.limit {
        return Err(format!(
            "after copying KV pages {copies:?} (src, dst, tokens), {COPY_KV_PAGE_CASE} gives {err:.2e} (limit {:.0e})",
            case.limit
        ));
    }
    Ok(())
}

fn expect_error(
    backend: &mut dyn Backend,
    what: &str,
    step: &StepData,
    cols: usize,
) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| step.run(backend, cols))) {
        Ok(Err(_)) => Ok(()),
        Ok(Ok(_)) => Err(format!("{what}: accepted")),
        Err(_) => Err(format!("{what}: panicked")),
    }
}
