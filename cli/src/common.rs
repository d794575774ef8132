//! What the commands share: backend choice, model loading, JSON output.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use kiln_engine::Error;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::kv::KvDtype;
use kiln_engine::memory::MemoryPlan;
use kiln_engine::model::Model;
use kiln_engine::reference::Reference;
use kiln_engine::runner::Runner;

use crate::args::{DeviceArgs, KvArg};

/// `--backend NAME`: a backend this build carries (from the registry), or `ref`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    /// The f32 reference forward pass (the oracle).
    Ref,
    /// A backend of the registry that this build carries.
    Compiled(&'static str),
}

/// Parses `--backend`: the names this build has, or an error saying how to build another.
pub fn parse_backend(text: &str) -> Result<BackendArg, String> {
    if text == "ref" {
        return Ok(BackendArg::Ref);
    }
    match kiln_backends::info(text) {
        Some(b) if b.compiled() => Ok(BackendArg::Compiled(b.name)),
        _ => Err(kiln_backends::open(text)
            .err()
            .map_or_else(|| format!("no backend {text:?}"), |e| e.to_string())),
    }
}

/// The help of `--backend`: what this build has, and how to build the others in.
pub fn backend_help() -> String {
    let mut names = kiln_backends::names();
    names.push("ref");
    let others: Vec<String> = kiln_backends::ALL
        .iter()
        .filter(|b| !b.compiled())
        .map(|b| format!("{} (--features {})", b.name, b.feature))
        .collect();
    let mut help = format!(
        "Backend to run on: {} [default: the first of these that opens; ref is the f32 oracle]",
        names.join(", ")
    );
    if !others.is_empty() {
        help.push_str(&format!(". Not in this build: {}", others.join(", ")));
    }
    help
}

/// Open a compiled backend (`None`: the best that opens); `ref` is refused with `why_not_ref`.
pub fn open_backend(
    backend: Option<BackendArg>,
    why_not_ref: &str,
) -> Result<Box<dyn kiln_ir::backend::Backend>, Error> {
    let opened = match backend {
        Some(BackendArg::Ref) => return Err(Error::Invalid(why_not_ref.into())),
        Some(BackendArg::Compiled(name)) => kiln_backends::open(name),
        None => kiln_backends::open_best(),
    };
    opened.map_err(|e| match e {
        kiln_backends::RegistryError::Open(e) => Error::Backend(e),
        other => Error::Invalid(other.to_string()),
    })
}

/// Load a model, with a spinner on a terminal when it takes more than a second.
pub fn load_model(path: &Path) -> Result<Model, Error> {
    crate::progress::while_slow(&format!("loading {}", path.display()), || Model::load(path))
}

/// When `main` started (the first call fixes it; `main` calls this first thing).
pub fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since [`process_start`].
pub fn ms_since_start(at: Instant) -> f64 {
    at.saturating_duration_since(process_start()).as_secs_f64() * 1e3
}

/// `--mem-budget` and `--kv-budget` values: a byte count, K/M/G/T suffixes allowed.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    kiln_engine::memory::parse_bytes(text)
}

/// What the engine allocated and what the process holds, as `--json` reports it.
pub fn memory_json(memory: Option<&MemoryPlan>) -> serde_json::Value {
    let resident = kiln_engine::memory::resident();
    serde_json::json!({
        "budget_bytes": memory.and_then(|m| m.budget_bytes),
        "weights_mapped_bytes": memory.map(|m| m.weights_mapped_bytes),
        "arena_bytes": memory.map(|m| m.arena_bytes),
        "backend_bytes": memory.map(|m| m.backend_bytes),
        "host_bytes": memory.map(|m| m.host_bytes),
        "kv_pages": memory.map(|m| m.kv_pages),
        "kv_bytes": memory.map(|m| m.kv_bytes()),
        "max_step_tokens": memory.map(|m| m.max_step_tokens),
        "engine_bytes": memory.map(|m| m.total_bytes()),
        "peak_rss_bytes": resident.map(|r| r.peak_bytes),
        "rss_anon_bytes": resident.map(|r| r.anon_bytes),
        "rss_file_bytes": resident.map(|r| r.file_bytes),
    })
}

/// The KV storage `--kv` asks for (FP8 by default).
pub fn kv_dtype(kv: Option<KvArg>) -> KvDtype {
    match kv {
        Some(KvArg::F16) => KvDtype::F16,
        Some(KvArg::Fp8) | None => KvDtype::F8E4M3,
    }
}

/// The context a command runs with: `-c`, else the model's trained length. A context
/// longer than the model was trained for is allowed, with one warning (as llama.cpp does).
pub fn context_size(model: &Model, ctx_size: Option<usize>) -> Result<usize, Error> {
    let trained = model.config.context_length;
    let n_ctx = ctx_size.unwrap_or(trained);
    if n_ctx == 0 {
        return Err(Error::Invalid("the context size must be at least 1".into()));
    }
    if n_ctx > trained {
        eprintln!(
            "warning: a context of {n_ctx} tokens is longer than the {trained} this model was trained for; output past {trained} may degrade"
        );
    }
    Ok(n_ctx)
}

/// Tokens of a prompt one step carries unless a command says otherwise.
pub const DEFAULT_STEP_TOKENS: usize = 512;

/// The runner for a backend choice; `None` picks the best one this build has.
/// `max_outputs` is the most logits rows one call may want (1 for generation).
pub fn runner<'m>(
    model: &'m Model,
    device: &DeviceArgs,
    n_ctx: usize,
    max_outputs: usize,
) -> Result<Box<dyn Runner + 'm>, Error> {
    runner_with_steps(model, device, n_ctx, max_outputs, DEFAULT_STEP_TOKENS)
}

/// [`runner`] whose prompts run `step_tokens` tokens a step (at most the context).
pub fn runner_with_steps<'m>(
    model: &'m Model,
    device: &DeviceArgs,
    n_ctx: usize,
    max_outputs: usize,
    step_tokens: usize,
) -> Result<Box<dyn Runner + 'm>, Error> {
    let backend = match device.backend {
        Some(BackendArg::Ref) => {
            if device.kv.is_some() || device.kv_budget.is_some() || device.mem_budget.is_some() {
                eprintln!(
                    "note: the ref backend keeps its KV cache in f32; --kv, --kv-budget and --mem-budget are ignored"
                );
            }
            return Ok(Box::new(Reference::new(model, n_ctx)));
        }
        // A build without compiled backends still runs, on the reference pass.
        None if !kiln_backends::any_compiled() => {
            return Ok(Box::new(Reference::new(model, n_ctx)));
        }
        other => open_backend(other, "")?,
    };
    let mut options = CompileOptions::new(n_ctx);
    options.kv_dtype = kv_dtype(device.kv);
    options.kv_budget_bytes = device.kv_budget;
    options.mem_budget_bytes = device.mem_budget;
    options.max_step_tokens = n_ctx.min(step_tokens).max(1);
    options.max_step_outputs = max_outputs.clamp(1, options.max_step_tokens);
    let name = backend.name();
    let compiled = crate::progress::while_slow(&format!("preparing the model on {name}"), || {
        Compiled::new(model, backend, options)
    })?;
    Ok(Box::new(compiled))
}

/// Print the final JSON object as the last line of stdout.
pub fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
