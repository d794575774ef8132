//! Shared helpers for kiln's cross-crate tests: where the reference model and
//! llama.cpp's recorded outputs are, and how to skip when the model is absent.

use std::path::PathBuf;

pub use kiln_testkit::Outcome;

pub mod conformance;
pub mod cuda_disasm;
pub mod damaged;
pub mod device;
pub mod families;
pub mod gemma_device;
pub mod top_k;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// llama.cpp's recorded outputs for the reference models, kept in the repository with
/// their provenance (`tests/data/reference/<model>/README.md`).
pub fn reference_dir(model: &str) -> PathBuf {
    workspace_root().join("tests/data/reference").join(model)
}

/// `tests/data/reference/smollm2/<name>` parsed as JSON.
pub fn reference_json(name: &str) -> serde_json::Value {
    let path = reference_dir("smollm2").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of token ids, as the reference files hold them.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Path of llama.cpp's reference text for perplexity.
pub fn reference_path(name: &str) -> PathBuf {
    reference_dir("smollm2").join(name)
}

/// The reference model (SmolLM2-135M-Instruct Q4_1). Missing, it is a failure that says
/// how to fetch it: `scripts/fetch-model.sh` is part of the README's test command, and a
/// test that passes without running is a defect. `KILN_MODEL` names another file.
pub fn reference_model() -> PathBuf {
    model_file("KILN_MODEL", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The second reference model (Gemma 3 270M Q4_K_M); `KILN_GEMMA_MODEL` names another file.
pub fn gemma_model() -> PathBuf {
    model_file("KILN_GEMMA_MODEL", "gemma-3-270m-q4_k_m.gguf")
}

fn model_file(variable: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models").join(name));
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model.sh (README: \"On a fresh machine\")",
        path.display()
    );
    path
}

/// Whether the GPU backends CI runs on lavapipe (wgpu, Vulkan) must find a device:
/// `KILN_REQUIRE_GPU_BACKENDS=1`, set by `.ci/run`, which installs lavapipe. Elsewhere a
/// backend without a device skips its tests, with the reason.
pub fn gpu_backends_required() -> bool {
    std::env::var("KILN_REQUIRE_GPU_BACKENDS").is_ok_and(|v| v == "1")
}

/// A device test's backend that did not open: a skip with the reason, or a failure where
/// CI must have the device ([`kiln_backends::Ci::Lavapipe`] under
/// `KILN_REQUIRE_GPU_BACKENDS=1`).
pub fn no_device(name: &str, ci: kiln_backends::Ci, e: impl std::fmt::Display) -> Outcome {
    if ci == kiln_backends::Ci::Lavapipe && gpu_backends_required() {
        kiln_testkit::fail(format!(
            "KILN_REQUIRE_GPU_BACKENDS=1 but {name} has no device: {e}"
        ))
    } else {
        kiln_testkit::skip(format!("{name}: {e}"))
    }
}

/// Run a device test's `body` on the backend `open` gives, or skip (see [`no_device`]).
pub fn on_device<B, E: std::fmt::Display>(
    name: &str,
    ci: kiln_backends::Ci,
    open: impl FnOnce() -> Result<B, E>,
    body: impl FnOnce(B) -> Outcome,
) -> Outcome {
    match open() {
        Ok(backend) => body(backend),
        Err(e) => no_device(name, ci, e),
    }
}

pub mod cpu;
