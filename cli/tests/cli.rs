//! The `kiln` binary as scripts use it: JSON on the last line, one-line errors with a
//! non-zero exit, and no lost work on bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// The reference model (a failure saying how to fetch it when it is missing).
fn model() -> Option<PathBuf> {
    Some(kiln_tests::reference_model())
}

fn last_line_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("some stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line {line:?} is not JSON: {e}"))
}

/// A one-line error on stderr and a failing exit code.
fn assert_clean_failure(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
}

#[test]
fn truncated_and_corrupted_models_fail_with_one_line() {
    let Some(model) = model() else { return };
    let bytes = std::fs::read(&model).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = kiln(&[
        "run",
        "-m",
        truncated.to_str().unwrap(),
        "-p",
        "hi",
        "-n",
        "1",
    ]);
    assert_clean_failure(&out, "past the end");

    let mut corrupt = bytes[..4096].to_vec();
    corrupt[0] = b'X';
    let bad_magic = dir.join("bad-magic.gguf");
    std::fs::write(&bad_magic, &corrupt).unwrap();
    let out = kiln(&["info", "-m", bad_magic.to_str().unwrap()]);
    assert_clean_failure(&out, "not a GGUF file");

    let header_cut = dir.join("header-cut.gguf");
    std::fs::write(&header_cut, &bytes[..1000]).unwrap();
    let out = kiln(&["tokenize", "-m", header_cut.to_str().unwrap(), "hello"]);
    assert_clean_failure(&out, "truncated");

    let out = kiln(&["info", "-m", dir.join("missing.gguf").to_str().unwrap()]);
    assert_clean_failure(&out, "cannot read");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_json_reports_tokens_text_and_timings() {
    let Some(model) = model() else { return };
    let out = kiln(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
        "--logprobs",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_line_json(&out);
    assert_eq!(v["prompt_tokens"], 5);
    assert_eq!(
        v["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(
        v["tokens"][0], 7042,
        "greedy continuation starts with ' Paris'"
    );
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    assert!(v["text"].as_str().unwrap().starts_with(" Paris"));
    for key in ["ttft_ms", "prefill_tok_s", "decode_tok_s"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} = {}", v[key]);
    }
    assert_eq!(v["backend"], "cpu", "the CPU backend is the default");
    let logprobs = v["logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len(), 4);
    assert_eq!(logprobs[0].as_array().unwrap().len(), 3);
    assert_eq!(logprobs[0][0][0], 7042);
}

#[test]
fn the_reference_pass_is_selectable_and_agrees_on_the_first_token() {
    let Some(model) = model() else { return };
    let out = kiln(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "2",
        "--temp",
        "0",
        "--backend",
        "ref",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_line_json(&out);
    assert_eq!(v["backend"], "ref");
    assert_eq!(v["tokens"][0], 7042);
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let Some(model) = model() else { return };
    let out = kiln(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "one two three four five six seven",
        "-c",
        "4",
    ]);
    assert_clean_failure(&out, "context");
}

#[test]
fn unavailable_backend_is_an_error() {
    let Some(model) = model() else { return };
    let out = kiln(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "hi",
        "--backend",
        "cuda",
    ]);
    // Not in this build, or in it without a device here: either way one line naming it.
    assert_clean_failure(&out, "cuda");
    let out = kiln(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "hi",
        "--backend",
        "tpu",
    ]);
    assert_clean_failure(&out, "no backend \"tpu\"");
}

#[test]
fn tokenize_and_info_print_json() {
    let Some(model) = model() else { return };
    let out = kiln(&[
        "tokenize",
        "-m",
        model.to_str().unwrap(),
        "The capital of France is",
        "--json",
    ]);
    assert!(out.status.success());
    assert_eq!(
        last_line_json(&out)["ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );

    let out = kiln(&["info", "-m", model.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v = last_line_json(&out);
    assert_eq!(v["n_tensors"], 272);
    assert_eq!(v["config"]["n_layers"], 30);
    assert_eq!(v["type_counts"]["q4_1"], 210);
    assert_eq!(v["metadata"]["general.architecture"], "llama");
}

#[test]
fn a_full_kv_pool_and_a_budget_too_small_are_clear_errors() {
    let Some(model) = model() else { return };
    let m = model.to_str().unwrap();
    let out = kiln(&["run", "-m", m, "-p", "hi", "-n", "4", "--kv-budget", "1000"]);
    assert_clean_failure(&out, "KV budget");
    // Two FP8 pages of 16 tokens: the prompt fits, generation runs out of pages.
    let out = kiln(&[
        "run",
        "-m",
        m,
        "-p",
        "The capital of France is",
        "-n",
        "40",
        "--temp",
        "0",
        "--ignore-eos",
        "--kv-budget",
        "400000",
    ]);
    assert_clean_failure(&out, "KV pages");
}

#[test]
fn a_memory_budget_too_small_is_one_clear_error_before_allocating() {
    let Some(model) = model() else { return };
    let m = model.to_str().unwrap();
    // On the CPU backend: probing for a GPU may print driver notes of its own.
    let out = kiln(&[
        "run",
        "-m",
        m,
        "-p",
        "hi",
        "-n",
        "4",
        "--backend",
        "cpu",
        "--mem-budget",
        "64K",
    ]);
    assert_clean_failure(
        &out,
        "a memory budget of 65536 bytes cannot hold this model",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs at least"), "{stderr}");
    assert!(stderr.contains("mapped from the file"), "{stderr}");
    let out = kiln(&["run", "-m", m, "-p", "hi", "--mem-budget", "lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a byte count"));
}

#[test]
fn run_json_reports_memory_timings_and_a_budget_holds() {
    let Some(model) = model() else { return };
    let m = model.to_str().unwrap();
    let budget = 4u64 << 20;
    let args = [
        "run",
        "-m",
        m,
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0",
        "--json",
    ];
    let plain = kiln(&args);
    assert!(plain.status.success(), "{plain:?}");
    let plain = last_line_json(&plain);
    let mut with_budget: Vec<&str> = args.to_vec();
    with_budget.extend(["--mem-budget", "4M"]);
    let out = kiln(&with_budget);
    assert!(out.status.success(), "{out:?}");
    let v = last_line_json(&out);
    // The budget shrinks the pool (and the step), not the answer.
    assert_eq!(v["tokens"], plain["tokens"]);
    let mem = &v["memory"];
    assert_eq!(mem["budget_bytes"], budget);
    let engine = mem["engine_bytes"].as_u64().unwrap();
    assert!(engine > 0 && engine <= budget, "{mem}");
    assert!(mem["kv_pages"].as_u64().unwrap() >= 1, "{mem}");
    // Without a budget the pool holds the whole context.
    assert!(plain["memory"]["kv_bytes"].as_u64() > mem["kv_bytes"].as_u64());
    for key in ["load_ms", "compile_ms", "startup_ms", "ttft_ms"] {
        assert!(v[key].as_f64().is_some_and(|t| t > 0.0), "{key}: {v}");
    }
    if cfg!(target_os = "linux") {
        // Weights are used in place from the map: the heap holds far less than them.
        let weights = mem["weights_mapped_bytes"].as_u64().unwrap();
        let anon = mem["rss_anon_bytes"].as_u64().unwrap();
        assert!(
            anon < weights / 2,
            "{anon} anonymous bytes for {weights} of weights"
        );
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn tokenize_reads_only_the_metadata() {
    // Gemma 3's SentencePiece tokenizer, from a file whatever its tensor types.
    let gemma = kiln_tests::gemma_model();
    let out = kiln(&[
        "tokenize",
        "-m",
        gemma.to_str().unwrap(),
        "<start_of_turn>user\nHi there<end_of_turn>\n",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        last_line_json(&out)["ids"],
        serde_json::json!([2, 105, 2364, 107, 10979, 993, 106, 107])
    );
}

#[test]
#[cfg(feature = "structured")]
fn run_json_schema_and_grammar_constrain_the_output() {
    let Some(model) = model() else { return };
    let dir = std::env::temp_dir().join(format!("kiln-structured-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("city.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
            "rank": {"type": "integer", "minimum": 1, "maximum": 10}},
            "required": ["city", "rank"], "additionalProperties": false}"#,
    )
    .unwrap();
    let lark = dir.join("yn.lark");
    std::fs::write(
        &lark,
        "start: \"The answer is \" ANSWER \".\"\nANSWER: \"yes\" | \"no\"\n",
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run", "-m", m, "--chat", "-n", "48", "--temp", "0", "--json",
        ];
        args.extend_from_slice(extra);
        let out = kiln(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_line_json(&out)
    };
    let v = run(&[
        "-p",
        "Name a big city as JSON.",
        "--json-schema",
        schema.to_str().unwrap(),
    ]);
    let text = v["text"].as_str().unwrap();
    let answer: serde_json::Value = serde_json::from_str(text).expect(text);
    assert!(
        answer["city"]
            .as_str()
            .is_some_and(|c| c.chars().count() <= 20),
        "{text}"
    );
    assert!(
        answer["rank"]
            .as_i64()
            .is_some_and(|r| (1..=10).contains(&r)),
        "{text}"
    );
    assert_eq!(
        v["stop_reason"], "eog",
        "a complete answer ends the generation"
    );
    let v = run(&["-p", "Is water wet?", "--grammar", lark.to_str().unwrap()]);
    let text = v["text"].as_str().unwrap();
    assert!(
        ["The answer is yes.", "The answer is no."].contains(&text),
        "{text:?}"
    );
    // A schema that does not compile is one clear error.
    std::fs::write(&schema, r#"{"type": "objekt"}"#).unwrap();
    let out = kiln(&[
        "run",
        "-m",
        m,
        "-p",
        "x",
        "--json-schema",
        schema.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "city.json");
    std::fs::remove_dir_all(&dir).ok();
}

/// `kiln bench --top-k`: one decode test per way of handing back the tokens (logits read
/// back, the backend's argmax, its top k), each named for it.
#[test]
fn bench_decodes_once_per_pick() {
    let Some(model) = model() else { return };
    let out = kiln(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
        "-p",
        "0",
        "-n",
        "2",
        "-b",
        "2",
        "--top-k",
        "0,1,3",
        "-r",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = last_line_json(&out);
    let tests: Vec<&str> = json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["test"].as_str().expect("a test name"))
        .collect();
    assert_eq!(tests, ["tg2", "tg2 argmax", "tg2 top-3"]);
}
