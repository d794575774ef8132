//! `kiln serve` with speculative decoding, end to end on loopback: 32 concurrent streams,
//! half of them asking for prompt lookup, every greedy answer equal to its prompt run
//! alone; a server with a draft model; and the KV pool back to where it started once the
//! requests are done (`/metrics`: no page held, none leaked).

#[path = "serve/client.rs"]
#[allow(dead_code)] // shared with tests/serve.rs, which uses all of it
mod client;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_backend_cpu::CpuBackend;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::model::Model;
use kiln_engine::sampler::SamplerConfig;
use kiln_serve::{ServeConfig, Server};
use serde_json::{Value, json};

use client::{metric, post, post_stream};

const MODEL_ID: &str = "smollm2";
const MAX_TOKENS: usize = 24;

fn server(model: &Arc<Model>, edit: impl FnOnce(&mut ServeConfig)) -> Server {
    let mut config = ServeConfig {
        port: 0,
        n_ctx: Some(512),
        drain: Duration::from_secs(2),
        max_seqs: 32,
        ..ServeConfig::new(MODEL_ID, Arc::new(|| Ok(Box::new(CpuBackend::new()))))
    };
    edit(&mut config);
    Server::start(Arc::clone(model), &config).expect("the server starts")
}

/// What `kiln run --temp 0` generates for `prompt`.
fn alone(model: &Model, prompt: &str) -> String {
    let options = CompileOptions {
        max_step_tokens: 512,
        max_step_outputs: 1,
        ..CompileOptions::new(512)
    };
    let mut runner = Compiled::new(model, Box::new(CpuBackend::new()), options).unwrap();
    let req = GenerateRequest {
        prompt_ids: model.tokenizer.encode(prompt, true, true),
        max_tokens: MAX_TOKENS,
        sampler: SamplerConfig::greedy(),
        ignore_eos: false,
        logprobs: 0,
    };
    generate(&mut runner, &model.tokenizer, &req, |_| true)
        .unwrap()
        .text
}

/// Sixteen prompts: half of them continue by repeating what they hold.
fn prompts() -> Vec<String> {
    let mut prompts: Vec<String> = [
        "a, b, c, d, e, f, g, h, a, b, c, d, e, f, g, h, a, b,",
        "1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3,",
        "red green blue red green blue red green",
        "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return",
        "Monday, Tuesday, Wednesday, Monday, Tuesday,",
        "x = 1\ny = 2\nx = 1\ny = 2\nx = 1\n",
        "The cat sat on the mat. The cat sat on the mat. The cat",
        "<li>one</li>\n<li>two</li>\n<li>one</li>\n<li>",
    ]
    .map(String::from)
    .to_vec();
    for s in [
        "France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "India", "Egypt",
    ] {
        prompts.push(format!("The capital of {s} is"));
    }
    prompts
}

/// Sends every prompt twice at once, one of the two with `spec` added to its body (32
/// streams for 16 prompts); returns the failures.
fn send_all(
    addr: std::net::SocketAddr,
    prompts: &[String],
    expected: &[String],
    spec: &Value,
) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 * prompts.len() {
            s.spawn(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let k = i % prompts.len();
                let mut b = json!({"model": MODEL_ID, "prompt": prompts[k],
                    "max_tokens": MAX_TOKENS, "temperature": 0, "stream": i % 4 < 2});
                let speculative = i >= prompts.len();
                if speculative {
                    for (key, v) in spec.as_object().unwrap() {
                        b[key] = v.clone();
                    }
                }
                let (status, text) = if b["stream"] == true {
                    let (status, text, _, done) = post_stream(addr, "/v1/completions", &b);
                    assert!(done, "request {i}: no [DONE]");
                    (status, text)
                } else {
                    let (status, v) = post(addr, "/v1/completions", &b);
                    (status, v["choices"][0]["text"].as_str().unwrap_or_default().to_string())
                };
                if status != 200 || text != expected[k] {
                    failures.lock().unwrap().push(format!(
                        "request {i} (prompt {k}, speculative {speculative}): status {status}, {text:?}, want {:?}",
                        expected[k]
                    ));
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

/// The pool as it was before any request: nothing held, every page free or cached.
fn assert_pool_back(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(addr, "kiln_running_sequences") != 0.0
        || metric(addr, "kiln_kv_pages_in_use") != 0.0
    {
        assert!(Instant::now() < deadline, "sequences or pages still held");
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = metric(addr, "kiln_kv_pages_total");
    let free = metric(addr, "kiln_kv_pages_free");
    let cached = metric(addr, "kiln_kv_pages_cached");
    assert_eq!(
        free + cached,
        total,
        "every page free or cached: none leaked"
    );
}

#[test]
fn thirty_two_streams_half_speculative_answer_as_alone() {
    let model = Arc::new(kiln_tests::cpu::load());
    let prompts = prompts();
    let expected: Vec<String> = prompts.iter().map(|p| alone(&model, p)).collect();
    let srv = server(&model, |_| {});
    let addr = srv.local_addr();
    let total = metric(addr, "kiln_kv_pages_total");
    assert_eq!(metric(addr, "kiln_kv_pages_free"), total, "a fresh pool");
    let start = Instant::now();
    let failures = send_all(addr, &prompts, &expected, &json!({"lookup": 2}));
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let drafted = metric(addr, "kiln_spec_drafted_tokens_total");
    let accepted = metric(addr, "kiln_spec_accepted_tokens_total");
    let rate = metric(addr, "kiln_spec_acceptance_rate");
    eprintln!(
        "32 streams (16 with prompt lookup) in {:.1} s: {accepted} of {drafted} guesses kept ({:.1}%), all equal to the prompt run alone",
        start.elapsed().as_secs_f64(),
        100.0 * rate
    );
    assert!(accepted > 0.0 && drafted >= accepted);
    assert_pool_back(addr);
    srv.shutdown().unwrap();
}

#[test]
fn a_server_draft_model_guesses_and_answers_as_alone() {
    let model = Arc::new(kiln_tests::cpu::load());
    let prompts: Vec<String> = prompts().into_iter().step_by(2).collect();
    let expected: Vec<String> = prompts.iter().map(|p| alone(&model, p)).collect();
    // The model drafting for itself: every guess kept. Half the requests opt out.
    let srv = server(&model, |c| {
        c.max_seqs = 16;
        c.draft = Some(Arc::clone(&model));
        c.spec_k_max = 3;
    });
    let addr = srv.local_addr();
    let failures = send_all(addr, &prompts, &expected, &json!({"lookup": 0}));
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(metric(addr, "kiln_spec_draft_steps_total") > 0.0);
    assert_eq!(metric(addr, "kiln_spec_acceptance_rate"), 1.0);
    assert_pool_back(addr);
    srv.shutdown().unwrap();
}
