//! A test harness for tests that may have nothing to run on: a GPU backend without a
//! device, a check without its library, a size check without its binary. Such a test
//! returns [`skip`] with the reason, and `cargo test` shows it as `ignored (reason)` and
//! counts it with the ignored tests, instead of printing "ok" for a test that did nothing.
//! At the end the harness lists every skip with its reason.
//!
//! A test target opts in with `harness = false` in its Cargo.toml and a `main`:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     kiln_testkit::run(vec![kiln_testkit::test("name", || { /* assert */ kiln_testkit::pass() })])
//! }
//! ```
//!
//! A panic in a test is a failure, as with the standard harness; so is [`fail`].

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub use libtest_mimic::{Completion, Failed, Trial};

/// What a test body returns.
pub type Outcome = Result<Completion, Failed>;

/// The test ran and passed.
pub fn pass() -> Outcome {
    Ok(Completion::Completed)
}

/// The test could not run here; `reason` says why (shown by cargo test and in the summary).
pub fn skip(reason: impl std::fmt::Display) -> Outcome {
    let reason = reason.to_string();
    if let Ok(mut skipped) = SKIPPED.lock() {
        skipped.push(reason.clone());
    }
    Ok(Completion::ignored_with(reason))
}

/// The test failed with `message`.
pub fn fail(message: impl std::fmt::Display) -> Outcome {
    Err(message.to_string().into())
}

/// A test named `name`.
pub fn test(name: impl Into<String>, body: impl FnOnce() -> Outcome + Send + 'static) -> Trial {
    Trial::ignorable_test(name, body)
}

static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Whether the run asked to see what tests print (`cargo test -- --nocapture`): this
/// harness does not capture output, so tests print their details only then.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Prepare the process for device probing (before any thread starts), run the tests as
/// cargo test asked (filters, `--list`, `--test-threads` ...), print the skips grouped by
/// reason, and return the exit code.
pub fn run(trials: Vec<Trial>) -> ExitCode {
    // SAFETY: `run` is called at the start of a test binary's `main`, before the harness or
    // any test starts a thread.
    unsafe { kiln_backends::quiet_vulkan_probe() };
    let args = libtest_mimic::Arguments::from_args();
    VERBOSE.store(args.nocapture, Ordering::Relaxed);
    let conclusion = libtest_mimic::run(&args, trials);
    let skipped = SKIPPED.lock().map(|s| s.clone()).unwrap_or_default();
    if !skipped.is_empty() {
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for reason in skipped {
            match reasons.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => reasons.push((reason, 1)),
            }
        }
        println!("skipped (not failed, not run):");
        for (reason, n) in reasons {
            println!("  {n} × {reason}");
        }
    }
    conclusion.exit_code()
}
