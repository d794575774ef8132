//! Long prompts end to end on the CPU backend: a prompt of more than 8,192 tokens through
//! `kiln run` (the binary, as scripts use it) in steps of 512 and of 97 tokens, the same
//! logits bit for bit; and through `kiln serve` over HTTP, prefilled in chunks while
//! another request decodes, with a short request that arrives meanwhile answered before
//! the long prompt's first token, on a server whose KV pool a memory budget sizes for 32
//! sequences of the whole context. The model is a random-weight 1-layer Llama of context
//! 9,216 synthesized with the reference model's tokenizer (a missing reference model fails
//! with how to fetch it); a 6-layer Gemma 3 of windows of 128 positions runs the same
//! prompt in both step sizes too.

#[path = "serve/client.rs"]
#[allow(dead_code)] // shared with tests/serve.rs, which uses all of it
mod client;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use kiln_backend_cpu::CpuBackend;
use kiln_engine::model::Model;
use kiln_ir::DType;
use kiln_serve::{ServeConfig, Server};
use kiln_tools::synth::{self, Shape, SynthConfig};
use serde_json::{Value, json};

use client::{metric, send};

const N_CTX: usize = 9216;
const N_PREDICT: usize = 8;

/// The synthesized model and a prompt of 8,192+ tokens for it, made once per run.
fn fixture() -> &'static (PathBuf, PathBuf, String) {
    static FIXTURE: OnceLock<(PathBuf, PathBuf, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-long-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("tiny-9k.gguf");
        let config = SynthConfig {
            // One layer of two heads: attention over 8k tokens is most of the time.
            shape: Shape::custom(1, 32, 2, 1, 64, 49152, N_CTX).unwrap(),
            quant: DType::Q8_0,
            seed: 7,
            tokenizer_from: kiln_tests::reference_model(),
        };
        synth::synthesize(&config, &model, |_| {}).unwrap();
        // Gemma 3's layout: five window layers of 128 positions and a global one, two KV
        // groups whose window pages are given back as the prompt runs.
        let config = SynthConfig {
            shape: Shape::custom(6, 32, 2, 1, 64, 49152, N_CTX)
                .unwrap()
                .gemma3(128)
                .unwrap(),
            ..config
        };
        synth::synthesize(&config, &dir.join("tiny-gemma3-9k.gguf"), |_| {}).unwrap();
        let tok = Model::load(&model).unwrap().tokenizer;
        let text = long_text(|t| tok.encode(t, true, true).len());
        let prompt = dir.join("prompt.txt");
        std::fs::write(&prompt, &text).unwrap();
        (model, prompt, text)
    })
}

/// Words in a seeded order until the text is 8,300+ tokens (`n_tokens` counts them).
fn long_text(n_tokens: impl Fn(&str) -> usize) -> String {
    const WORDS: &[&str] = &[
        "the", "river", "stone", "quietly", "bright", "over", "market", "seven", "garden", "under",
        "yellow", "window", "carried", "north", "winter", "paper", "and", "slow", "engine", "of",
        "island", "forty", "letters", "between", "clouds", "we", "found",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut text = String::from("Once");
    while n_tokens(&text) < 8300 {
        for _ in 0..400 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push(' ');
            text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        }
    }
    text
}

fn kiln_run(model: &Path, prompt: &Path, step_tokens: usize) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            "-m",
            model.to_str().unwrap(),
            "-f",
            prompt.to_str().unwrap(),
        ])
        .args(["-n", &N_PREDICT.to_string(), "-c", &N_CTX.to_string()])
        .args(["--step-tokens", &step_tokens.to_string()])
        .args(["--backend", "cpu", "--temp", "0", "--logprobs", "4"])
        .args(["--ignore-eos", "--no-echo", "--json"])
        .output()
        .expect("the kiln binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln run failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// `kiln run` of the long prompt in steps of 512 tokens, run once for both tests.
fn run_512() -> &'static Value {
    static RUN: OnceLock<Value> = OnceLock::new();
    RUN.get_or_init(|| {
        let (model, prompt, _) = fixture();
        kiln_run(model, prompt, 512)
    })
}

