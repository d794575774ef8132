//! The `kiln` command line. Every command accepts `--json`: the last line of stdout is
//! then one JSON object. Errors are one line on stderr and a non-zero exit.

mod bench;
mod common;
mod info;
mod perplexity;
mod plan;
mod run;
#[cfg(feature = "serve")]
mod serve;
mod speculative;
mod synth;
mod tokenize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "A kernel-first LLM inference engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt, streaming it as it is decoded.
    Run(run::Args),
    /// Print the token ids of a text.
    Tokenize(tokenize::Args),
    /// Perplexity of a text file, by llama.cpp's llama-perplexity method.
    Perplexity(perplexity::Args),
    /// Model metadata and tensor table.
    Info(info::Args),
    /// Prefill and decode throughput (llama-bench's tests) and a per-kernel table.
    Bench(bench::Args),
    /// The fused graph and the kernel launches of one decode step on a backend.
    Plan(plan::Args),
    /// Write a random-weight GGUF model of a known shape (benchmarks without downloads).
    Synth(synth::Args),
    /// OpenAI-compatible HTTP server: continuous batching, prefix cache, streaming.
    #[cfg(feature = "serve")]
    Serve(serve::Args),
}

/// Die quietly on a closed pipe (`kiln info ... | head`) like other Unix tools, instead of
/// panicking in `println!`.
#[cfg(unix)]
fn restore_sigpipe() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: resetting SIGPIPE to its default disposition at start-up, before any thread
    // exists, is what C programs get by default; `signal` has this exact C signature.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}

fn main() -> ExitCode {
    common::process_start();
    restore_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Tokenize(args) => tokenize::main(args),
        Command::Perplexity(args) => perplexity::main(args),
        Command::Info(args) => info::main(args),
        Command::Plan(args) => plan::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Synth(args) => synth::main(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
