//! The end-to-end checks each device backend's test file runs
//! (`tests/tests/<backend>_backend.rs`): greedy decoding of the reference model against
//! the CPU backend, per-launch timers. (The backends have no user buffers to check: the
//! Backend trait has none, ir/src/backend.rs says why.)
//!
//! The logits are held to the f32 oracle (`Reference`), not to the CPU backend: the CPU
//! backend quantizes activations to 8 bits before the quantized matmuls (as llama.cpp
//! does; NMSE up to 1.3e-2 from the oracle), and so do the GPU kernels' matvecs of
//! decode-sized steps (CUDA's, and the WGSL kernels' for every quantized type but Q8_K),
//! each in its own way: the oracle is the one fixed point.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_engine::compiled::Compiled;
use kiln_engine::kv::KvDtype;
use kiln_engine::model::Model;
use kiln_engine::reference::Reference;
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::argmax;
use kiln_ir::backend::{Backend, BackendError, DeviceProperties, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

use crate::cpu::{cpu, options};

/// Below this top-two logit gap (of the CPU backend) the greedy choice is a near-tie.
pub const MIN_GAP: f32 = 0.5;

/// A prompt of about 100 tokens: its prefill is a step of more than one 64-token tile
/// (the WGSL kernels' tiled GEMM, CUDA's tensor-core tiles), where the short prompts'
/// steps take the matrix-vector kernels.
pub const LONG_PROMPT: &str = "In the old harbour town, the fishermen rose before dawn to mend \
their nets and check the weather. The wind came from the west, cold and steady, and the \
boats rocked gently against the stone quay. Children ran along the beach collecting shells, \
while their parents loaded crates of ice onto the decks. By the time the sun climbed over \
the hills, the whole fleet had left the harbour, and the town fell quiet until the evening \
market opened in the square near the church. The old woman who sold";

/// [`LONG_PROMPT`], checked to come to more than one 64-token tile with `model`'s
/// tokenizer.
pub fn long_prompt(model: &Model) -> &'static str {
    let n = model.tokenizer.encode(LONG_PROMPT, true, true).len();
    assert!(n > 64, "the long prompt is {n} tokens");
    LONG_PROMPT
}

/// What a backend's greedy test runs.
#[derive(Debug)]
pub struct Greedy<'a> {
    /// The backend's name, for messages.
    pub name: &'a str,
    pub prompt: &'a str,
    pub n_ctx: usize,
    /// Decoded tokens per KV type.
    pub tokens: usize,
    /// The KV types run.
    pub kv: &'a [KvDtype],
    /// Logits of a step against the oracle's: (NMSE, largest difference relative to the
    /// largest logit) allowed per KV type.
    pub limits: fn(KvDtype) -> (f64, f64),
}

