//! Speculative decoding on the reference models: at temperature 0 the output is token for
//! token plain greedy decoding's, on every prompt of `tests/data/reference/<model>/greedy.json`
//! (plus a copy-heavy prompt, where most guesses are kept and rejections cross page
//! boundaries), with prompt lookup, with the model drafting for itself (every guess kept)
//! and with a different draft model (a `kiln synth` model with the same tokenizer: almost
//! every guess rejected). On the CPU backend; on CUDA where a GPU is present. A reference
//! model that does not load yet shows as ignored with the reason.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_backend_cpu::CpuBackend;
use kiln_backend_cuda::CudaBackend;
use kiln_backends::Ci;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::model::Model;
use kiln_engine::runner::Runner;
use kiln_engine::sampler::SamplerConfig;
use kiln_engine::speculative::{self, DraftModel, Drafter, PromptLookup, SpecConfig, SpecStats};
use kiln_ir::backend::Backend;
use kiln_testkit::{pass, skip, test};
use kiln_tests::{Outcome, gemma_model, on_device, reference_dir, reference_model};
use kiln_tools::synth::{self, Shape, SynthConfig};
use serde_json::Value;

const N_CTX: usize = 1024;
const TOKENS: usize = 48;
/// Tokens of the copy-heavy prompt's continuation.
const COPY_TOKENS: usize = 160;

/// Asks for a function back with one variable renamed: the model copies most of it.
const COPY_PROMPT: &str = "<|im_start|>user\nRewrite this Python function, renaming the variable `total` to `running_sum`. Change nothing else.\n\n```python\ndef summarize(orders):\n    total = 0\n    count = 0\n    largest = None\n    for order in orders:\n        if order.cancelled:\n            continue\n        amount = order.quantity * order.price\n        if order.discount:\n            amount = amount * (1 - order.discount)\n        total = total + amount\n        count = count + 1\n        if largest is None or amount > largest:\n            largest = amount\n    if count == 0:\n        return {\"total\": 0, \"count\": 0, \"average\": 0, \"largest\": 0}\n    average = total / count\n    return {\n        \"total\": round(total, 2),\n        \"count\": count,\n        \"average\": round(average, 2),\n        \"largest\": round(largest, 2),\n    }\n```<|im_end|>\n<|im_start|>assistant\n";

fn main() -> ExitCode {
    let mut trials = Vec::new();
    for (model, dir) in [("smollm2", "smollm2"), ("gemma3", "gemma3-270m")] {
        for method in [Method::Lookup, Method::DraftItself, Method::DraftSynth] {
            trials.push(test(
                format!("greedy_identity_{model}_{}_cpu", method.name()),
                move || {
                    with_model(model, dir, |m, path, prompts| {
                        identity(m, path, prompts, method, &|| Box::new(CpuBackend::new()))
                    })
                },
            ));
        }
    }
    trials.push(test("greedy_identity_smollm2_lookup_cuda", || {
        on_device("cuda", Ci::Never, CudaBackend::new, |_| {
            with_model("smollm2", "smollm2", |m, path, prompts| {
                identity(m, path, prompts, Method::Lookup, &|| {
                    Box::new(CudaBackend::new().expect("the CUDA backend opened once"))
                })
            })
        })
    }));
    kiln_testkit::run(trials)
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Lookup,
    /// The target model drafting for itself: every guess is kept.
    DraftItself,
    /// A random-weight model with the target's tokenizer.
    DraftSynth,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Lookup => "lookup",
            Method::DraftItself => "draft_itself",
            Method::DraftSynth => "draft_synth",
        }
    }
}

/// A prompt: its name and ids.
type Prompt = (String, Vec<u32>);

/// Loads the reference model `which` and its greedy.json prompts, or skips with why.
fn with_model(
    which: &str,
    dir: &str,
    body: impl FnOnce(&Model, &Path, Vec<Prompt>) -> Outcome,
) -> Outcome {
    let path = if which == "smollm2" {
        reference_model()
    } else {
        gemma_model()
    };
    let model = match Model::load(&path) {
        Ok(m) => m,
        Err(e) => return skip(format!("{which} does not load yet: {e}")),
    };
    let greedy: Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir(dir).join("greedy.json")).unwrap(),
    )
    .unwrap();
    let mut prompts: Vec<Prompt> = greedy["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["prompt_ids"].as_array().unwrap();
            let ids = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            (p["name"].as_str().unwrap().to_string(), ids)
        })
        .collect();
    if which == "smollm2" {
        prompts.push((
            "copy".into(),
            model.tokenizer.encode(COPY_PROMPT, true, true),
        ));
    }
    body(&model, &path, prompts)
}

