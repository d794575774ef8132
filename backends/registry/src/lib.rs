//! The backends a build carries, in one table. The engine meets backends only through
//! `kiln_ir::backend::Backend`; this crate is the one place that names them, and every
//! program that offers a choice of backend reads it: the CLI's `--backend`, `kiln bench`,
//! the C library, the criterion suites and the conformance suite.
//!
//! Each backend is an optional dependency behind a cargo feature `backend-<name>`, so a
//! build carries only the backends it asks for. A backend not built is still listed
//! ([`ALL`]), so that asking for it can say which feature builds it in.

use kiln_ir::backend::{Backend, BackendError};

pub mod env;

/// Opens a backend on this machine's device.
pub type Opener = fn() -> Result<Box<dyn Backend>, BackendError>;

/// Where the project's CI (a machine without a GPU) runs a backend's tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ci {
    /// Anywhere: the backend needs no device.
    Always,
    /// On Mesa's lavapipe (a CPU Vulkan driver that CI installs): with
    /// `KILN_REQUIRE_GPU_BACKENDS=1` a missing device fails the tests.
    Lavapipe,
    /// Only where the hardware is (an NVIDIA GPU): elsewhere its tests are skipped.
    Never,
}

/// One backend: what it is called, how it is built in, how it is opened.
#[derive(Clone, Copy, Debug)]
pub struct BackendInfo {
    pub name: &'static str,
    /// The cargo feature (of this crate, forwarded by the CLI and the C library) that
    /// builds it in.
    pub feature: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    pub ci: Ci,
    /// Opens it on a real device; None when this build does not carry it.
    pub open: Option<Opener>,
    /// Opens it for tests: also on a CPU implementation of the device API (lavapipe).
    pub open_for_tests: Option<Opener>,
}

impl BackendInfo {
    pub fn compiled(&self) -> bool {
        self.open.is_some()
    }
}

/// `registry! { ident: "name", "feature", Ci, "about", open_path, open_for_tests_path; ... }`:
/// the table [`ALL`], best first. An entry's openers are compiled only with its feature.
macro_rules! registry {
    ($($id:ident: $name:literal, $feature:literal, $ci:expr, $about:literal, $open:expr, $open_tests:expr;)*) => {
        $(
            mod $id {
                #[cfg(feature = $feature)]
                pub const OPEN: Option<super::Opener> = Some(|| Ok(Box::new($open()?)));
                #[cfg(feature = $feature)]
                pub const OPEN_FOR_TESTS: Option<super::Opener> = Some(|| Ok(Box::new($open_tests()?)));
                #[cfg(not(feature = $feature))]
                pub const OPEN: Option<super::Opener> = None;
                #[cfg(not(feature = $feature))]
                pub const OPEN_FOR_TESTS: Option<super::Opener> = None;
            }
        )*
        /// Every backend kiln has, best first (GPU backends before `cpu`), built in or not.
        pub const ALL: &[BackendInfo] = &[$(BackendInfo {
            name: $name,
            feature: $feature,
            about: $about,
            ci: $ci,
            open: $id::OPEN,
            open_for_tests: $id::OPEN_FOR_TESTS,
        }),*];
    };
}

registry! {
    cuda: "cuda", "backend-cuda", Ci::Never,
        "NVIDIA GPUs (driver and NVRTC loaded at run time)",
        crate::openers::cuda, crate::openers::cuda;
    vulkan: "vulkan", "backend-vulkan", Ci::Lavapipe,
        "Vulkan GPUs (ash; the WGSL kernels as SPIR-V)",
        crate::openers::vulkan, crate::openers::vulkan_any;
    wgpu: "wgpu", "backend-wgpu", Ci::Lavapipe,
        "WebGPU (wgpu on Vulkan, Metal or DX12; the WGSL kernels)",
        crate::openers::wgpu, crate::openers::wgpu_any;
    cpu: "cpu", "backend-cpu", Ci::Always,
        "the CPU (threads, AVX2 / AVX-VNNI block dot products)",
        crate::openers::cpu, crate::openers::cpu;
}

/// The openers of the table: each backend with the options of [`env`] (the one place
/// the environment is read); for tests, also on a CPU implementation of the device API.
mod openers {
    #[cfg(feature = "backend-cuda")]
    pub fn cuda() -> Result<kiln_backend_cuda::CudaBackend, super::BackendError> {
        kiln_backend_cuda::CudaBackend::with_options(crate::env::cuda_options())
    }

    #[cfg(feature = "backend-vulkan")]
    pub fn vulkan() -> Result<kiln_backend_vulkan::VulkanBackend, super::BackendError> {
        kiln_backend_vulkan::VulkanBackend::with_options(crate::env::vulkan_options())
    }

