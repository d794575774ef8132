//! The scheduler on the reference model: batched greedy output equals each request run
//! alone (`kiln run`'s driver), with chunked prefill, admission by pages, preemption and
//! cancellation. Every test skips with a message when the model is absent (and fails when
//! KILN_REQUIRE_MODEL is set).

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::api::ApiError;
use super::metrics::Metrics;
use super::response::Usage;
use super::scheduler::{Scheduler, SchedulerConfig};
use super::{Event, FinishReason, Request};
use kiln_backend_cpu::CpuBackend;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, StopReason, generate};
use kiln_engine::model::Model;
use kiln_engine::sampler::SamplerConfig;
use kiln_kv::KvDtype;

mod speculative;

/// The reference model, loaded once (a failure saying how to fetch it when it is missing).
fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Model> = OnceLock::new();
    Some(MODEL.get_or_init(|| {
        Model::load(kiln_tests::reference_model()).expect("the reference model loads")
    }))
}

const N_CTX: usize = 256;

/// A scheduler of `max_seqs` sequences and `step_tokens`-token steps; `kv_pages` limits
/// the page pool.
fn scheduler(
    model: &'static Model,
    max_seqs: usize,
    step_tokens: usize,
    kv_pages: Option<usize>,
) -> Scheduler<'static> {
    spec_scheduler(model, max_seqs, step_tokens, kv_pages, 0)
}

/// [`scheduler`] with room for `spec_k_max` guesses per sequence and step.
fn spec_scheduler(
    model: &'static Model,
    max_seqs: usize,
    step_tokens: usize,
    kv_pages: Option<usize>,
    spec_k_max: usize,
) -> Scheduler<'static> {
    let c = &model.config;
    let layout = c.kv_layout(KvDtype::F8E4M3).unwrap();
    let options = CompileOptions {
        max_seqs,
        max_step_tokens: step_tokens,
        max_step_outputs: (max_seqs * (1 + spec_k_max)).min(step_tokens),
        kv_budget_bytes: kv_pages.map(|p| p * layout.page_bytes()),
        ..CompileOptions::new(N_CTX)
    };
    let compiled = Compiled::new(model, Box::new(CpuBackend::new()), options).unwrap();
    let config = SchedulerConfig {
        max_seqs,
        step_tokens,
        spec_k_max,
    };
    Scheduler::new(compiled, config, Arc::new(Metrics::default())).unwrap()
}

/// What one request received.
#[derive(Debug, Default, PartialEq)]
struct Received {
    text: String,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    error: Option<ApiError>,
}

fn request(prompt: &[u32], max_tokens: usize) -> (Request, UnboundedReceiver<Event>) {
    let (tx, rx) = unbounded_channel();
    let params = super::GenParams {
        prompt_ids: prompt.to_vec(),
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ignore_eos: false,
        stop: Vec::new(),
        stream: false,
        include_usage: false,
        lookup: None,
        constraint: None,
        tools: None,
        logprobs: None,
    };
    (Request::new(params, tx), rx)
}

fn received(rx: &mut UnboundedReceiver<Event>, into: &mut Received) {
    while let Ok(event) = rx.try_recv() {
        match event {
            Event::Text(t) => into.text.push_str(&t),
            Event::Done { finish, usage } => {
                into.finish = Some(finish);
                into.usage = Some(usage);
            }
            Event::Failed(e) => into.error = Some(e),
            Event::Logprob(_) => {}
        }
    }
}

/// Step until every request is done; returns the most sequences seen in one step.
fn run_to_end(sched: &mut Scheduler<'_>, rxs: &mut [UnboundedReceiver<Event>]) -> Vec<Received> {
    let mut out: Vec<Received> = rxs.iter().map(|_| Received::default()).collect();
    for _ in 0..10_000 {
        if sched.is_idle() {
            break;
        }
        sched.step().unwrap();
        for (rx, r) in rxs.iter_mut().zip(&mut out) {
            received(rx, r);
        }
    }
    assert!(sched.is_idle(), "the scheduler did not finish");
    out
}

