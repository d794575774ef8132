//! `kiln run` with speculative decoding, as scripts use it: the greedy tokens of plain
//! `kiln run` with `--lookup` and with `--draft` (a `kiln synth` model with the reference
//! model's tokenizer), the `speculative` object of `--json`, and one-line errors for
//! flags that do not fit together.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn last_line_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("some stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line {line:?} is not JSON: {e}"))
}

fn assert_clean_failure(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Mesa's Vulkan loader complains when a build with the GPU backends probes them on a
    // machine without XDG_RUNTIME_DIR; that is not kiln's error line.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "one line of error, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
}

/// A two-layer random model with the reference model's tokenizer.
fn tiny_draft(model: &Path) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kiln-cli-draft-{}.gguf", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "synth", "--shape", "custom", "--layers", "2", "--dim", "64", "--heads", "4",
        ])
        .args([
            "--kv-heads",
            "2",
            "--ffn",
            "128",
            "--quant",
            "q8_0",
            "--tokenizer-from",
        ])
        .arg(model)
        .arg("-o")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn run_with_lookup_or_a_draft_prints_the_greedy_tokens() {
    let model = kiln_tests::reference_model();
    let m = model.to_str().unwrap();
    let prompt = "a, b, c, d, e, a, b, c, d, e, a, b,";
    let base = [
        "run",
        "-m",
        m,
        "-p",
        prompt,
        "-n",
        "32",
        "--temp",
        "0",
        "--ignore-eos",
        "--json",
    ];
    let plain = last_line_json(&kiln(&base));
    assert!(plain.get("speculative").is_none());
    let draft = tiny_draft(&model);
    for extra in [
        vec!["--lookup", "2"],
        vec!["--lookup", "1", "--draft-n", "3"],
        vec!["--draft", draft.to_str().unwrap(), "--draft-n", "2"],
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let got = last_line_json(&kiln(&args));
        assert_eq!(got["tokens"], plain["tokens"], "{extra:?}");
        assert_eq!(got["text"], plain["text"], "{extra:?}");
        let spec = &got["speculative"];
        assert_eq!(
            spec["method"],
            if extra[0] == "--draft" {
                "draft"
            } else {
                "lookup"
            }
        );
        let (drafted, accepted) = (
            spec["drafted"].as_u64().unwrap(),
            spec["accepted"].as_u64().unwrap(),
        );
        assert!(drafted > 0 && accepted <= drafted, "{spec}");
        let rate = spec["acceptance_rate"].as_f64().unwrap();
        assert!((rate - accepted as f64 / drafted as f64).abs() < 1e-9);
        assert!(spec["tokens_per_step"].as_f64().unwrap() >= 1.0);
        if extra[0] == "--lookup" {
            assert!(
                accepted > 0,
                "a repeating list: lookup keeps guesses ({spec})"
            );
        }
    }
    let _ = std::fs::remove_file(&draft);
}

#[test]
fn speculative_flags_that_do_not_fit_fail_with_one_line() {
    let model = kiln_tests::reference_model();
    let m = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-m", m, "-p", "hi", "-n", "2"];
        args.extend_from_slice(extra);
        kiln(&args)
    };
    assert_clean_failure(&run(&["--draft-n", "3"]), "--lookup N or --draft MODEL");
    assert_clean_failure(&run(&["--lookup", "0"]), "n-gram");
    assert_clean_failure(&run(&["--lookup", "2", "--draft-n", "0"]), "--draft-n 0");
    assert_clean_failure(
        &run(&["--draft", "/nonexistent/draft.gguf"]),
        "/nonexistent/draft.gguf",
    );
}
