//! `kiln perplexity`: llama-perplexity's method and figures.

use std::path::PathBuf;
use std::time::Instant;

use kiln_engine::Error;
use kiln_engine::perplexity::perplexity;
use serde_json::json;

use crate::common::{
    BackendArg, KvArg, backend_help, load_model, parse_backend, print_json, runner,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    model: PathBuf,
    /// Text file to score.
    #[arg(short, long)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
    #[arg(long, value_parser = parse_backend, help = backend_help())]
    backend: Option<BackendArg>,
    #[arg(long, value_enum)]
    kv: Option<KvArg>,
    /// Bytes the KV page pool may take (default: room for the whole context).
    #[arg(long)]
    kv_budget: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", args.file.display())))?;
    let model = load_model(&args.model)?;
    let mut runner = runner(
        &model,
        args.backend,
        args.kv,
        args.kv_budget,
        None,
        Some(args.ctx_size),
        args.ctx_size / 2,
    )?;
    let start = Instant::now();
    let result = perplexity(
        runner.as_mut(),
        &model.tokenizer,
        &text,
        args.ctx_size,
        |i, ppl| {
            eprint!("[{}]{ppl:.4} ", i + 1);
        },
    )?;
    eprintln!();
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