/// The greedy continuation of `prompt` run alone, as `kiln run` runs it.
fn alone(model: &Model, prompt: &[u32], max_tokens: usize) -> (String, usize, FinishReason) {
    let options = CompileOptions {
        max_step_tokens: N_CTX,
        max_step_outputs: 1,
        ..CompileOptions::new(N_CTX)
    };
    let mut runner = Compiled::new(model, Box::new(CpuBackend::new()), options).unwrap();
    let req = GenerateRequest {
        prompt_ids: prompt.to_vec(),
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ignore_eos: false,
        logprobs: 0,
    };
    let g = generate(&mut runner, &model.tokenizer, &req, |_| true).unwrap();
    let finish = match g.stop_reason {
        StopReason::EndOfGeneration => FinishReason::Stop,
        _ => FinishReason::Length,
    };
    (g.text, g.tokens.len(), finish)
}

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    let tok = &model.tokenizer;
    let chat = |q: &str| {
        let m = [kiln_tokenizer::ChatMessage::new("user", q)];
        tok.encode(&tok.apply_chat_template(&m, true).unwrap(), true, true)
    };
    vec![
        tok.encode("The capital of France is", true, true),
        chat("What is the capital of France?"),
        tok.encode("def fibonacci(n):", true, true),
        // Longer than the step budget: prefilled in chunks next to the others' decode.
        tok.encode(
            &"Once upon a time, in a land far away, ".repeat(6),
            true,
            true,
        ),
        chat("Name three colours."),
        tok.encode("1, 2, 3, 4, 5,", true, true),
    ]
}

fn assert_same_as_alone(model: &Model, prompts: &[Vec<u32>], got: &[Received], max_tokens: usize) {
    for (i, (prompt, r)) in prompts.iter().zip(got).enumerate() {
        let (text, n, finish) = alone(model, prompt, max_tokens);
        assert_eq!(r.error, None, "request {i}");
        assert_eq!(r.text, text, "request {i}: batched text differs from alone");
        assert_eq!(r.finish, Some(finish), "request {i}");
        assert_eq!(r.usage.unwrap().completion_tokens, n, "request {i}");
        assert_eq!(r.usage.unwrap().prompt_tokens, prompt.len(), "request {i}");
    }
}

#[test]
fn batched_greedy_equals_each_request_alone() {
    let Some(model) = model() else { return };
    let prompts = prompts(model);
    assert!(prompts[3].len() > 32, "a prompt longer than a step");
    let mut sched = scheduler(model, 4, 32, None);
    let mut rxs = Vec::new();
    for p in &prompts {
        let (req, rx) = request(p, 12);
        sched.submit(req);
        rxs.push(rx);
    }
    let got = run_to_end(&mut sched, &mut rxs);
    assert_same_as_alone(model, &prompts, &got, 12);
    assert_every_page_back(&mut sched);
}

fn assert_every_page_back(sched: &mut Scheduler<'_>) {
    let kv = sched.kv_stats();
    assert_eq!(
        (kv.sequences, kv.pages_in_use),
        (0, 0),
        "every page given back"
    );
}

#[test]
fn admission_waits_for_pages_and_preemption_recomputes() {
    let Some(model) = model() else { return };
    let prompts = prompts(model);
    // 10 pages of 16 tokens: room for two or three of these at a time, not six, and too
    // few for all admitted ones to grow, so some are preempted and recomputed.
    let mut sched = scheduler(model, 4, 64, Some(10));
    assert_eq!(sched.kv_stats().kv_page_count, 10);
    let mut rxs = Vec::new();
    for p in &prompts {
        let (req, rx) = request(p, 40);
        sched.submit(req);
        rxs.push(rx);
    }
    let mut blocked = false; // a free place in the batch, but no pages for the next request
    let mut out: Vec<Received> = rxs.iter().map(|_| Received::default()).collect();
    let mut preempted = 0;
    for _ in 0..10_000 {
        if sched.is_idle() {
            break;
        }
        let o = sched.step().unwrap();
        preempted += o.preempted;
        blocked |= sched.n_running() < 4 && sched.n_waiting() > 0;
        let kv = sched.kv_stats();
        assert!(kv.pages_in_use <= kv.kv_page_count);
        for (rx, r) in rxs.iter_mut().zip(&mut out) {
            received(rx, r);
        }
    }
    assert!(sched.is_idle());
    assert!(blocked, "admission is limited by pages");
    assert!(preempted > 0, "a full pool preempts");
    assert_same_as_alone(model, &prompts, &out, 40);
}