/// Decodes `check.prompt` greedily with each of `check.kv` on a backend from `make`, the CPU
/// backend and the oracle, all fed the CPU backend's tokens: the backend must pick the
/// CPU backend's token at every step up to the first near-tie, and its logits stay
/// within the limits of the oracle's.
pub fn greedy_matches_cpu(model: &Model, check: &Greedy<'_>, make: &dyn Fn() -> Box<dyn Backend>) {
    let ids = model.tokenizer.encode(check.prompt, true, true);
    let name = check.name;
    for &kv in check.kv {
        let (max_nmse, max_rel) = (check.limits)(kv);
        let start = Instant::now();
        let backend = make();
        let device = backend.properties().name.clone();
        let mut gpu = Compiled::new(model, backend, options(check.n_ctx, kv))
            .unwrap_or_else(|e| panic!("the {name} backend compiles the model: {e}"));
        let mut reference = cpu(model, options(check.n_ctx, kv));
        let mut oracle = Reference::new(model, check.n_ctx);
        let mut exact = oracle.forward(&ids, LogitsFor::Last).unwrap();
        let mut theirs = reference.forward(&ids, LogitsFor::Last).unwrap();
        let mut ours = gpu.forward(&ids, LogitsFor::Last).unwrap();
        let mut parted = None;
        let mut worst = (0.0f64, 0.0f64);
        let mut tokens = Vec::new();
        for step in 0..check.tokens {
            let (nmse, rel) = error(&ours, &exact);
            worst = (worst.0.max(nmse), worst.1.max(rel));
            let t = argmax(&theirs);
            tokens.push(t);
            if parted.is_none() && top2_gap(&theirs) < MIN_GAP {
                parted = Some(check.tokens); // a near-tie: the order past it is not checked
            }
            if parted.is_none() && argmax(&ours) != t {
                parted = Some(step);
            }
            assert!(
                parted != Some(step),
                "kv {kv}, step {step}: {name} picks {} where the CPU backend picks {t} (gap {})",
                argmax(&ours),
                top2_gap(&theirs)
            );
            theirs = reference.forward(&[t], LogitsFor::Last).unwrap();
            ours = gpu.forward(&[t], LogitsFor::Last).unwrap();
            exact = oracle.forward(&[t], LogitsFor::Last).unwrap();
        }
        eprintln!(
            "{name} on {device}, kv {kv}: tokens {tokens:?} ({:?}) as the CPU backend's; logits vs the oracle: NMSE {:.2e}, max rel {:.2e} (limits {max_nmse:.0e}, {max_rel}); {:.1} s",
            model.tokenizer.decode(&tokens),
            worst.0,
            worst.1,
            start.elapsed().as_secs_f64()
        );
        assert!(
            worst.0 <= max_nmse && worst.1 <= max_rel,
            "kv {kv}: logits NMSE {:.2e}, max rel {:.2e}",
            worst.0,
            worst.1
        );
    }
}

/// The families' random-weight models (Llama 3, Mistral, Qwen 2's biases, Qwen 3's
/// QK-norm; [`crate::families`]) on a backend from `make`, as [`greedy_matches_cpu`]
/// checks the reference model: the models are nearly flat, so the tokens are compared up
/// to the first near-tie, and the logits against the oracle's at every step. F16 KV only:
/// its limits are the tight ones, and the KV types are the reference model's business.
pub fn families_match_the_oracle(
    name: &str,
    limits: fn(KvDtype) -> (f64, f64),
    make: &dyn Fn() -> Box<dyn Backend>,
) {
    for family in crate::families::FAMILIES {
        let model = Model::load(crate::families::family_file(family))
            .unwrap_or_else(|e| panic!("{family} loads: {e}"));
        let check = Greedy {
            name: &format!("{name} ({family})"),
            prompt: "The capital of France is",
            n_ctx: 64,
            tokens: 3,
            kv: &[KvDtype::F16],
            limits,
        };
        greedy_matches_cpu(&model, &check, make);
    }
}

/// The limits of the WGSL kernels (wgpu and Vulkan run the same ones): logits of a step
/// against the oracle's, (NMSE, largest difference relative to the largest logit), per KV
/// type. The int8 matvec (Q4_0, Q4_1, Q8_0 weights; steps of at most 32 rows) quantizes
/// activations to int8 as the CPU and CUDA backends do: measured on lavapipe on SmolLM2
/// 3.4e-3 / 4.0e-2 with F16 KV and 1.3e-2 / 6.1e-2 with FP8, the families 4.5e-4 /
/// 2.0e-2 (with f32 activations it was 1.5e-6 / 6.5e-4 and 4.6e-3 / 4.5e-2; the CPU
/// backend measures 1.8e-3 / 3.5e-2, the CUDA matvec 5.0e-3 / 3.5e-2). About 2× over; a
/// wrong kernel moves logits by their own size.
pub fn wgsl_limits(kv: KvDtype) -> (f64, f64) {
    match kv {
        KvDtype::F16 => (7e-3, 8e-2),
        KvDtype::F8E4M3 => (3e-2, 0.12),
    }
}

/// The gap between the two largest logits.
pub fn top2_gap(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &l in logits {
        if l > first {
            second = first;
            first = l;
        } else if l > second {
            second = l;
        }
    }
    first - second
}

/// (NMSE, max |a - b| / max |b|) of `ours` against `theirs`.
pub fn error(ours: &[f32], theirs: &[f32]) -> (f64, f64) {
    assert!(ours.iter().all(|x| x.is_finite()), "non-finite logits");
    let (mut se, mut ss, mut max_diff, mut max_ref) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in ours.iter().zip(theirs) {
        let (a, b) = (f64::from(a), f64::from(b));
        se += (a - b) * (a - b);
        ss += b * b;
        max_diff = max_diff.max((a - b).abs());
        max_ref = max_ref.max(b.abs());
    }
    (se / ss, max_diff / max_ref)
}

