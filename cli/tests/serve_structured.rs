//! `kiln serve`'s structured outputs and tool calls through the official `openai` Python
//! client (tests/python/openai_structured.py): 20 Pydantic schemas parsed and validated,
//! tool calls with two tools, streaming variants, and 400s for malformed schemas and tool
//! definitions while the server keeps serving; and tool calls in a model's own syntax
//! (tests/python/openai_tools.py) on a synthesized model with Qwen 2.5's chat template. A
//! missing python3, `openai` or `jsonschema` package fails the test with what to install.

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
use kiln_tools::synth::{self, Shape, SynthConfig};

const MODEL_ID: &str = "smollm2";

fn require_packages() {
    let has_packages = Command::new("python3")
        .args(["-c", "import openai, jsonschema, pydantic"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_packages,
        "this test drives the official client: python3 -m pip install openai==3.51.0 jsonschema (.ci/run)"
    );
}

/// Serve `model` and run `script` (tests/python/) against it with `args`.
fn serve_and_run(model: Arc<Model>, script: &str, args: &[&str]) {
    let config = ServeConfig {
        port: 0,
        n_ctx: Some(1024),
        drain: Duration::from_secs(2),
        ..ServeConfig::new(MODEL_ID, Arc::new(|| Ok(Box::new(CpuBackend::new()))))
    };
    let srv = Server::start(model, &config).expect("the server starts");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/python")
        .join(script);
    let out = Command::new("python3")
        .arg(&script)
        .args(["--base-url", &format!("http://{}/v1", srv.local_addr())])
        .args(["--model", MODEL_ID])
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "{} failed", script.display());
    srv.shutdown().unwrap();
}

#[test]
fn tool_calls_in_the_models_own_syntax_through_the_openai_client() {
    require_packages();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let template =
        std::fs::read_to_string(root.join("tests/data/templates/qwen2.5-instruct.jinja"))
            .expect("the template is in tests/data");
    let config = SynthConfig {
        shape: Shape::named("qwen2-tiny").expect("a named shape"),
        quant: synth::parse_quant("q8_0").unwrap(),
        seed: 19,
        tokenizer_from: kiln_tests::reference_model(),
    };
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "qwen2-tiny-qwen-template.{}.gguf",
        std::process::id()
    ));
    synth::synthesize_with_template(&config, Some(&template), &path, |_| {})
        .expect("the model synthesizes");
    let model = Model::load(&path).expect("the synthesized model loads");
    // The weights are mapped; the file's name can go.
    let _ = std::fs::remove_file(&path);
    assert_eq!(model.tokenizer.chat_template(), Some(template.as_str()));
    serve_and_run(Arc::new(model), "openai_tools.py", &[]);
}

#[test]
fn structured_outputs_and_tool_calls_through_the_openai_client() {
    require_packages();
    let model = Arc::new(kiln_tests::cpu::load());
    let expect = run_logprobs(&model, "The capital of France is", 6, 3);
    serve_and_run(
        model,
        "openai_structured.py",
        &["--expect-logprobs", &expect],
    );
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
