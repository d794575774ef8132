//! What the commands share: backend choice, model loading, JSON output.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use clap::ValueEnum;
use kiln_engine::Error;
use kiln_engine::backends;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::kv::KvDtype;
use kiln_engine::memory::MemoryPlan;
use kiln_engine::model::Model;
use kiln_engine::reference::Reference;
use kiln_engine::runner::Runner;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The f32 reference forward pass (the oracle).
    Ref,
    Cpu,
    Cuda,
    Vulkan,
    Wgpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvArg {
    Fp8,
    F16,
}

impl BackendArg {
    pub fn name(self) -> &'static str {
        match self {
            BackendArg::Ref => "ref",
            BackendArg::Cpu => "cpu",
            BackendArg::Cuda => "cuda",
            BackendArg::Vulkan => "vulkan",
            BackendArg::Wgpu => "wgpu",
        }
    }
}

pub fn load_model(path: &Path) -> Result<Model, Error> {
    Model::load(path)
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

/// The runner for a backend choice; `None` picks the best one this build has.
/// `max_outputs` is the most logits rows one call may want (1 for generation).
pub fn runner<'m>(
    model: &'m Model,
    backend: Option<BackendArg>,
    kv: Option<KvArg>,
    kv_budget: Option<usize>,
    mem_budget: Option<usize>,
    n_ctx: Option<usize>,
    max_outputs: usize,
) -> Result<Box<dyn Runner + 'm>, Error> {
    let n_ctx = n_ctx.unwrap_or(model.config.context_length);
    if n_ctx == 0 {
        return Err(Error::Invalid("the context size must be at least 1".into()));
    }
    let device = match backend {
        Some(BackendArg::Ref) => {
            if kv.is_some() || kv_budget.is_some() || mem_budget.is_some() {
                eprintln!(
                    "note: the ref backend keeps its KV cache in f32; --kv, --kv-budget and --mem-budget are ignored"
                );
            }
            return Ok(Box::new(Reference::new(model, n_ctx)));
        }
        // A build without compiled backends still runs, on the reference pass.
        None if !backends::any_compiled() => return Ok(Box::new(Reference::new(model, n_ctx))),
        None => backends::open_best()?,
        Some(other) => backends::open(other.name())?,
    };
    let mut options = CompileOptions::new(n_ctx);
    options.kv_dtype = match kv {
        Some(KvArg::F16) => KvDtype::F16,
        Some(KvArg::Fp8) | None => KvDtype::F8E4M3,
    };
    options.kv_budget_bytes = kv_budget;
    options.mem_budget_bytes = mem_budget;
    options.max_step_tokens = n_ctx.min(512);
    options.max_step_outputs = max_outputs.clamp(1, options.max_step_tokens);
    Ok(Box::new(Compiled::new(model, device, options)?))
}

/// Print the final JSON object as the last line of stdout.
pub fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