/// After a step, `launch_times` has one finite time per launch, in order.
pub fn check_launch_times(backend: &mut dyn Backend) {
    let times = backend.launch_times().expect("timers are on");
    assert!(!times.is_empty());
    for (i, t) in times.iter().enumerate() {
        assert_eq!(t.launch, i);
        assert!(t.seconds.is_finite() && t.seconds >= 0.0, "{t:?}");
    }
    eprintln!("launch times: {times:?}");
}

/// The logits of `prompt`'s last token and of `tokens` greedy decode steps after it on
/// `backend` (F8E4M3 KV, a context of 64): what two configurations of one backend
/// compare.
pub fn decode_logits(
    model: &Model,
    backend: Box<dyn Backend>,
    prompt: &str,
    tokens: usize,
) -> Vec<Vec<f32>> {
    let ids = model.tokenizer.encode(prompt, true, true);
    let mut compiled = Compiled::new(model, backend, options(64, KvDtype::F8E4M3))
        .expect("the backend compiles the model");
    let mut logits = vec![
        compiled
            .forward(&ids, LogitsFor::Last)
            .expect("the prompt runs"),
    ];
    for _ in 0..tokens {
        let t = argmax(&logits[logits.len() - 1]);
        logits.push(
            compiled
                .forward(&[t], LogitsFor::Last)
                .expect("a decode step runs"),
        );
    }
    logits
}

/// A conformance case run twice: the first `launch_times` turns the timers on (and
/// answers an error), the second run is timed and every launch of its plan has a time.
pub fn launch_times_cover_the_last_step(backend: &mut dyn Backend) {
    let case = crate::conformance::find_case("rope_kv_write_attention_h64_gqa3_fp8_p16");
    crate::conformance::run_case(backend, &case).expect("the case runs");
    assert!(backend.launch_times().is_err());
    crate::conformance::run_case(backend, &case).expect("the case runs");
    check_launch_times(backend);
}

/// A backend whose `execute` calls are timed on the host (entry to return: for the
/// WGSL backends, everything up to the queue submit), forwarding everything else.
pub struct Timed {
    inner: Box<dyn Backend>,
    times: Arc<Mutex<Vec<Duration>>>,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timed({})", self.inner.name())
    }
}

impl Timed {
    /// `inner`, timed into `times`.
    pub fn new(inner: Box<dyn Backend>, times: Arc<Mutex<Vec<Duration>>>) -> Timed {
        Timed { inner, times }
    }
}

impl Backend for Timed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn properties(&self) -> &DeviceProperties {
        self.inner.properties()
    }
    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        self.inner.supports(op, graph)
    }
    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.inner.load_plan(plan, weights, kv, kv_page_count)
    }
    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        let start = Instant::now();
        let result = self.inner.execute(step);
        if let Ok(mut t) = self.times.lock() {
            t.push(start.elapsed());
        }
        result
    }
    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.inner.read_logits(out)
    }
    fn copy_kv_page(&mut self, src: u32, dst: u32, n_tokens: usize) -> Result<(), BackendError> {
        self.inner.copy_kv_page(src, dst, n_tokens)
    }
    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.inner.synchronize()
    }
    fn read_argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        self.inner.read_argmax(vocab, out)
    }
    fn load_bytes(&self, plan: &Plan) -> usize {
        self.inner.load_bytes(plan)
    }
    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        self.inner.launch_times()
    }
}

