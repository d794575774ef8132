//! The `kiln` command line. Every command accepts `--json`: the last line of stdout is
//! then one JSON object. Errors are one line on stderr and a non-zero exit.

mod args;
mod bench;
mod chat;
mod common;
mod info;
mod perplexity;
mod plan;
mod progress;
mod run;
#[cfg(feature = "serve")]
mod serve;
mod speculative;
#[cfg(feature = "structured")]
mod structured;
mod synth;
mod tokenize;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "A kernel-first LLM inference engine",
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt, streaming it as it is decoded.
    Run(run::Args),
    /// Talk with the model in its chat template; the history stays in the KV cache.
    Chat(chat::Args),
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

/// A bad command line is one `error:` line (help and version print as clap prints them).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
        }
        ErrorKind::InvalidUtf8 => eprintln!(
            "error: an argument is not valid UTF-8 (a prompt can come from a file: -f FILE)"
        ),
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see --help)");
        }
    }
    ExitCode::from(2)
}

/// The command line, with negative numbers taken as values everywhere (`--temp -1` reaches
/// the range check and its one-line error instead of "unexpected argument").
fn parse() -> Result<Cli, clap::Error> {
    let command = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    Cli::from_arg_matches(&command.try_get_matches()?)
}

fn main() -> ExitCode {
    common::process_start();
    restore_sigpipe();
    // SAFETY: first thing in `main`: no other thread exists yet.
    unsafe { kiln_backends::quiet_vulkan_probe() };
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Chat(args) => chat::main(args),
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
