//! The backend: its options, and its name for kiln_kernels_cuda::host's backend on the
//! driver ([`Gpu`]).

use std::path::PathBuf;

use kiln_gpu_host::Cache;
use kiln_kernels_cuda::host::CudaBackendOn;

use crate::device::Gpu;

/// How to open the backend. `Default`: device 0, NVRTC from the loader's path, no disk
/// cache, CUDA graphs, the decode attention kernels and tensor cores where the device
/// has them, quiet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// The device ordinal.
    pub device: usize,
    /// An NVRTC library file to load before the usual names.
    pub nvrtc_path: Option<PathBuf>,
    /// Where compiled kernels (cubins) are kept.
    pub cache: Cache,
    /// Capture decode steps as CUDA graphs and replay them (kiln_kernels_cuda::host).
    pub graphs: bool,
    /// The split-K decode attention kernels for short steps (off: one block per (head,
    /// token) everywhere).
    pub decode_attention: bool,
    /// The tensor-core matmul and prefill attention on sm_80+ (mma.sync).
    pub tensor_cores: bool,
    /// On compute capability 9.0: the modules compiled for sm_90a and the prefill
    /// attention and packed-weight prefill matmul on the warpgroup MMA (wgmma); off: sm_90
    /// and mma.sync. Off by default
    /// until a GPU has checked the wgmma kernel (only the emulator's twins have run it:
    /// a misread descriptor layout would be wrong attention, silently).
    pub wgmma: bool,
    /// Print each compile and each launch (and run without graphs).
    pub debug: bool,
}

impl Default for CudaOptions {
    fn default() -> CudaOptions {
        CudaOptions {
            device: 0,
            nvrtc_path: None,
            cache: Cache::Off,
            graphs: true,
            decode_attention: true,
            tensor_cores: true,
            wgmma: false,
            debug: false,
        }
    }
}

/// The CUDA backend: kiln-kernels-cuda on the driver API (cudarc), kernels compiled by
/// NVRTC for the device and cached on disk. Its host logic (load, step, graphs, timers)
/// is kiln_kernels_cuda::host's, on [`Gpu`]'s driver calls. `new()`: device 0 with the
/// default options; no driver, no NVRTC or no device is `BackendError::NoDevice`, never
/// a panic.
pub type CudaBackend = CudaBackendOn<Gpu>;