/// The host time of a decode step on a backend from `make` (SmolLM2, F16 KV): `steps`
/// greedy decode steps after a short prompt, each one's `execute` timed ([`Timed`]).
/// Printed (median and mean), never asserted: wall-clock times depend on the machine.
pub fn decode_host_time(
    model: &Model,
    name: &str,
    steps: usize,
    make: &dyn Fn() -> Box<dyn Backend>,
) -> Duration {
    let times = Arc::new(Mutex::new(Vec::new()));
    let backend = Box::new(Timed::new(make(), times.clone()));
    let device = backend.properties().name.clone();
    let mut gpu = Compiled::new(model, backend, options(64, KvDtype::F16))
        .unwrap_or_else(|e| panic!("the {name} backend compiles the model: {e}"));
    let ids = model
        .tokenizer
        .encode("The capital of France is", true, true);
    let mut logits = gpu.forward(&ids, LogitsFor::Last).unwrap();
    // One step to warm up (the first decode step's shape is new).
    for step in 0..steps + 1 {
        if step == 1 {
            times.lock().unwrap().clear();
        }
        logits = gpu.forward(&[argmax(&logits)], LogitsFor::Last).unwrap();
    }
    let mut t = times.lock().unwrap().clone();
    t.sort();
    let median = t[t.len() / 2];
    let mean = t.iter().sum::<Duration>() / t.len() as u32;
    eprintln!(
        "{name} on {device}: host time of a decode step (execute entry to submit), SmolLM2: median {:.1} µs, mean {:.1} µs over {} steps",
        median.as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        t.len()
    );
    // The last step's logits again: what reading a finished step's output costs (the
    // first read waited for the step; the next step is recorded already).
    let mut row = vec![f32::NAN; logits.len()];
    let mut reads: Vec<Duration> = (0..steps)
        .map(|_| {
            let start = Instant::now();
            gpu.backend().read_logits(&mut row).unwrap();
            start.elapsed()
        })
        .collect();
    reads.sort();
    assert_eq!(row, logits, "a read again gives the same logits");
    eprintln!(
        "{name} on {device}: reading a finished step's logits ({} values): median {:.1} µs",
        row.len(),
        reads[reads.len() / 2].as_secs_f64() * 1e6
    );
    median
}

/// The weights buffer limit of the split tests: SmolLM2's ~100 MB of weights (its
/// largest, the embedding table, 30 MB) over three buffers.
pub const SPLIT_LIMIT: u64 = 32 << 20;

/// Greedy decoding of `prompt` (F16 KV) with the weights split over buffers of at most
/// `limit` bytes (a backend from `split`) against the unsplit run (`whole`): the plan's
/// weights take more than two buffers at that limit, and the split run's tokens and
/// logits equal the unsplit run's, bit for bit, and its tokens the CPU backend's up to
/// the first near-tie.
pub fn split_weights_match(
    model: &Model,
    name: &str,
    limit: u64,
    whole: &dyn Fn() -> Box<dyn Backend>,
    split: &dyn Fn() -> Box<dyn Backend>,
) {
    let (prompt, tokens, kv) = ("The capital of France is", 4, KvDtype::F16);
    let ids = model.tokenizer.encode(prompt, true, true);
    let run = |backend: Box<dyn Backend>| {
        let mut gpu = Compiled::new(model, backend, options(64, kv))
            .unwrap_or_else(|e| panic!("the {name} backend compiles the model: {e}"));
        let layout = kiln_kernels_wgsl::weights::WeightLayout::new(gpu.plan(), limit).unwrap();
        let mut all = vec![gpu.forward(&ids, LogitsFor::Last).unwrap()];
        for _ in 0..tokens {
            let t = argmax(all.last().unwrap());
            all.push(gpu.forward(&[t], LogitsFor::Last).unwrap());
        }
        (layout.buffers.len(), all)
    };
    let (buffers, split_logits) = run(split());
    assert!(
        buffers > 2,
        "{buffers} weights buffers of at most {limit} bytes"
    );
    let (_, whole_logits) = run(whole());
    if std::env::var_os("KILN_SPLIT_DEBUG").is_some() {
        let (_, again) = run(whole());
        let steps = split_logits.iter().zip(&whole_logits).zip(&again);
        for (step, ((s, w), a)) in steps.enumerate() {
            let (split, twice) = (error(s, w), error(a, w));
            eprintln!("step {step}: split vs whole {split:?}, whole vs whole {twice:?}");
        }
    }
    for (step, (s, w)) in split_logits.iter().zip(&whole_logits).enumerate() {
        let same = s.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "step {step}: the split run's logits differ from the unsplit run's"
        );
    }
    let mut reference = cpu(model, options(64, kv));
    let mut theirs = reference.forward(&ids, LogitsFor::Last).unwrap();
    let mut picked = Vec::new();
    for ours in &split_logits {
        if top2_gap(&theirs) < MIN_GAP {
            break;
        }
        let t = argmax(&theirs);
        assert_eq!(argmax(ours), t, "{name}: the split run picks another token");
        picked.push(t);
        theirs = reference.forward(&[t], LogitsFor::Last).unwrap();
    }
    eprintln!(
        "{name}: weights over {buffers} buffers of at most {limit} bytes: logits of {} steps equal the unsplit run's, tokens {picked:?} the CPU backend's",
        split_logits.len()
    );
}

