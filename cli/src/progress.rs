//! Progress on stderr for the steps that can take long (model load, kernel compilation on
//! a first start, `synth`, perplexity chunks), drawn only when stderr is a terminal, so
//! scripts and logs see nothing. Without the `tty` feature (the edge build) nothing is
//! drawn and [`Bar`] does nothing.

use std::io::IsTerminal;
#[cfg(feature = "tty")]
use std::sync::mpsc;
#[cfg(feature = "tty")]
use std::time::Duration;

#[cfg(feature = "tty")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar (indicatif's with the `tty` feature, nothing without it).
#[cfg(feature = "tty")]
pub type Bar = ProgressBar;
#[cfg(not(feature = "tty"))]
pub use silent::Bar;

/// How long a step runs before its spinner appears: quick steps stay silent.
#[cfg(feature = "tty")]
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Whether progress is drawn at all.
pub fn on_terminal() -> bool {
    cfg!(feature = "tty") && std::io::stderr().is_terminal()
}

/// Run `f` (no spinner without the `tty` feature).
#[cfg(not(feature = "tty"))]
pub fn while_slow<T>(_message: &str, f: impl FnOnce() -> T) -> T {
    f()
}

/// Run `f`; if it takes longer than a second and stderr is a terminal, a spinner with
/// `message` turns until it returns.
#[cfg(feature = "tty")]
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
#[cfg(not(feature = "tty"))]
pub fn bar(_len: u64, _message: &str) -> Bar {
    Bar
}

/// A bar of `len` steps with `message`, drawn on a terminal only (hidden otherwise).
#[cfg(feature = "tty")]
pub fn bar(len: u64, message: &str) -> Bar {
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

#[cfg(not(feature = "tty"))]
mod silent {
    /// The bar of a build without the `tty` feature: every call does nothing.
    #[derive(Debug)]
    pub struct Bar;

    impl Bar {
        pub fn set_length(&self, _: u64) {}
        pub fn set_position(&self, _: u64) {}
        pub fn set_message(&self, _: String) {}
        pub fn finish_and_clear(&self) {}
    }
}
