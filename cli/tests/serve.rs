//! `kiln serve` end to end on loopback: the official `openai` Python client, a bounded load
//! test whose every answer must equal the same request run alone (as `kiln run` runs it),
//! OpenAI-style 4xx errors, the request limit (429), cancellation when a client leaves, and
//! graceful shutdown. A missing model, python3 or `openai` package fails the test with
//! what to install.

#[path = "serve/client.rs"]
mod client;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_backend_cpu::CpuBackend;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, StopReason, generate};
use kiln_engine::model::Model;
use kiln_engine::sampler::SamplerConfig;
use kiln_engine::tokenizer::ChatMessage;
use kiln_serve::{ServeConfig, Server};
use serde_json::{Value, json};

use client::{metric, post, post_stream, send};

const MODEL_ID: &str = "smollm2";

fn model_path() -> PathBuf {
    kiln_tests::reference_model()
}

fn model() -> Option<Arc<Model>> {
    Some(Arc::new(kiln_tests::cpu::load()))
}

fn server(model: &Arc<Model>, edit: impl FnOnce(&mut ServeConfig)) -> Server {
    let mut config = ServeConfig {
        port: 0,
        n_ctx: Some(512),
        drain: Duration::from_secs(2),
        ..ServeConfig::new(MODEL_ID, Arc::new(|| Ok(Box::new(CpuBackend::new()))))
    };
    edit(&mut config);
    Server::start(Arc::clone(model), &config).expect("the server starts")
}

/// What `kiln run --temp 0 -n max_tokens` generates for `prompt` (chat-wrapped or not):
/// the text and the finish reason as the API names it.
fn alone(model: &Model, prompt: &str, chat: bool, max_tokens: usize) -> (String, &'static str) {
    let tok = &model.tokenizer;
    let text = if chat {
        tok.apply_chat_template(&[ChatMessage::new("user", prompt)], true)
            .unwrap()
    } else {
        prompt.to_string()
    };
    let n_ctx = model.config.context_length;
    let options = CompileOptions {
        max_step_tokens: n_ctx.min(512),
        max_step_outputs: 1,
        ..CompileOptions::new(n_ctx)
    };
    let mut runner = Compiled::new(model, Box::new(CpuBackend::new()), options).unwrap();
    let req = GenerateRequest {
        prompt_ids: tok.encode(&text, true, true),
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ignore_eos: false,
        logprobs: 0,
    };
    let g = generate(&mut runner, tok, &req, |_| true).unwrap();
    let finish = match g.stop_reason {
        StopReason::EndOfGeneration => "stop",
        _ => "length",
    };
    (g.text, finish)
}

fn body(prompt: &str, chat: bool, max_tokens: usize, stream: bool) -> (&'static str, Value) {
    if chat {
        let b = json!({"model": MODEL_ID, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream});
        ("/v1/chat/completions", b)
    } else {
        let b = json!({"model": MODEL_ID, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0, "stream": stream});
        ("/v1/completions", b)
    }
}

#[test]
fn the_official_openai_python_client_works() {
    let Some(model) = model() else { return };
    let has_openai = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_openai,
        "this test drives the official client: python3 -m pip install openai==3.51.0 (README)"
    );
    let (completion, _) = alone(&model, "The capital of France is", false, 16);
    let (chat, _) = alone(&model, "What is the capital of France?", true, 24);
    let srv = server(&model, |_| {});
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base-url", &format!("http://{}/v1", srv.local_addr())])
        .args(["--model", MODEL_ID])
        .args(["--expect-completion", &completion, "--expect-chat", &chat])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "the openai client script failed");
    srv.shutdown().unwrap();
}