    #[cfg(feature = "backend-vulkan")]
    pub fn vulkan_any() -> Result<kiln_backend_vulkan::VulkanBackend, super::BackendError> {
        kiln_backend_vulkan::VulkanBackend::with_options(kiln_backend_vulkan::WgslOptions {
            allow_cpu: true,
            ..crate::env::vulkan_options()
        })
    }

    #[cfg(feature = "backend-wgpu")]
    pub fn wgpu() -> Result<kiln_backend_wgpu::WgpuBackend, super::BackendError> {
        kiln_backend_wgpu::WgpuBackend::with_options(crate::env::wgpu_options())
    }

    #[cfg(feature = "backend-wgpu")]
    pub fn wgpu_any() -> Result<kiln_backend_wgpu::WgpuBackend, super::BackendError> {
        kiln_backend_wgpu::WgpuBackend::with_options(kiln_backend_wgpu::WgslOptions {
            allow_cpu: true,
            ..crate::env::wgpu_options()
        })
    }

    #[cfg(feature = "backend-cpu")]
    pub fn cpu() -> Result<kiln_backend_cpu::CpuBackend, super::BackendError> {
        Ok(kiln_backend_cpu::CpuBackend::with_options(
            crate::env::cpu_options(),
        ))
    }
}

/// Why a backend could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "backend {name:?} is not in this build (it has: {available}); build with `--features {feature}`"
    )]
    NotBuilt {
        name: String,
        feature: &'static str,
        available: String,
    },
    #[error("there is no backend {name:?} (kiln has: {known})")]
    Unknown { name: String, known: String },
    #[error("this build has no backend (build with `--features backend-cpu`)")]
    NoneBuilt,
    #[error(transparent)]
    Open(#[from] BackendError),
}

/// The backends this build carries, best first.
pub fn compiled() -> impl Iterator<Item = &'static BackendInfo> {
    ALL.iter().filter(|b| b.compiled())
}

/// A backend of the table by name, built in or not.
pub fn info(name: &str) -> Option<&'static BackendInfo> {
    ALL.iter().find(|b| b.name == name)
}

/// Whether this build has any backend.
pub fn any_compiled() -> bool {
    compiled().next().is_some()
}

/// Names of the backends compiled in, best first.
pub fn names() -> Vec<&'static str> {
    compiled().map(|b| b.name).collect()
}

/// Open a backend by name.
pub fn open(name: &str) -> Result<Box<dyn Backend>, RegistryError> {
    let Some(info) = info(name) else {
        return Err(RegistryError::Unknown {
            name: name.into(),
            known: ALL.iter().map(|b| b.name).collect::<Vec<_>>().join(", "),
        });
    };
    match info.open {
        Some(open) => Ok(open()?),
        None => Err(RegistryError::NotBuilt {
            name: name.into(),
            feature: info.feature,
            available: names().join(", "),
        }),
    }
}

/// The best backend that opens on this machine.
pub fn open_best() -> Result<Box<dyn Backend>, RegistryError> {
    let mut last = None;
    for open in ALL.iter().filter_map(|b| b.open) {
        match open() {
            Ok(backend) => return Ok(backend),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(RegistryError::NoneBuilt, RegistryError::Open))
}

/// On a machine without a desktop session, Mesa's Vulkan driver (probed when a GPU
/// backend looks for a device) prints `error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment.` at every probe. This points the variable at a private, empty directory
/// when it is unset, so that stderr keeps to kiln's own messages.
///
/// # Safety
/// It sets an environment variable: call it at the start of `main`, before any thread
/// exists (the CLI and the test harnesses do).
#[cfg(unix)]
pub unsafe fn quiet_vulkan_probe() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kiln-xdg-runtime-{uid}"));
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_err()
    {
        return;
    }
    // SAFETY: the caller guarantees no other thread exists (see the function's contract).
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
}

/// Elsewhere Mesa's loader has nothing to say.
///
/// # Safety
/// None needed; `unsafe` for the same signature as on Unix.
#[cfg(not(unix))]
pub unsafe fn quiet_vulkan_probe() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_features_follow_them() {
        for (i, b) in ALL.iter().enumerate() {
            assert_eq!(b.feature, format!("backend-{}", b.name));
            assert!(
                ALL[i + 1..].iter().all(|o| o.name != b.name),
                "{} twice",
                b.name
            );
        }
    }

    #[test]
    fn a_backend_not_built_says_how_to_build_it() {
        for b in ALL.iter().filter(|b| !b.compiled()) {
            let e = open(b.name).err().expect("not built");
            assert!(e.to_string().contains(b.feature), "{e}");
        }
        let e = open("tpu").err().expect("unknown");
        assert!(e.to_string().contains("cpu"), "{e}");
    }
}
