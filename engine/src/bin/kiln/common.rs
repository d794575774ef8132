//! What the commands share: backend choice, model loading, JSON output.

use std::io::Write;
use std::path::Path;

use clap::ValueEnum;
use kiln_engine::Error;
use kiln_engine::backends;
use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::kv::KvDtype;
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

/// The runner for a backend choice; `None` picks the best one this build has.
/// `max_outputs` is the most logits rows one call may want (1 for generation).
pub fn runner<'m>(
    model: &'m Model,
    backend: Option<BackendArg>,
    kv: Option<KvArg>,
    kv_budget: Option<usize>,
    n_ctx: Option<usize>,
    max_outputs: usize,
) -> Result<Box<dyn Runner + 'm>, Error> {
    let n_ctx = n_ctx.unwrap_or(model.config.context_length);
    if n_ctx == 0 {
        return Err(Error::Invalid("the context size must be at least 1".into()));
    }
    let device = match backend {
        Some(BackendArg::Ref) => {
            if kv.is_some() || kv_budget.is_some() {
                eprintln!(
                    "note: the ref backend keeps its KV cache in f32; --kv and --kv-budget are ignored"
                );
            }
            return Ok(Box::new(Reference::new(model, n_ctx)));
        }
        None => backends::open_best()?,
        Some(other) => backends::open(other.name())?,
    };
    let mut options = CompileOptions::new(n_ctx);
    options.kv_dtype = match kv {
        Some(KvArg::F16) => KvDtype::F16,
        Some(KvArg::Fp8) | None => KvDtype::F8E4M3,
    };
    options.kv_budget_bytes = kv_budget;
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
