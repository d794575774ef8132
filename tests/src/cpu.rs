//! The CPU backend on a model, as the model-level tests build and compare it: loading,
//! compile options, logits errors, teacher-forced rows, and plans run by hand.

use kiln_backend_cpu::CpuBackend;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::kv::KvDtype;
use kiln_engine::model::{Model, model_graph};
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::{SamplerConfig, argmax};
use kiln_ir::backend::{Backend, Step};
use kiln_ir::{Graph, Plan, lower, passes, verify};

/// The reference model, loaded.
pub fn load() -> Model {
    Model::load(super::reference_model()).expect("the reference model loads")
}

pub fn cpu(model: &Model, options: CompileOptions) -> Compiled<'_> {
    Compiled::new(model, Box::new(CpuBackend::new()), options).expect("the CPU backend compiles")
}

pub fn options(n_ctx: usize, kv_dtype: KvDtype) -> CompileOptions {
    CompileOptions {
        kv_dtype,
        ..CompileOptions::new(n_ctx)
    }
}

/// What `kiln perplexity -c N` compiles: steps of up to min(N, 512) tokens, N/2 outputs.
pub fn perplexity_options(n_ctx: usize, kv_dtype: KvDtype) -> CompileOptions {
    CompileOptions {
        max_step_tokens: n_ctx.min(512),
        max_step_outputs: n_ctx / 2,
        ..options(n_ctx, kv_dtype)
    }
}

/// How far `ours` is from `theirs`: max|a-b| / max|b| and sum (a-b)² / sum b².
#[derive(Clone, Copy, Debug, Default)]
pub struct LogitsError {
    pub max_rel: f64,
    pub nmse: f64,
}

impl LogitsError {
    pub fn of(ours: &[f32], theirs: &[f32]) -> LogitsError {
        assert_eq!(ours.len(), theirs.len(), "logits of different shapes");
        assert!(ours.iter().all(|x| x.is_finite()), "non-finite logits");
        let (mut max_diff, mut max_ref, mut se, mut ss) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in ours.iter().zip(theirs) {
            let (a, b) = (f64::from(a), f64::from(b));
            max_diff = max_diff.max((a - b).abs());
            max_ref = max_ref.max(b.abs());
            se += (a - b) * (a - b);
            ss += b * b;
        }
        LogitsError {
            max_rel: max_diff / max_ref,
            nmse: se / ss,
        }
    }

    pub fn max(self, other: LogitsError) -> LogitsError {
        LogitsError {
            max_rel: self.max_rel.max(other.max_rel),
            nmse: self.nmse.max(other.nmse),
        }
    }