fn compiled<'m>(model: &'m Model, backend: Box<dyn Backend>, outputs: usize) -> Compiled<'m> {
    let options = CompileOptions {
        max_step_outputs: outputs,
        ..CompileOptions::new(N_CTX)
    };
    Compiled::new(model, backend, options).expect("the model compiles")
}

/// A small random-weight draft with `model`'s tokenizer, written once per process.
fn synth_draft(model_path: &Path, name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "kiln-spec-draft-{name}-{}.gguf",
        std::process::id()
    ));
    if !path.exists() {
        let vocab = synth::tokenizer_vocab_size(model_path).expect("the tokenizer reads");
        let config = SynthConfig {
            shape: Shape::custom(2, 64, 4, 2, 128, vocab, 2048).unwrap(),
            quant: kiln_ir::DType::Q8_0,
            seed: 5,
            tokenizer_from: model_path.to_path_buf(),
        };
        synth::synthesize(&config, &path, |_| {}).expect("the draft is written");
    }
    path
}

fn identity(
    model: &Model,
    model_path: &Path,
    prompts: Vec<Prompt>,
    method: Method,
    backend: &dyn Fn() -> Box<dyn Backend>,
) -> Outcome {
    let config = SpecConfig::new(match method {
        Method::Lookup => SpecConfig::LOOKUP_K_MAX,
        _ => SpecConfig::DRAFT_K_MAX,
    });
    let mut plain = compiled(model, backend(), 1);
    let mut target = compiled(model, backend(), config.step_outputs());
    let synth_path;
    let synth_model;
    let mut drafter: Box<dyn Drafter + '_> = match method {
        Method::Lookup => Box::new(PromptLookup::new(2).unwrap()),
        Method::DraftItself => Box::new(DraftModel::new(Box::new(compiled(model, backend(), 1)))),
        Method::DraftSynth => {
            let name = model.config.vocab_size.to_string();
            synth_path = synth_draft(model_path, &name);
            synth_model = Model::load(&synth_path).expect("the synthetic draft loads");
            speculative::check_vocabulary(model, &synth_model).expect("the same vocabulary");
            Box::new(DraftModel::new(Box::new(compiled(
                &synth_model,
                backend(),
                1,
            ))))
        }
    };
    let mut total = SpecStats::default();
    for (name, ids) in &prompts {
        let copy = name == "copy";
        let max_tokens = if copy { COPY_TOKENS } else { TOKENS };
        // The copy runs to its length either way.
        for ignore_eos in [true, false].into_iter().take(if copy { 1 } else { 2 }) {
            let req = GenerateRequest {
                prompt_ids: ids.clone(),
                max_tokens,
                sampler: SamplerConfig::greedy(),
                ignore_eos,
                logprobs: 0,
            };
            let want = generate(&mut plain, &model.tokenizer, &req, |_| true).unwrap();
            let (got, stats) = speculative::generate(
                &mut target,
                drafter.as_mut(),
                &config,
                &model.tokenizer,
                &req,
                |_| true,
            )
            .unwrap();
            assert_eq!(
                got.tokens,
                want.tokens,
                "{name} ({}, ignore_eos {ignore_eos}): speculative output differs from plain greedy",
                method.name()
            );
            assert_eq!(got.text, want.text);
            assert_eq!(got.stop_reason, want.stop_reason);
            if matches!(method, Method::DraftItself) {
                assert_eq!(
                    stats.accepted, stats.drafted,
                    "{name}: a model drafting for itself"
                );
            }
            if kiln_testkit::verbose() {
                eprintln!(
                    "{} {name} (ignore_eos {ignore_eos}): {} tokens equal; {} of {} guesses kept, {:.2} tokens per step",
                    method.name(),
                    got.tokens.len(),
                    stats.accepted,
                    stats.drafted,
                    stats.tokens_per_step()
                );
            }
            total.add(&stats);
        }
    }
    assert!(total.drafted > 0, "no guess was ever made");
    if matches!(method, Method::DraftItself | Method::Lookup) {
        assert!(total.accepted > 0, "no guess was ever kept");
    }
    // The pages of every rejected guess went back: none is held once the runner resets.
    target.reset();
    target
        .kv()
        .check_invariants()
        .map_err(kiln_testkit::Failed::from)?;
    assert_eq!(target.kv().stats().pages_in_use, 0);
    pass()
}
