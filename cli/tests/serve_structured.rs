//! `kiln serve`'s structured outputs and tool calls through the official `openai` Python
//! client (tests/python/openai_structured.py): 20 Pydantic schemas parsed and validated,
//! tool calls with two tools, streaming variants, and 400s for malformed schemas and tool
//! definitions while the server keeps serving. A missing python3, `openai` or `jsonschema`
//! package fails the test with what to install.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kiln_backend_cpu::CpuBackend;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::model::Model;
use kiln_engine::sampler::SamplerConfig;
use kiln_serve::{ServeConfig, Server};

const MODEL_ID: &str = "smollm2";

#[test]
fn structured_outputs_and_tool_calls_through_the_openai_client() {
    let has_packages = Command::new("python3")
        .args(["-c", "import openai, jsonschema, pydantic"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_packages,
        "this test drives the official client: python3 -m pip install openai==3.51.0 jsonschema (.ci/run)"
    );
    let model = Arc::new(kiln_tests::cpu::load());
    let expect = run_logprobs(&model, "The capital of France is", 6, 3);
    let config = ServeConfig {
        port: 0,
        n_ctx: Some(1024),
        drain: Duration::from_secs(2),
        ..ServeConfig::new(MODEL_ID, Arc::new(|| Ok(Box::new(CpuBackend::new()))))
    };
    let srv = Server::start(model, &config).expect("the server starts");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/openai_structured.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base-url", &format!("http://{}/v1", srv.local_addr())])
        .args(["--model", MODEL_ID])
        .args(["--expect-logprobs", &expect])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "the structured-output script failed");
    srv.shutdown().unwrap();
}

/// What `kiln run --temp 0 -n max_tokens --logprobs k` records for `prompt`, as JSON:
/// per token, its distribution's k most likely `[id, logprob]`.
fn run_logprobs(model: &Model, prompt: &str, max_tokens: usize, k: usize) -> String {
    let tok = &model.tokenizer;
    let options = CompileOptions {
        max_step_tokens: 64,
        max_step_outputs: 1,
        ..CompileOptions::new(512)
    };
    let mut runner = Compiled::new(model, Box::new(CpuBackend::new()), options).unwrap();
    let req = GenerateRequest {
        prompt_ids: tok.encode(prompt, true, true),
        max_tokens,
        sampler: SamplerConfig::greedy(),
        ignore_eos: false,
        logprobs: k,
    };
    let g = generate(&mut runner, tok, &req, |_| true).unwrap();
    serde_json::to_string(&g.logprobs).unwrap()
}