    /// The worst error of rows compared pairwise.
    pub fn worst(ours: &[Vec<f32>], theirs: &[Vec<f32>]) -> LogitsError {
        ours.iter()
            .zip(theirs)
            .map(|(a, b)| LogitsError::of(a, b))
            .fold(LogitsError::default(), LogitsError::max)
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The gap between the two largest logits of a row.
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

pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Logits rows of a prompt (its last token) and of one decode step per token of `feed`
/// (teacher forcing, so that two runners see the same tokens).
pub fn teacher_forced(runner: &mut dyn Runner, prompt: &[u32], feed: &[u32]) -> Vec<Vec<f32>> {
    runner.reset();
    let mut rows = vec![runner.forward(prompt, LogitsFor::Last).unwrap()];
    for &t in feed {
        rows.push(runner.forward(&[t], LogitsFor::Last).unwrap());
    }
    rows
}

/// A runner's rows for a prompt and `steps` greedy decode steps, and the tokens it fed.
pub fn greedy_rows(
    runner: &mut dyn Runner,
    prompt: &[u32],
    steps: usize,
) -> (Vec<Vec<f32>>, Vec<u32>) {
    runner.reset();
    let mut rows = vec![runner.forward(prompt, LogitsFor::Last).unwrap()];
    let mut feed = Vec::new();
    for _ in 0..steps {
        let t = argmax(rows.last().unwrap());
        feed.push(t);
        rows.push(runner.forward(&[t], LogitsFor::Last).unwrap());
    }
    (rows, feed)
}

/// Lower `graph` for the CPU backend with the step limits of `options`.
pub fn lower_for_cpu(graph: Graph, options: &CompileOptions) -> Plan {
    let backend = CpuBackend::new();
    let g = graph.clone();
    lower(
        graph,
        &|op| backend.supports(op, &g),
        options.max_step_tokens,
        options.max_step_outputs,
    )
    .unwrap()
}

/// Run `plan` on a fresh CPU backend over one sequence: the prompt in one step, then one
/// token per step; the logits of the last token of each step. Each KV group has its own
/// run of pages (full tables: the kernels read only what their windows reach).
pub fn run_plan(
    model: &Model,
    plan: &Plan,
    kv: KvDtype,
    n_ctx: usize,
    prompt: &[u32],
    feed: &[u32],
) -> Vec<Vec<f32>> {
    let c = &model.config;
    let layout = c.kv_layout(kv).unwrap();
    let per_group = n_ctx.div_ceil(layout.kv_page_size());
    let pages = per_group * layout.n_groups();
    let mut backend = CpuBackend::new();
    backend.load_plan(plan, model, &layout, pages).unwrap();
    let tables: Vec<Vec<u32>> = (0..layout.n_groups())
        .map(|g| ((g * per_group) as u32..((g + 1) * per_group) as u32).collect())
        .collect();
    let mut rows = Vec::new();
    let mut pos = 0;
    for tokens in std::iter::once(prompt).chain(feed.chunks(1)) {
        let n = tokens.len();
        let positions: Vec<u32> = (pos..pos + n).map(|p| p as u32).collect();
        let token_seq = vec![0u32; n];
        let used = (pos + n).div_ceil(layout.kv_page_size());
        let block_tables: Vec<&[u32]> = tables.iter().map(|t| &t[..used]).collect();
        let output_rows = [n as u32 - 1];
        backend
            .execute(&Step {
                token_ids: tokens,
                positions: &positions,
                token_seq: &token_seq,
                block_tables: &block_tables,
                output_rows: &output_rows,
            })
            .unwrap();
        let mut logits = vec![0.0f32; c.vocab_size];
        backend.read_logits(&mut logits).unwrap();
        rows.push(logits);
        pos += n;
    }
    rows
}

/// `n` greedy tokens after `prompt` (end of sequence ignored), as `kiln run --temp 0`
/// generates them.
pub fn greedy_tokens(runner: &mut dyn Runner, model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let request = GenerateRequest {
        prompt_ids: prompt.to_vec(),
        max_tokens: n,
        sampler: SamplerConfig::greedy(),
        ignore_eos: true,
        logprobs: 0,
    };
    runner.reset();
    generate(runner, &model.tokenizer, &request, |_| true)
        .unwrap()
        .tokens
}

/// One fusion pass on the unfused graph alone, and after the passes before it: nodes it
/// fused, launches per layer of the plan, and the logits' distance from the unfused plan's.
#[derive(Clone, Debug)]
pub struct PassCheck {
    pub name: &'static str,
    pub n_alone: usize,
    pub n_chained: usize,
    pub launches_alone: usize,
    pub launches_chained: usize,
    pub err_alone: LogitsError,
    pub err_chained: LogitsError,
}

/// Every pass of `passes::ALL` alone and chained, each plan run by hand ([`run_plan`]) over
/// `prompt` and `feed` against the unfused plan, which must give exactly `unfused_rows`
/// (the rows `Compiled` gave with fusion off).
pub fn check_each_pass(
    model: &Model,
    options: &CompileOptions,
    n_ctx: usize,
    prompt: &[u32],
    feed: &[u32],
    unfused_rows: &[Vec<f32>],
) -> Vec<PassCheck> {
    let backend = CpuBackend::new();
    let unfused = model_graph(model).unwrap();
    let supports = |op: &kiln_ir::Op| backend.supports(op, &unfused);
    let kv = options.kv_dtype;
    let run = |plan: &Plan| run_plan(model, plan, kv, n_ctx, prompt, feed);
    let base = run(&lower_for_cpu(unfused.clone(), options));
    assert_eq!(
        LogitsError::worst(&base, unfused_rows).max_rel,
        0.0,
        "the unfused plan run by hand differs from Compiled"
    );
    let mut chained = unfused.clone();
    passes::ALL
        .iter()
        .map(|&(name, pass)| {
            let mut alone = unfused.clone();
            let n_alone = pass(&mut alone, &supports);
            verify(&alone).unwrap();
            let plan_alone = lower_for_cpu(alone, options);
            let n_chained = pass(&mut chained, &supports);
            verify(&chained).unwrap();
            let plan_chained = lower_for_cpu(chained.clone(), options);
            PassCheck {
                name,
                n_alone,
                n_chained,
                launches_alone: plan_alone.launches_per_layer(),
                launches_chained: plan_chained.launches_per_layer(),
                err_alone: LogitsError::worst(&run(&plan_alone), &base),
                err_chained: LogitsError::worst(&run(&plan_chained), &base),
            }
        })
        .collect()
}