#[test]
fn a_client_that_leaves_is_dropped_and_its_pages_freed() {
    let Some(model) = model() else { return };
    let prompts = prompts(model);
    let mut sched = scheduler(model, 4, 64, None);
    let (a, mut rx_a) = request(&prompts[0], 50);
    let (b, rx_b) = request(&prompts[1], 50);
    sched.submit(a);
    sched.submit(b);
    for _ in 0..3 {
        sched.step().unwrap();
    }
    assert_eq!(sched.n_running(), 2);
    let held = sched.kv_stats().pages_in_use;
    drop(rx_b);
    sched.step().unwrap();
    assert_eq!(sched.n_running(), 1);
    assert!(sched.kv_stats().pages_in_use < held);
    // The other one goes on undisturbed.
    let got = run_to_end(&mut sched, std::slice::from_mut(&mut rx_a));
    let (text, _, _) = alone(model, &prompts[0], 50);
    assert_eq!(got[0].text, text);
    assert_eq!(sched.kv_stats().pages_in_use, 0);
}

/// A free that fails (here: pages freed behind the scheduler's back) fails that step and
/// that request, and drops nothing else: the other sequence runs on to its answer. It
/// once dropped every running sequence, each stream ending without a word.
#[test]
fn a_failing_free_drops_no_other_sequence() {
    let Some(model) = model() else { return };
    let prompts = prompts(model);
    let mut sched = scheduler(model, 4, 64, None);
    let (a, mut rx_a) = request(&prompts[0], 50);
    let (b, rx_b) = request(&prompts[1], 50);
    sched.submit(a);
    sched.submit(b);
    for _ in 0..3 {
        sched.step().unwrap();
    }
    assert_eq!(sched.n_running(), 2);
    sched.free_newest_behind_its_back().unwrap();
    drop(rx_b); // b's client leaves: the next step retires it, and its free fails
    let e = sched.step().expect_err("the failed free is reported");
    assert!(e.to_string().contains("sequence"), "{e}");
    assert_eq!(sched.n_running(), 1, "a is still running");
    let got = run_to_end(&mut sched, std::slice::from_mut(&mut rx_a));
    let (text, _, finish) = alone(model, &prompts[0], 50);
    assert_eq!(
        (got[0].text.as_str(), got[0].finish),
        (text.as_str(), Some(finish))
    );
    assert_eq!(sched.kv_stats().pages_in_use, 0);
}

#[test]
fn a_prompt_that_never_fits_fails_at_once() {
    let Some(model) = model() else { return };
    let mut sched = scheduler(model, 2, 32, Some(4));
    let limit = sched.max_sequence_tokens();
    assert!(limit < N_CTX);
    let (req, mut rx) = request(&vec![1u32; limit + 1], 4);
    sched.submit(req);
    assert!(sched.is_idle());
    let mut r = Received::default();
    received(&mut rx, &mut r);
    let e = r.error.expect("an error");
    assert_eq!((e.status, e.code), (400, Some("context_length_exceeded")));
}

#[test]
fn stop_sequences_cut_the_text_before_them() {
    let Some(model) = model() else { return };
    let prompt = model
        .tokenizer
        .encode("The capital of France is", true, true);
    let (full, _, _) = alone(model, &prompt, 16);
    let cut = full
        .char_indices()
        .nth(full.len().min(8))
        .map_or(full.len(), |(i, _)| i);
    let stop = full[cut..].chars().take(3).collect::<String>();
    assert!(!stop.is_empty(), "{full:?}");
    let mut sched = scheduler(model, 2, 32, None);
    let (mut req, rx) = request(&prompt, 16);
    req.stop = vec![stop.clone()];
    sched.submit(req);
    let got = run_to_end(&mut sched, &mut [rx]);
    let expected = &full[..full.find(&stop).unwrap()];
    assert_eq!(got[0].text, expected);
    assert_eq!(got[0].finish, Some(FinishReason::Stop));
}

/// Steps until `rx` has brought text or an end; the events go into `into`.
fn has_output(rx: &mut UnboundedReceiver<Event>, into: &mut Received) -> bool {
    received(rx, into);
    !into.text.is_empty() || into.finish.is_some() || into.error.is_some()
}

