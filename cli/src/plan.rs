//! `kiln plan`: the fused graph and the launches of one decode step on a backend.

use std::path::PathBuf;

use kiln_engine::Error;
use kiln_engine::compiled::{CompileOptions, compile_plan};
use serde_json::json;

use crate::args::KvArg;
use crate::common::{
    BackendArg, backend_help, kv_dtype, load_model, open_backend, parse_backend, print_json,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file
    #[arg(short, long)]
    model: PathBuf,
    #[arg(long, value_parser = parse_backend, help = backend_help())]
    backend: Option<BackendArg>,
    /// KV cache storage the plan is made for [default: fp8]
    #[arg(long, value_enum)]
    kv: Option<KvArg>,
    /// Show the unfused graph's launches (what the fusion passes start from)
    #[arg(long)]
    no_fuse: bool,
    /// Print one JSON object as the last line of stdout
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> Result<(), Error> {
    let model = load_model(&args.model)?;
    let backend = open_backend(
        args.backend,
        "the ref backend runs no plan: it is the unfused oracle",
    )?;
    let mut options = CompileOptions::new(model.config.context_length);
    options.fuse = !args.no_fuse;
    // One decode step: one token, one row of logits.
    options.max_step_tokens = 1;
    options.max_step_outputs = 1;
    let plan = compile_plan(&model, backend.as_ref(), &options)?;
    let c = &model.config;
    let dtype = kv_dtype(args.kv);
    let layout = c.kv_layout(dtype).map_err(kiln_engine::kv::KvError::from)?;
    // Every layer's K and V of one token (a page holds one KV group's layers).
    let kv_bytes_per_token = layout.bytes_per_token() * layout.n_groups();
    // One sequence at the full context, decoding: window layers keep their window only.
    let kv_bytes_per_sequence =
        c.kv_groups()
            .pages_per_sequence(layout.kv_page_size(), c.context_length, 1)
            * layout.page_bytes();
    if args.json {
        let launches: Vec<_> = plan
            .launches
            .iter()
            .map(|l| json!({"kernel": l.kernel, "op": l.op.name(), "layer": l.layer}))
            .collect();
        print_json(&json!({
            "backend": backend.name(),
            "layers": c.n_layers,
            "launches": launches,
            "launches_per_layer": plan.launches_per_layer(),
            "arena_bytes": plan.arena_bytes,
            "naive_arena_bytes": plan.naive_bytes,
            "kv_bytes_per_token": kv_bytes_per_token,
            "kv_bytes_per_sequence": kv_bytes_per_sequence,
            "kv": dtype.name(),
        }));
        return Ok(());
    }
    print!("{}", plan.graph.dump());
    println!(
        "\n{} launches ({} per layer, {} layers) on {}; arena {} bytes (no reuse: {}); KV {} bytes per token, {} per sequence of {} ({})",
        plan.launches.len(),
        plan.launches_per_layer(),
        c.n_layers,
        backend.name(),
        plan.arena_bytes,
        plan.naive_bytes,
        kv_bytes_per_token,
        kv_bytes_per_sequence,
        c.context_length,
        dtype.name()
    );
    Ok(())
}
