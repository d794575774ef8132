//! The backends this build has, by name. The engine meets them only through
//! `kiln_ir::backend::Backend`; this table is the one place that names them.
//!
//! Each backend is an optional dependency behind a cargo feature of kiln-engine named
//! `backend-<name>` (`backend-cpu` is on by default), so a build carries only the backends
//! it asks for: `cargo build --release --no-default-features --features backend-cpu`.
//! A new backend adds the optional dependency, the feature, and one `#[cfg]` entry below;
//! its options come from the environment in `backend_env.rs`, the one place that reads it.

use kiln_ir::backend::Backend;

use crate::Error;

type Constructor = fn() -> Result<Box<dyn Backend>, Error>;

/// Name and constructor of every backend compiled in, best first (GPU backends go
/// before `cpu`).
const REGISTRY: &[(&str, Constructor)] = &[
    // An NVIDIA GPU with its driver and NVRTC (both loaded at run time).
    #[cfg(feature = "backend-cuda")]
    ("cuda", || {
        let options = crate::backend_env::cuda_options();
        Ok(Box::new(kiln_backend_cuda::CudaBackend::with_options(
            options,
        )?))
    }),
    // A Vulkan GPU only (lavapipe with KILN_VULKAN_DEVICE=any).
    #[cfg(feature = "backend-vulkan")]
    ("vulkan", || {
        let options = crate::backend_env::vulkan_options();
        Ok(Box::new(kiln_backend_vulkan::VulkanBackend::with_options(
            options,
        )?))
    }),
    // A GPU adapter only (lavapipe with KILN_WGPU_ADAPTER=any).
    #[cfg(feature = "backend-wgpu")]
    ("wgpu", || {
        let options = crate::backend_env::wgpu_options();
        Ok(Box::new(kiln_backend_wgpu::WgpuBackend::with_options(
            options,
        )?))
    }),
    #[cfg(feature = "backend-cpu")]
    ("cpu", || {
        let options = crate::backend_env::cpu_options();
        Ok(Box::new(kiln_backend_cpu::CpuBackend::with_options(
            options,
        )))
    }),
];

/// Whether this build has any backend besides the reference pass.
pub fn any_compiled() -> bool {
    !REGISTRY.is_empty()
}

/// Names of the backends compiled in (plus `ref`, the reference pass, which needs none).
pub fn available() -> Vec<&'static str> {
    let mut names: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
    names.push("ref");
    names
}

/// Open a backend by name.
pub fn open(name: &str) -> Result<Box<dyn Backend>, Error> {
    match REGISTRY.iter().find(|(n, _)| *n == name) {
        Some((_, make)) => make(),
        None => Err(Error::BackendUnavailable(
            name.to_string(),
            available().join(", "),
        )),
    }
}

/// The best backend that opens on this machine.
pub fn open_best() -> Result<Box<dyn Backend>, Error> {
    let mut last = None;
    for (_, make) in REGISTRY {
        match make() {
            Ok(backend) => return Ok(backend),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::BackendUnavailable("any".into(), available().join(", "))))
}
