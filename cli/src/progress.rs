//! Progress on stderr for the steps that can take long (model load, kernel compilation on
//! a first start, `synth`, perplexity chunks), drawn only when stderr is a terminal, so
//! scripts and logs see nothing.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a step runs before its spinner appears: quick steps stay silent.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Whether progress is drawn at all.
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Run `f`; if it takes longer than a second and stderr is a terminal, a spinner with
/// `message` turns until it returns.
pub fn while_slow<T>(message: &str, f: impl FnOnce() -> T) -> T {
    if !on_terminal() {
        return f();
    }
    let (done, wait) = mpsc::channel::<()>();
    let message = message.to_string();
    let spinner = std::thread::spawn(move || {
        if wait.recv_timeout(SHOW_AFTER).is_ok() {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        let _ = wait.recv();
        bar.finish_and_clear();
    });
    let out = f();
    let _ = done.send(());
    let _ = spinner.join();
    out
}

/// A bar of `len` steps with `message`, drawn on a terminal only (hidden otherwise).
pub fn bar(len: u64, message: &str) -> ProgressBar {
    let target = if on_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message.to_string());
    bar
}