/// 64 clients send 256 greedy requests (16 prompts, completions and chat, streaming and
/// not); each answer must be exactly its own prompt's continuation run alone.
#[test]
fn load_test_every_answer_equals_its_prompt_run_alone() {
    let Some(model) = model() else { return };
    const CLIENTS: usize = 64;
    const REQUESTS: usize = 256;
    const MAX_TOKENS: usize = 6;
    let subjects = [
        "France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "India", "Egypt",
    ];
    let prompts: Vec<(String, bool)> = subjects
        .iter()
        .flat_map(|s| {
            [
                // A shared first page: repeats hit the prefix cache.
                (format!("Here is a list of countries, each with its capital city, one per line.\nThe capital of {s} is"), false),
                (format!("Tell me one fact about {s}."), true),
            ]
        })
        .collect();
    let expected: Vec<(String, &str)> = prompts
        .iter()
        .map(|(p, chat)| alone(&model, p, *chat, MAX_TOKENS))
        .collect();

    let srv = server(&model, |c| c.max_seqs = 32);
    let addr = srv.local_addr();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= REQUESTS {
                        break;
                    }
                    let k = i % prompts.len();
                    let (prompt, chat) = &prompts[k];
                    let stream = (i / prompts.len()) % 2 == 1;
                    let (path, b) = body(prompt, *chat, MAX_TOKENS, stream);
                    let (status, text, finish) = if stream {
                        let (status, text, finish, done) = post_stream(addr, path, &b);
                        assert!(done, "request {i}: the stream did not end with [DONE]");
                        (status, text, finish)
                    } else {
                        let (status, v) = post(addr, path, &b);
                        let c = &v["choices"][0];
                        let text = c["text"].as_str().or(c["message"]["content"].as_str());
                        let finish = c["finish_reason"].as_str().map(str::to_string);
                        (status, text.unwrap_or_default().to_string(), finish)
                    };
                    let (want, want_finish) = &expected[k];
                    if status != 200 || text != *want || finish.as_deref() != Some(*want_finish) {
                        failures.lock().unwrap().push(format!(
                            "request {i} (prompt {k}, stream {stream}): status {status}, {text:?} ({finish:?}), want {want:?} ({want_finish})"
                        ));
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let generated = metric(addr, "kiln_generation_tokens_total");
    let prompt = metric(addr, "kiln_prompt_tokens_total");
    let cached = metric(addr, "kiln_prompt_tokens_cached_total");
    let steps = metric(addr, "kiln_steps_total");
    eprintln!(
        "load test: {REQUESTS} requests from {CLIENTS} clients in {:.1} s ({steps} steps; {prompt} prompt tokens, {cached} from the prefix cache; {generated} generated), all equal to the prompt run alone",
        elapsed.as_secs_f64()
    );
    // The gauges are refreshed after the step that sent the last answers.
    wait_for_metric(addr, "kiln_running_sequences", 0.0);
    wait_for_metric(addr, "kiln_kv_pages_in_use", 0.0);
    srv.shutdown().unwrap();
}

fn wait_for_metric(addr: std::net::SocketAddr, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(addr, name) != value {
        assert!(
            Instant::now() < deadline,
            "{name} stays at {}, not {value}",
            metric(addr, name)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kiln run` itself (the binary) gives what the server gives.
#[test]
fn the_server_answers_what_kiln_run_prints() {
    let Some(model) = model() else { return };
    let srv = server(&model, |_| {});
    for (prompt, chat) in [("The capital of France is", false), ("Name a fruit.", true)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["run", "-m"]).arg(model_path());
        cmd.args(["-p", prompt, "-n", "20", "--temp", "0", "--json"]);
        if chat {
            cmd.arg("--chat");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let run: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let (path, b) = body(prompt, chat, 20, false);
        let (status, v) = post(srv.local_addr(), path, &b);
        assert_eq!(status, 200, "{v}");
        let c = &v["choices"][0];
        let text = c["text"]
            .as_str()
            .or(c["message"]["content"].as_str())
            .unwrap();
        assert_eq!(text, run["text"].as_str().unwrap(), "{prompt}");
        assert_eq!(v["usage"]["completion_tokens"], run["n_tokens"], "{prompt}");
        assert_eq!(
            v["usage"]["prompt_tokens"], run["prompt_tokens"],
            "{prompt}"
        );
    }
    srv.shutdown().unwrap();
}

fn assert_error(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    status: u16,
    param: Option<&str>,
) {
    let r = send(addr, "POST", path, Some(body));
    let got = r.status;
    let v = r.json();
    assert_eq!(got, status, "{body} -> {v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    if let Some(param) = param {
        assert_eq!(e["param"], param, "{body} -> {v}");
    }
}

#[test]
fn bad_requests_get_openai_error_objects() {
    let Some(model) = model() else { return };
    let srv = server(&model, |c| c.n_ctx = Some(64));
    let addr = srv.local_addr();
    let (c, chat) = ("/v1/completions", "/v1/chat/completions");
    assert_error(addr, c, "{not json", 400, None);
    assert_error(addr, c, "", 400, None);
    assert_error(addr, c, r#"{"prompt": 5}"#, 400, Some("prompt"));
    assert_error(
        addr,
        c,
        r#"{"model": "gpt-4", "prompt": "hi"}"#,
        404,
        Some("model"),
    );
    let long = "word ".repeat(200);
    let r = send(addr, "POST", c, Some(&json!({"prompt": long}).to_string()));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_error(
        addr,
        c,
        r#"{"prompt": "hi", "temperature": -1}"#,
        400,
        Some("temperature"),
    );
    assert_error(
        addr,
        c,
        r#"{"prompt": "hi", "top_p": 1.5}"#,
        400,
        Some("top_p"),
    );
    assert_error(
        addr,
        c,
        r#"{"prompt": "hi", "max_tokens": 0}"#,
        400,
        Some("max_tokens"),
    );
    assert_error(addr, c, r#"{"prompt": "hi", "n": 3}"#, 400, Some("n"));
    assert_error(
        addr,
        c,
        r#"{"prompt": "hi", "stop": ["a","b","c","d","e"]}"#,
        400,
        Some("stop"),
    );
    assert_error(
        addr,
        c,
        r#"{"prompt": "hi", "max_tokens": "many"}"#,
        400,
        None,
    );
    assert_error(addr, chat, r#"{"model": "smollm2"}"#, 400, Some("messages"));
    assert_error(
        addr,
        chat,
        r#"{"messages": [{"content": "no role"}]}"#,
        400,
        Some("messages[0].role"),
    );
    assert_error(addr, "/v1/nothing", "{}", 404, None);
    assert_eq!(send(addr, "GET", "/health", None).status, 200);
    let models = send(addr, "GET", "/v1/models", None).json();
    assert_eq!(models["data"][0]["id"], MODEL_ID);
    let text = send(addr, "GET", "/metrics", None).text();
    for name in [
        "kiln_requests_total{endpoint=\"/v1/completions\",code=\"400\"}",
        "kiln_time_to_first_token_seconds_bucket",
        "kiln_inter_token_latency_seconds_bucket",
        "kiln_kv_pages_in_use",
        "kiln_prefix_cache_hit_rate",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    srv.shutdown().unwrap();
}

/// With one place in the batch and one in the queue, a third request gets 429; clients
/// that leave (running or queued) are dropped, and their places come back.
#[test]
fn the_queue_limit_is_429_and_clients_that_leave_are_cancelled() {
    let Some(model) = model() else { return };
    let srv = server(&model, |c| {
        c.max_seqs = 1;
        c.max_queue = 1;
    });
    let addr = srv.local_addr();
    let long = json!({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true,
        "temperature": 0, "stream": true})
    .to_string();
    let mut running = send(addr, "POST", "/v1/completions", Some(&long));
    assert_eq!(running.status, 200);
    assert!(running.next_data().is_some(), "the first request streams");
    let queued = send(addr, "POST", "/v1/completions", Some(&long));
    assert_eq!(queued.status, 200);
    assert_error(addr, "/v1/completions", &long, 429, None);
    running.abandon();
    queued.abandon();
    wait_for_metric(addr, "kiln_cancellations_total", 2.0);
    wait_for_metric(addr, "kiln_running_sequences", 0.0);
    let (path, b) = body("Hello", false, 2, false);
    assert_eq!(post(addr, path, &b).0, 200, "places came back");
    srv.shutdown().unwrap();
}

/// Shutting down ends an open stream cleanly (a finish reason, then `[DONE]`).
#[test]
fn graceful_shutdown_ends_open_streams() {
    let Some(model) = model() else { return };
    let srv = server(&model, |c| c.drain = Duration::from_millis(500));
    let addr = srv.local_addr();
    let long = json!({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true,
        "temperature": 0, "stream": true})
    .to_string();
    let mut r = send(addr, "POST", "/v1/completions", Some(&long));
    assert!(r.next_data().is_some());
    let stopping = std::thread::spawn(move || {
        let t = Instant::now();
        srv.shutdown().unwrap();
        t.elapsed()
    });
    let mut finish = None;
    let mut done = false;
    while let Some(data) = r.next_data() {
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(finish.as_deref(), Some("length"));
    assert!(done, "the stream ends with [DONE]");
    let took = stopping.join().unwrap();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}
