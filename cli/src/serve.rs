//! `kiln serve`: the OpenAI-compatible HTTP server (continuous batching, prefix caching,
//! streaming).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::Error;
use kiln_serve::{ServeConfig, Server};
use serde_json::json;

use crate::args::DeviceArgs;
use crate::common::{BackendArg, kv_dtype, load_model, open_backend, print_json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is printed)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model id clients send [default: the file name without .gguf]
    #[arg(long)]
    model_id: Option<String>,
    /// Sequences decoded together at most
    #[arg(long, default_value_t = 32)]
    max_seqs: usize,
    /// Requests that may wait for a place; past max-seqs + max-queue, requests get 429
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Positions one sequence may hold [default: the model's context length]
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Tokens one batched step may carry (decode tokens plus chunks of prefill)
    #[arg(long, default_value_t = 256)]
    step_tokens: usize,
    #[command(flatten)]
    device: DeviceArgs,
    /// On SIGINT/SIGTERM, let open requests run this many seconds before ending them
    #[arg(long, default_value_t = 30.0)]
    drain_secs: f64,
    /// Print one JSON object with the address and limits once listening
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let model = Arc::new(load_model(&args.model)?);
    let model_id = args.model_id.clone().unwrap_or_else(|| {
        let name = args
            .model
            .file_name()
            .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
        name.strip_suffix(".gguf").unwrap_or(&name).to_string()
    });
    if !(args.drain_secs.is_finite() && args.drain_secs >= 0.0) {
        return Err(Error::Invalid(format!(
            "--drain-secs {} must be a number of seconds >= 0",
            args.drain_secs
        )));
    }
    if args.device.backend == Some(BackendArg::Ref) {
        return Err(Error::Invalid(
            "the ref backend runs one sequence at a time and cannot serve; use a compiled backend (cpu, ...)".into(),
        ));
    }
    let backend = args.device.backend;
    let open: kiln_serve::OpenBackend = Arc::new(move || open_backend(backend, ""));
    let config = ServeConfig {
        host: args.host.clone(),
        port: args.port,
        max_seqs: args.max_seqs,
        max_queue: args.max_queue,
        step_tokens: args.step_tokens,
        n_ctx: args.ctx_size,
        kv_dtype: kv_dtype(args.device.kv),
        kv_budget_bytes: args.device.kv_budget,
        mem_budget_bytes: args.device.mem_budget,
        drain: Duration::from_secs_f64(args.drain_secs),
        ..ServeConfig::new(model_id, open)
    };
    let server = Server::start(model, &config).map_err(|e| Error::Invalid(e.to_string()))?;
    let info = server.engine().info().clone();
    let url = format!("http://{}", server.local_addr());
    eprintln!(
        "kiln serve: listening on {url} (model `{}`, backend {}, context {}, {} sequences, {} KV pages); Ctrl-C stops",
        info.limits.model_id, info.backend, info.limits.n_ctx, info.max_seqs, info.kv_page_count
    );
    if args.json {
        print_json(&json!({
            "url": url,
            "address": server.local_addr().to_string(),
            "model": info.limits.model_id,
            "backend": info.backend,
            "n_ctx": info.limits.n_ctx,
            "max_seqs": info.max_seqs,
            "max_queue": args.max_queue,
            "kv_page_count": info.kv_page_count,
            "max_sequence_tokens": info.limits.kv_capacity,
        }));
    }
    server
        .run_until_signal()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    eprintln!("kiln serve: stopped");
    Ok(())
}
