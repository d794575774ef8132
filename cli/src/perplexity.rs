//! `kiln perplexity`: llama-perplexity's method and figures.

use std::path::PathBuf;
use std::time::Instant;

use kiln_engine::Error;
use kiln_engine::perplexity::perplexity;
use serde_json::json;

use crate::args::DeviceArgs;
use crate::common::{context_size, load_model, print_json, runner};
use crate::progress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// Text file to score
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per chunk (llama-perplexity's -c)
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", args.file.display())))?;
    let model = load_model(&args.model)?;
    let n_ctx = context_size(&model, Some(args.ctx_size))?;
    let mut runner = runner(&model, &args.device, n_ctx, n_ctx / 2)?;
    let start = Instant::now();
    let bar = progress::bar(0, "perplexity");
    let result = perplexity(
        runner.as_mut(),
        &model.tokenizer,
        &text,
        args.ctx_size,
        |i, n_chunks, ppl| {
            if progress::on_terminal() {
                bar.set_length(n_chunks as u64);
                bar.set_position(i as u64 + 1);
                bar.set_message(format!("ppl {ppl:.4}"));
            } else {
                eprint!("[{}]{ppl:.4} ", i + 1);
            }
        },
    )?;
    bar.finish_and_clear();
    if !progress::on_terminal() {
        eprintln!();
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "ppl = {:.4} +/- {:.5} ({} chunks of {} tokens, {} scored, {seconds:.1} s) [{}]",
        result.ppl,
        result.ppl_plus_minus,
        result.chunks,
        result.n_ctx,
        result.scored,
        runner.name()
    );
    if args.json {
        print_json(&json!({
            "ppl": result.ppl,
            "ppl_plus_minus": result.ppl_plus_minus,
            "tokens": result.tokens,
            "scored": result.scored,
            "chunks": result.chunks,
            "n_ctx": result.n_ctx,
            "backend": runner.name(),
            "seconds": seconds,
        }));
    }
    Ok(())
}