/// The device-side argmax (`Backend::read_argmax`) picks, for every output row of a few
/// conformance cases, what the host's argmax picks from the logits; `shape` is the
/// backend's (rows, columns) of its last output.
pub fn argmax_matches_host<B: Backend>(
    backend: &mut B,
    shape: fn(&B) -> Result<(usize, usize), BackendError>,
) {
    for case in [
        "matmul_t33_q4_1",
        "matmul3_t7_q8_0",
        "rmsnorm_matmul_swiglu_t3_f16",
    ] {
        let case = crate::conformance::find_case(case);
        crate::conformance::run_case(backend, &case).expect("the case runs");
        let (rows, cols) = shape(backend).unwrap();
        let mut logits = vec![0.0f32; rows * cols];
        backend.read_logits(&mut logits).unwrap();
        let host: Vec<u32> = logits.chunks_exact(cols).map(argmax).collect();
        let mut device = vec![0u32; rows];
        backend.read_argmax(cols, &mut device).unwrap();
        assert_eq!(device, host, "{}", case.name);
    }
}

/// A runner that hides its backend's token choices: every call reads the logits back and
/// the Runner trait's defaults choose on the host.
pub struct LogitsOnly<'a>(pub &'a mut dyn Runner);

impl std::fmt::Debug for LogitsOnly<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogitsOnly").field(&self.0.name()).finish()
    }
}

impl Runner for LogitsOnly<'_> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn n_ctx(&self) -> usize {
        self.0.n_ctx()
    }
    fn position(&self) -> usize {
        self.0.position()
    }
    fn reset(&mut self) {
        self.0.reset()
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }
    fn forward(
        &mut self,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, kiln_engine::Error> {
        self.0.forward(tokens, logits)
    }
}

/// Sampling with a top-k filter (then top-p, min-p, a high temperature, so that it does
/// not follow the argmax) through a backend from `make`: the tokens drawn from the
/// runner's top k (`Runner::forward_top_k`, the backend's `read_top_k`: a device top-k
/// where it has one) are the tokens drawn from the logits read back, draw for draw, for
/// each (seed, k) of `cases`.
pub fn sampling_from_the_top_k_matches_the_logits(
    model: &Model,
    make: &dyn Fn() -> Box<dyn Backend>,
    cases: &[(u64, usize)],
    tokens: usize,
) {
    use kiln_engine::driver::{GenerateRequest, generate};
    use kiln_engine::sampler::SamplerConfig;
    let mut runner = Compiled::new(model, make(), options(64, KvDtype::F8E4M3))
        .unwrap_or_else(|e| panic!("the backend compiles the model: {e}"));
    let prompt = model.tokenizer.encode("Once upon a time", true, true);
    for &(seed, top_k) in cases {
        let request = GenerateRequest {
            prompt_ids: prompt.clone(),
            max_tokens: tokens,
            sampler: SamplerConfig {
                temperature: 1.5,
                top_k,
                top_p: 0.97,
                min_p: 0.01,
                seed,
            },
            ignore_eos: true,
            logprobs: 0,
        };
        let own = generate(&mut runner, &model.tokenizer, &request, |_| true)
            .unwrap()
            .tokens;
        let read_back = generate(
            &mut LogitsOnly(&mut runner),
            &model.tokenizer,
            &request,
            |_| true,
        )
        .unwrap()
        .tokens;
        assert_eq!(own.len(), tokens);
        assert_eq!(
            own, read_back,
            "seed {seed}, top-{top_k}: the runner's top k and the logits draw differently"
        );
    }
}