#[test]
fn a_long_prefill_neither_stalls_decoding_nor_holds_a_short_request_back() {
    let Some(model) = model() else { return };
    let tok = &model.tokenizer;
    let decoding = tok.encode("The capital of France is", true, true);
    let long = tok.encode(
        &"Once upon a time, in a land far away, ".repeat(21),
        true,
        true,
    );
    let short = tok.encode("1, 2, 3, 4, 5,", true, true);
    assert!((200..N_CTX - 4).contains(&long.len()), "{}", long.len());
    let mut sched = scheduler(model, 4, 32, None);
    let (req, rx_a) = request(&decoding, 60);
    sched.submit(req);
    let mut rxs = vec![rx_a];
    let mut got: Vec<Received> = vec![Received::default()];
    while !has_output(&mut rxs[0], &mut got[0]) {
        sched.step().unwrap();
    }
    // The long prompt takes the step's budget (32 tokens, one of them the decoding
    // request's), so its prefill spans about 8 steps.
    let (req, rx_l) = request(&long, 4);
    sched.submit(req);
    sched.step().unwrap();
    let (req, rx_s) = request(&short, 4);
    sched.submit(req);
    rxs.extend([rx_l, rx_s]);
    got.extend([Received::default(), Received::default()]);
    let mut short_first = None;
    for step in 1.. {
        let o = sched.step().unwrap();
        if has_output(&mut rxs[1], &mut got[1]) {
            break; // the long prompt's first token: its prefill is done
        }
        assert!(
            o.sampled >= 1,
            "step {step}: the decoding request got no token"
        );
        if short_first.is_none() && has_output(&mut rxs[2], &mut got[2]) {
            short_first = Some(step);
        }
        assert!(step < 20, "the long prompt's prefill never ended");
    }
    assert_eq!(
        short_first,
        Some(1),
        "the short request's first token came in the step after it arrived, during the long prefill"
    );
    let rest = run_to_end(&mut sched, &mut rxs);
    for (g, r) in got.iter_mut().zip(rest) {
        g.text.push_str(&r.text);
        g.finish = g.finish.or(r.finish);
        g.usage = g.usage.or(r.usage);
        g.error = g.error.take().or(r.error);
    }
    let max_tokens = [60, 4, 4];
    for ((prompt, g), n) in [decoding, long, short].iter().zip(&got).zip(max_tokens) {
        assert_same_as_alone(
            model,
            std::slice::from_ref(prompt),
            std::slice::from_ref(g),
            n,
        );
    }
    assert_every_page_back(&mut sched);
}

#[test]
fn a_memory_budget_sizes_the_kv_pool_for_every_sequences_context() {
    let Some(model) = model() else { return };
    let config = super::ServeConfig {
        max_seqs: 32,
        n_ctx: Some(8192),
        ..super::ServeConfig::new("m", Arc::new(|| Ok(Box::new(CpuBackend::new()))))
    };
    let options = |config: &super::ServeConfig| super::engine::compile_options(config, model);
    // No budget: room for 32 × 8k (3.2 GB for this model) capped at the default.
    assert_eq!(
        options(&config).kv_budget_bytes,
        Some(super::engine::DEFAULT_KV_BUDGET_BYTES)
    );
    // A memory budget: the pool asks for every sequence's whole context and takes what
    // the budget leaves (it was capped at the default all the same).
    let budgeted = super::ServeConfig {
        mem_budget_bytes: Some(8 << 30),
        ..config.clone()
    };
    let o = options(&budgeted);
    assert_eq!(o.kv_budget_bytes, None);
    let c = &model.config;
    let layout = c.kv_layout(o.kv_dtype).unwrap();
    let request = kiln_engine::compiled::kv_request(&c.kv_groups(), &layout, &o).unwrap();
    assert_eq!(request.wanted_pages, 32 * 8192 / 16);
    // An explicit KV budget wins.
    let kv = super::ServeConfig {
        kv_budget_bytes: Some(123 << 20),
        ..budgeted
    };
    assert_eq!(options(&kv).kv_budget_bytes, Some(123 << 20));
}