#[test]
fn kiln_run_prefills_8k_tokens_in_chunks_with_the_same_logits_whatever_their_size() {
    let (model, prompt, _) = fixture();
    let big = run_512();
    let small = kiln_run(model, prompt, 97);
    let n_prompt = big["prompt_tokens"].as_u64().unwrap() as usize;
    assert!((8192..N_CTX - N_PREDICT).contains(&n_prompt), "{n_prompt}");
    assert_eq!(small["prompt_tokens"], big["prompt_tokens"]);
    // A step never carries more than the plan's tokens (Compiled refuses it), so the
    // prompt ran in ⌈n / 512⌉ = 17 and ⌈n / 97⌉ = 86+ steps.
    assert_eq!(big["memory"]["max_step_tokens"], 512);
    assert_eq!(small["memory"]["max_step_tokens"], 97);
    assert_eq!(big["n_tokens"], N_PREDICT);
    // Every token's top-4 log-probabilities equal to the bit (their decimal forms are
    // the shortest that round-trip): attention blocks at fixed multiples of 16 positions
    // and per-token matmul tiles make a token's logits independent of its step.
    assert_eq!(small["tokens"], big["tokens"]);
    assert_eq!(small["logprobs"], big["logprobs"]);
    let distinct: std::collections::BTreeSet<String> = big["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(distinct.len() > 1, "a degenerate model: {}", big["tokens"]);
}

#[test]
fn windowed_layers_give_the_same_logits_whatever_the_step_size() {
    let (model, prompt, _) = fixture();
    let gemma = model.with_file_name("tiny-gemma3-9k.gguf");
    let big = kiln_run(&gemma, prompt, 512);
    let small = kiln_run(&gemma, prompt, 97);
    assert!(big["prompt_tokens"].as_u64().unwrap() >= 8192);
    assert_eq!(small["memory"]["max_step_tokens"], 97);
    assert_eq!(small["tokens"], big["tokens"]);
    assert_eq!(small["logprobs"], big["logprobs"]);
}

/// The text chunks of a streamed completion with the time each came.
type Chunks = Arc<Mutex<Vec<(Instant, String)>>>;

/// Stream `prompt`'s greedy completion into `chunks` until it ends or `stop` is set; the
/// first chunk is signalled on `first`.
fn stream(
    addr: std::net::SocketAddr,
    prompt: &str,
    max_tokens: usize,
    chunks: Chunks,
    first: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let body = json!({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": true, "stream": true});
    std::thread::spawn(move || {
        let mut resp = send(addr, "POST", "/v1/completions", Some(&body.to_string()));
        assert_eq!(resp.status, 200);
        while let Some(data) = resp.next_data() {
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(&data).unwrap();
            let text = v["choices"][0]["text"].as_str().unwrap_or("").to_string();
            if !text.is_empty() {
                let mut c = chunks.lock().unwrap();
                if c.is_empty() {
                    let _ = first.send(());
                }
                c.push((Instant::now(), text));
            }
            if stop.load(Ordering::Relaxed) {
                resp.abandon();
                return;
            }
        }
    })
}

#[test]
fn kiln_serve_prefills_8k_tokens_next_to_decoding_and_short_requests() {
    let (model_path, _, long) = fixture();
    let expected = run_512();
    let model = Arc::new(Model::load(model_path).unwrap());
    let tok = &model.tokenizer;
    let long_tokens = tok.encode(long, true, true).len();
    // 32 sequences of the whole context, sized from a memory budget alone (the pool is
    // 40 bytes a token here: 11.8 MB, within 256 MiB with the arena and logits).
    let config = ServeConfig {
        port: 0,
        n_ctx: Some(N_CTX),
        max_seqs: 32,
        step_tokens: 256,
        mem_budget_bytes: Some(256 << 20),
        drain: Duration::from_secs(2),
        ..ServeConfig::new("tiny", Arc::new(|| Ok(Box::new(CpuBackend::new()))))
    };
    let srv = Server::start(Arc::clone(&model), &config).expect("the server starts");
    let info = srv.engine().info();
    assert_eq!(info.kv_page_count, 32 * N_CTX / 16);
    assert_eq!(info.limits.kv_capacity, N_CTX);
    let addr = srv.local_addr();
    let stop = Arc::new(AtomicBool::new(false));

    // A request decoding before the long prompt arrives, and all through its prefill.
    let decoding: Chunks = Arc::default();
    let (first_tx, first_rx) = mpsc::channel();
    let d = stream(
        addr,
        "Once upon a time",
        4000,
        decoding.clone(),
        first_tx,
        stop.clone(),
    );
    first_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let admitted_before = metric(addr, "kiln_prompt_tokens_total");

    let long_chunks: Chunks = Arc::default();
    let (long_tx, long_rx) = mpsc::channel();
    let l = stream(
        addr,
        long,
        N_PREDICT,
        long_chunks.clone(),
        long_tx,
        Arc::default(),
    );
    // Once the long prompt is admitted (its tokens counted), a short request arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(addr, "kiln_prompt_tokens_total") < admitted_before + long_tokens as f64 {
        assert!(
            Instant::now() < deadline,
            "the long prompt was never admitted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let admitted_at = Instant::now();
    let short_chunks: Chunks = Arc::default();
    let (short_tx, _short_rx) = mpsc::channel();
    let s = stream(
        addr,
        "1, 2, 3,",
        2,
        short_chunks.clone(),
        short_tx,
        Arc::default(),
    );
    long_rx.recv_timeout(Duration::from_secs(300)).unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in [l, s, d] {
        t.join().unwrap();
    }

    let long_first = long_chunks.lock().unwrap()[0].0;
    let short_first = short_chunks.lock().unwrap().first().map(|c| c.0);
    assert!(
        short_first.is_some_and(|t| t < long_first),
        "the short request waited for the long prompt's prefill"
    );
    let during = decoding
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| (admitted_at..long_first).contains(t))
        .count();
    // The prefill takes 33+ steps of 256 tokens; the decoding request has a token in each.
    assert!(
        during >= 10,
        "{during} tokens decoded during the long prefill"
    );
    // The long answer is `kiln run`'s, prefilled in other chunks next to other requests.
    let text: String = long_chunks
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1.as_str())
        .collect();
    assert_eq!(text, expected["text"].as_str().unwrap());
    assert!(metric(addr, "kiln_steps_total") > (long_tokens / 256) as f64);
    srv.shutdown().unwrap();
}
