//! The damaged-model corpus (issue 21), through the `kiln` binary: every mutation class of
//! `kiln_tests::damaged` on a small synthetic model with the reference tokenizer (every
//! byte real) and on both reference models (header rewritten; data a sparse hole except
//! where a case needs it). Each damaged file goes through `kiln run` and `kiln plan`
//! (and `kiln serve` for the block counts that used to abort it), on the CPU backend (so
//! that no other backend's probing writes to stderr).
//!
//! Must hold: 0 panics, 0 aborts, 0 hangs, 0 files whose meaning is broken accepted with
//! exit 0, and each error one `error:` line naming the key or tensor at fault. A base
//! that kiln cannot load undamaged (Gemma 3 until kiln reads its tensor types) must still
//! give a clean one-line error for every case.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::damaged::{self, Base, Expect, Fill};
use kiln_tools::synth::{self, Shape, SynthConfig};

/// A command that has not ended by then is a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// Non-zero exit, one `error:` line.
    Error(String),
    /// Exit 0.
    Accepted,
    Panic(String),
    /// Killed by a signal (an abort) or out of memory.
    Crash(String),
    Hang,
    /// Non-zero exit, but not one `error:` line.
    Messy(String),
}

impl Outcome {
    fn short(&self) -> String {
        match self {
            Outcome::Error(line) => line.clone(),
            Outcome::Accepted => "ACCEPTED (exit 0)".into(),
            Outcome::Panic(s) => format!("PANIC {s}"),
            Outcome::Crash(s) => format!("CRASH {s}"),
            Outcome::Hang => format!("HANG (> {} s)", TIMEOUT.as_secs()),
            Outcome::Messy(s) => format!("MESSY {s:?}"),
        }
    }
}

fn kiln(args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the kiln binary runs");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Outcome::Hang;
    };
    if stderr.contains("panicked") || status.code() == Some(101) {
        return Outcome::Panic(stderr.lines().next().unwrap_or("").to_string());
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return Outcome::Crash(format!("signal {signal}: {}", stderr.trim()));
    }
    if stderr.contains("memory allocation of") {
        return Outcome::Crash(stderr.trim().to_string());
    }
    if status.success() {
        return Outcome::Accepted;
    }
    let lines: Vec<&str> = stderr.lines().collect();
    match lines.as_slice() {
        [line] if line.starts_with("error: ") => Outcome::Error(line.to_string()),
        _ => Outcome::Messy(stderr),
    }
}

fn run(model: &Path) -> Outcome {
    let m = model.to_str().unwrap();
    kiln(&[
        "run",
        "-m",
        m,
        "-p",
        "Hello",
        "-n",
        "3",
        "--temp",
        "0",
        "--backend",
        "cpu",
    ])
}

fn plan(model: &Path) -> Outcome {
    kiln(&["plan", "-m", model.to_str().unwrap(), "--backend", "cpu"])
}

#[cfg(feature = "serve")]
fn serve(model: &Path) -> Option<Outcome> {
    let m = model.to_str().unwrap();
    Some(kiln(&["serve", "-m", m, "--port", "0", "--backend", "cpu"]))
}

#[cfg(not(feature = "serve"))]
fn serve(_: &Path) -> Option<Outcome> {
    None
}

/// Damage `base` every way, run each copy, and check the outcomes.
fn check_corpus(base: &Base, fill: Fill, dir: &Path) {
    let pristine = run(&base.path);
    let strict = pristine == Outcome::Accepted;
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for damage in damaged::corpus(base) {
        let file = dir.join(format!("{}.gguf", base.name));
        damage
            .write(base, &file, fill)
            .unwrap_or_else(|e| panic!("{}: cannot write the damaged copy: {e}", damage.class));
        let mut outcomes = vec![("run", run(&file))];
        if damage.expect != Expect::RunError {
            outcomes.push(("plan", plan(&file)));
        }
        if damage.class.starts_with("block_count=")
            && let Some(o) = serve(&file)
        {
            outcomes.push(("serve", o));
        }
        std::fs::remove_file(&file).ok();
        for (command, outcome) in outcomes {
            let problem = match (&outcome, damage.expect) {
                (Outcome::Error(line), _) if strict && damage.expect != Expect::NoCrash => damage
                    .needles
                    .iter()
                    .find(|n| !line.contains(n.as_str()))
                    .map(|n| format!("the error does not name {n:?}")),
                (Outcome::Error(_), _) => None,
                (Outcome::Accepted, Expect::NoCrash) => None,
                (Outcome::Accepted, Expect::RunError) if command != "run" => None,
                (Outcome::Accepted, _) => Some("a broken file was accepted".into()),
                _ => Some("not a clean one-line error".into()),
            };
            table.push(format!(
                "{:<28} {command:<5} {}",
                damage.class,
                outcome.short()
            ));
            if let Some(problem) = problem {
                failures.push(format!(
                    "{} / {command}: {problem}: {}",
                    damage.class,
                    outcome.short()
                ));
            }
        }
    }
    eprintln!(
        "{} ({}): undamaged: {}\n{}",
        base.name,
        base.path.display(),
        pristine.short(),
        table.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} outcomes wrong for {}:\n{}",
        failures.len(),
        table.len(),
        base.name,
        failures.join("\n")
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-damaged-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 2-layer model of width 64 with the reference tokenizer: every case with every byte.
#[test]
fn damaged_synthetic_models_fail_cleanly() {
    let dir = scratch("synth");
    let path = dir.join("base.gguf");
    let shape = Shape {
        tied_embeddings: true,
        ..Shape::custom(2, 64, 4, 2, 128, 49152, 256).unwrap()
    };
    let config = SynthConfig {
        shape,
        quant: kiln_ir::DType::Q4_1,
        seed: 21,
        tokenizer_from: kiln_tests::reference_model(),
    };
    synth::synthesize(&config, &path, |_| {}).expect("the synthetic base is written");
    let base = Base::open("synth", &path).unwrap();
    check_corpus(&base, Fill::Copy, &dir);
    std::fs::remove_dir_all(&dir).ok();
}

/// A reference model, its data section a sparse hole where a case does not need it.
fn real_model(name: &'static str, path: &Path) {
    let dir = scratch(name);
    let base = Base::open(name, path).unwrap();
    check_corpus(&base, Fill::Sparse, &dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_smollm2_fails_cleanly() {
    real_model("smollm2", &kiln_tests::reference_model());
}

#[test]
fn damaged_gemma3_fails_cleanly() {
    real_model("gemma3", &kiln_tests::gemma_model());
}
