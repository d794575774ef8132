//! `kiln serve`: the OpenAI-compatible HTTP server (continuous batching, prefix caching,
//! streaming).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::Error;
use kiln_serve::{HttpLimits, ServeConfig, Server};
use serde_json::json;

use crate::args::DeviceArgs;
use crate::common::{BackendArg, kv_dtype, load_model, open_backend, parse_bytes, print_json};

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
    /// Connections open at once (kept below the open-file limit, raised at start where the
    /// system allows): at the cap the oldest idle one makes room; with all busy, 503
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a request's headers may take from the connection opening or its previous
    /// response (so also how long an idle keep-alive connection stays open)
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a request's body may take after its headers
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// Largest request body in bytes (K, M, G suffixes); larger ones get 413
    #[arg(long, default_value = "2M", value_parser = parse_bytes)]
    max_body: usize,
    /// Print one JSON object with the address and limits once listening
    #[arg(long)]
    json: bool,
    /// No line per request on stderr (method, path, status, tokens, time)
    #[arg(short, long)]
    quiet: bool,
    /// Speculative decoding with a draft model (same vocabulary) for every request that
    /// does not ask for prompt lookup (`"lookup": N`) or none (`"lookup": 0`).
    #[arg(long, value_name = "MODEL")]
    draft: Option<PathBuf>,
    /// Guesses verified per sequence and step at most, draft model and prompt lookup
    /// (0 turns speculation off; each sequence may take this many more logits rows).
    #[arg(long, value_name = "K", default_value_t = kiln_serve::DEFAULT_SPEC_K_MAX)]
    draft_n: usize,
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
    let seconds = |flag: &str, value: f64| {
        if value.is_finite() && value > 0.0 {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(Error::Invalid(format!(
                "{flag} {value} must be a number of seconds above 0"
            )))
        }
    };
    if args.max_connections == 0 {
        return Err(Error::Invalid(
            "--max-connections must be at least 1".into(),
        ));
    }
    let http = HttpLimits {
        max_connections: args.max_connections,
        header_timeout: seconds("--header-timeout", args.header_timeout)?,
        body_timeout: seconds("--body-timeout", args.body_timeout)?,
        max_body_bytes: args.max_body,
    };
    if args.device.backend == Some(BackendArg::Ref) {
        return Err(Error::Invalid(
            "the ref backend runs one sequence at a time and cannot serve; use a compiled backend (cpu, ...)".into(),
        ));
    }
    let draft = match &args.draft {
        Some(path) => {
            let draft = load_model(path)?;
            kiln_engine::speculative::check_vocabulary(&model, &draft)?;
            Some(Arc::new(draft))
        }
        None => None,
    };
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
        http,
        access_log: !args.quiet,
        draft,
        spec_k_max: args.draft_n,
        ..ServeConfig::new(model_id, open)
    };
    // A descriptor per connection: raise the soft limit before the cap is set under it.
    kiln_serve::raise_open_files_limit();
    let server = Server::start(model, &config).map_err(|e| Error::Invalid(e.to_string()))?;
    let limits = server.http_limits();
    let info = server.engine().info().clone();
    let url = format!("http://{}", server.local_addr());
    eprintln!(
        "kiln serve: listening on {url} (model `{}`, backend {}, context {}, {} sequences, {} KV pages: a prompt of up to {} tokens, {} connections); Ctrl-C stops",
        info.limits.model_id,
        info.backend,
        info.limits.n_ctx,
        info.max_seqs,
        info.kv_page_count,
        info.limits.kv_capacity,
        limits.max_connections
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
            "max_connections": limits.max_connections,
            "header_timeout_s": limits.header_timeout.as_secs_f64(),
            "body_timeout_s": limits.body_timeout.as_secs_f64(),
            "max_body_bytes": limits.max_body_bytes,
            "draft_model": args.draft.as_ref().map(|p| p.display().to_string()),
            "spec_k_max": args.draft_n,
        }));
    }
    server
        .run_until_signal()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    eprintln!("kiln serve: stopped");
    Ok(())
}
