//! Shared helpers for kiln's cross-crate tests: where the reference model and
//! llama.cpp's recorded outputs are, and how to skip when the model is absent.

use std::path::PathBuf;

pub mod conformance;
pub mod device;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared/reference/smollm2/<name>` parsed as JSON.
pub fn reference_json(name: &str) -> serde_json::Value {
    let path = workspace_root()
        .join("../shared/reference/smollm2")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Path of llama.cpp's reference text for perplexity.
pub fn reference_path(name: &str) -> PathBuf {
    workspace_root()
        .join("../shared/reference/smollm2")
        .join(name)
}

/// The reference model, or `None` (with a printed reason) when it has not been fetched.
/// CI fetches it first (`scripts/fetch-model.sh`), so there the tests always run.
pub fn reference_model() -> Option<PathBuf> {
    let path = std::env::var_os("KILN_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if path.exists() {
        Some(path)
    } else if std::env::var_os("KILN_REQUIRE_MODEL").is_some() {
        panic!(
            "KILN_REQUIRE_MODEL is set but {} is missing (run scripts/fetch-model.sh)",
            path.display()
        );
    } else {
        eprintln!(
            "skipping: reference model {} not found (run scripts/fetch-model.sh)",
            path.display()
        );
        None
    }
}

/// A GPU backend that CI runs on Mesa's lavapipe (wgpu, Vulkan): without a device
/// its tests print why and pass, except under `KILN_REQUIRE_GPU_BACKENDS=1` (set by
/// `.ci/run`, which installs lavapipe), where a missing device fails them.
pub fn required_on_ci<B, E: std::fmt::Display>(made: Result<B, E>) -> Result<B, E> {
    if let Err(e) = &made
        && std::env::var("KILN_REQUIRE_GPU_BACKENDS").is_ok_and(|v| v == "1")
    {
        panic!("KILN_REQUIRE_GPU_BACKENDS=1 but the backend has no device: {e}");
    }
    made
}

/// The CPU backend on the reference model, as the model-level tests build it.
pub mod cpu {
    use kiln_backend_cpu::CpuBackend;
    use kiln_engine::compiled::{CompileOptions, Compiled};
    use kiln_engine::kv::KvDtype;
    use kiln_engine::model::Model;

    /// The reference model, or None (with a printed reason) when it is absent.
    pub fn load() -> Option<Model> {
        super::reference_model().map(|path| Model::load(path).expect("the reference model loads"))
    }

    pub fn cpu(model: &Model, options: CompileOptions) -> Compiled<'_> {
        Compiled::new(model, Box::new(CpuBackend::new()), options)
            .expect("the CPU backend compiles")
    }

    pub fn options(n_ctx: usize, kv_dtype: KvDtype) -> CompileOptions {
        CompileOptions {
            kv_dtype,
            ..CompileOptions::new(n_ctx)
        }
    }

    /// What `kiln perplexity -c N` compiles: steps of up to min(N, 512) tokens, N/2 outputs.
    pub fn perplexity_options(n_ctx: usize, kv_dtype: KvDtype) -> CompileOptions {
        CompileOptions {
            max_step_tokens: n_ctx.min(512),
            max_step_outputs: n_ctx / 2,
            ..options(n_ctx, kv_dtype)
        }
    }
}
