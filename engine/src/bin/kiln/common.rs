//! What the commands share: backend choice, model loading, JSON output.

use std::io::Write;
use std::path::Path;

use clap::ValueEnum;
use kiln_engine::Error;
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

pub fn load_model(path: &Path) -> Result<Model, Error> {
    Model::load(path)
}

/// The runner for a backend choice; `None` picks the best one this build has.
pub fn runner<'m>(
    model: &'m Model,
    backend: Option<BackendArg>,
    kv: Option<KvArg>,
    n_ctx: Option<usize>,
) -> Result<Box<dyn Runner + 'm>, Error> {
    let n_ctx = n_ctx.unwrap_or(model.config.context_length);
    if n_ctx == 0 {
        return Err(Error::Invalid("the context size must be at least 1".into()));
    }
    match backend.unwrap_or(BackendArg::Ref) {
        BackendArg::Ref => {
            if kv.is_some() {
                eprintln!("note: the ref backend keeps its KV cache in f32; --kv is ignored");
            }
            Ok(Box::new(Reference::new(model, n_ctx)))
        }
        other => Err(Error::BackendUnavailable(
            other
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string()),
        )),
    }
}

/// Print the final JSON object as the last line of stdout.
pub fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
