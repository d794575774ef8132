//! capi/examples/generate.c, built with the system C compiler against libkiln.a, run on
//! the reference model: it must generate the same greedy tokens as `kiln run` (the same
//! engine calls, made in-process here), and its deliberately bad calls must come back as
//! error codes with messages, not crashes.
//!
//! `cargo test` builds only the rlib of this crate, so the test builds the staticlib with
//! cargo (same profile and target directory; nothing to do when it is fresh). With
//! KILN_REQUIRE_MODEL set (CI), a missing model or C compiler fails instead of skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{GenerateRequest, generate};
use kiln_engine::model::Model;
use kiln_engine::sampler::SamplerConfig;

const PROMPT: &str = "The capital of France is";
const N_PREDICT: usize = 24;

fn required() -> bool {
    std::env::var_os("KILN_REQUIRE_MODEL").is_some()
}

/// Skip (or fail under KILN_REQUIRE_MODEL) with a reason.
fn unavailable(reason: &str) {
    assert!(!required(), "KILN_REQUIRE_MODEL is set but {reason}");
    eprintln!("skipping: {reason}");
}

/// target/<profile>/, from this test binary's path (target/<profile>/deps/<test>).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .to_path_buf()
}

/// The C compiler: $CC, else `cc`.
fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let works = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(cc)
}

/// Build libkiln.a with cargo, in this test's profile and target directory.
fn build_staticlib() -> PathBuf {
    let dir = profile_dir();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name")
        .to_string();
    let target_dir = dir.parent().expect("target/").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile_arg = match profile.as_str() {
        "debug" => "dev".to_string(),
        other => other.to_string(),
    };
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            "kiln-capi",
            "--lib",
            "--profile",
            &profile_arg,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p kiln-capi failed");
    let lib = dir.join("libkiln.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    lib
}

/// The system libraries a Rust staticlib needs (`rustc --print native-static-libs`).
fn native_libs() -> &'static [&'static str] {
    if cfg!(target_os = "macos") {
        &["-lSystem", "-lc", "-lm"]
    } else {
        &[
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]
    }
}

/// Compile capi/examples/generate.c against libkiln.a.
fn build_example(cc: &str) -> PathBuf {
    let lib = build_staticlib();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-generate-example");
    let out = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("examples/generate.c"))
        .arg(&lib)
        .args(native_libs())
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("the C compiler runs");
    assert!(
        out.status.success(),
        "{cc} failed on generate.c:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `kiln run -m MODEL -p PROMPT -n N --temp 0` generates: the same engine calls.
fn kiln_run_tokens(model_path: &Path) -> Vec<u32> {
    let model = Model::load(model_path).expect("the reference model loads");
    let prompt_ids = model.tokenizer.encode(PROMPT, true, true);
    let n_ctx = model.config.context_length;
    let mut options = CompileOptions::new(n_ctx);
    options.max_step_tokens = n_ctx.min(512);
    options.max_step_outputs = 1;
    let backend = kiln_backends::open_best().expect("a backend opens");
    let mut runner = Compiled::new(&model, backend, options).expect("the model compiles");
    let request = GenerateRequest {
        prompt_ids,
        max_tokens: N_PREDICT,
        sampler: SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        },
        ignore_eos: false,
        logprobs: 0,
    };
    generate(&mut runner, &model.tokenizer, &request, |_| true)
        .expect("generation runs")
        .tokens
}

#[test]
fn c_example_generates_what_kiln_run_does_and_survives_bad_calls() {
    let model = kiln_tests::reference_model();
    let Some(cc) = c_compiler() else {
        return unavailable("no C compiler (cc, or $CC) was found");
    };
    let exe = build_example(&cc);

    let out = Command::new(&exe)
        .arg(&model)
        .arg(PROMPT)
        .arg(N_PREDICT.to_string())
        .output()
        .expect("the example runs");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with("tokens:"))
        .unwrap_or_else(|| panic!("no tokens line; {}", show(&out)));
    let from_c: Vec<u32> = line["tokens:".len()..]
        .split_whitespace()
        .map(|t| t.parse().expect("a token id"))
        .collect();
    let expected = kiln_run_tokens(&model);
    assert!(!expected.is_empty());
    assert_eq!(from_c, expected, "the C API and kiln run disagree");

    let out = Command::new(&exe)
        .arg("--bad-calls")
        .arg(&model)
        .output()
        .expect("the example runs");
    assert!(out.status.success(), "bad calls: {}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 failure(s)"), "{}", show(&out));
    assert!(
        stdout.contains("load(missing file): status -3") && stdout.contains("No such file"),
        "{}",
        show(&out)
    );
    assert!(
        stdout.contains("load(NULL path): status -1"),
        "{}",
        show(&out)
    );
}
