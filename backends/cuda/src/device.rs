//! The CUDA device: the library checks that keep cudarc from panicking (it loads libcuda
//! lazily and panics when the library is absent), the context and its one stream, the
//! device's properties, and the NVRTC compiler for its architecture. Its
//! `kiln_kernels_cuda::host::Device` calls are in crate::memory.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream, DriverError};
use kiln_ir::backend::BackendError;
use kiln_kernels_cuda::host::Paths;

use crate::backend::CudaOptions;
use crate::compile::{Compiler, Nvrtc, Target, load_error};

pub(crate) const NAME: &str = "cuda";

/// Driver library names, tried in order (the driver installs `libcuda.so.1`; the
/// unversioned name comes with development packages).
#[cfg(not(windows))]
pub const CUDA_LIBS: &[&str] = &["libcuda.so.1", "libcuda.so"];
#[cfg(windows)]
pub const CUDA_LIBS: &[&str] = &["nvcuda.dll"];

pub(crate) fn driver(doing: &str, e: impl std::fmt::Display) -> BackendError {
    kiln_kernels_cuda::host::driver_error::<Gpu>(doing, e)
}

pub(crate) fn no_device(reason: impl Into<String>) -> BackendError {
    BackendError::NoDevice {
        backend: NAME,
        reason: reason.into(),
    }
}

/// Whether the CUDA driver library loads, checked before any cudarc call.
pub fn driver_library() -> Result<&'static str, String> {
    let mut tried = Vec::new();
    for &name in CUDA_LIBS {
        // SAFETY: loading the driver library runs its initialisers, which have no
        // preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => {
                // Stays loaded: cudarc opens it again (a no-op now), and the driver is not
                // made to be unloaded and reloaded.
                std::mem::forget(lib);
                return Ok(name);
            }
            Err(e) => tried.push(format!("{name} ({})", load_error(&e))),
        }
    }
    Err(format!("no CUDA driver: tried {}", tried.join(", ")))
}

/// An opened CUDA device and what it offers: the `Device` of [`crate::CudaBackend`].
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) name: String,
    /// Compute capability as major·10 + minor (90 for Hopper).
    pub(crate) arch: u32,
    pub(crate) sm_count: usize,
    pub(crate) warp_size: usize,
    pub(crate) memory_bytes: u64,
    /// Shared memory a block may opt in to.
    pub(crate) max_shared_bytes: usize,
    pub(crate) compiler: Compiler,
    /// What the options turn on and off (tensor cores only where mma.sync m16n8k16
    /// runs: sm_80+).
    pub(crate) paths: Paths,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({}, sm_{})", self.name, self.arch)
    }
}

impl Gpu {
    /// The device of `options`: NoDevice (never a panic) without the driver library,
    /// NVRTC, or a device.
    pub(crate) fn open(options: CudaOptions) -> Result<Gpu, BackendError> {
        let ordinal = options.device;
        driver_library().map_err(no_device)?;
        let nvrtc =
            Nvrtc::load(options.nvrtc_path.as_deref()).map_err(|e| no_device(e.to_string()))?;
        // cudarc panics on a driver that lacks a symbol of its bindings; that is a device
        // kiln cannot use, not a crash.
        let opened = std::panic::catch_unwind(|| -> Result<_, DriverError> {
            let count = CudaContext::device_count()?;
            if count <= ordinal as i32 {
                return Ok(None);
            }
            let ctx = CudaContext::new(ordinal)?;
            Ok(Some(ctx))
        });
        let ctx = match opened {
            Ok(Ok(Some(ctx))) => ctx,
            Ok(Ok(None)) => return Err(no_device(format!("no CUDA device {ordinal}"))),
            Ok(Err(e)) => return Err(no_device(format!("the CUDA driver: {e}"))),
            Err(_) => return Err(no_device("the CUDA driver is older than CUDA 13's API")),
        };
        let attr = |a: CUdevice_attribute| {
            ctx.attribute(a)
                .map_err(|e| driver("reading a device attribute", e))
        };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| driver("reading the compute capability", e))?;
        let arch = (major * 10 + minor) as u32;
        let warp_size = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE)? as usize;
        if warp_size != kiln_kernels_cuda::launch::WARP as usize {
            return Err(no_device(format!(
                "warps of {warp_size} lanes (the kernels take 32)"
            )));
        }
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
        let max_shared_bytes =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
                as usize;
        let name = ctx
            .name()
            .map_err(|e| driver("reading the device name", e))?;
        let memory_bytes = ctx
            .total_mem()
            .map_err(|e| driver("reading the device memory", e))? as u64;
        // One stream for everything: the launches of a step are ordered by it, so cudarc's
        // per-buffer event tracking (for several streams) is not needed.
        // SAFETY: no buffer exists yet, and every later use is on `stream` alone.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own, not the legacy default stream: only such a stream can be
        // captured into a CUDA graph (kiln_kernels_cuda::host replays the decode steps).
        let stream = ctx
            .new_stream()
            .map_err(|e| driver("creating the stream", e))?;
        // sm_90a's cubins run on 9.0 alone: the wgmma prefill there, sm_90 elsewhere.
        let wgmma = options.wgmma && options.tensor_cores && arch == 90;
        let target = if wgmma {
            Target::specific(arch)
        } else {
            arch.into()
        };
        Ok(Gpu {
            ctx,
            stream,
            name,
            arch,
            sm_count,
            warp_size,
            memory_bytes,
            max_shared_bytes,
            compiler: Compiler::new(nvrtc, target, &options.cache, options.debug),
            paths: Paths {
                tensor_cores: options.tensor_cores && arch >= 80,
                wgmma,
                decode_attention: options.decode_attention,
                graphs: options.graphs,
                debug: options.debug,
            },
        })
    }
}
