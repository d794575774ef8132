//! kiln-backend-cuda: the CUDA backend. The driver API comes through cudarc, loaded at run
//! time, so the crate builds on a machine without CUDA; kernels (kiln-kernels-cuda) are
//! compiled by NVRTC for the device's architecture at first use and cached on disk. A
//! machine without a driver or without NVRTC gets `BackendError::NoDevice`, never a
//! panic: the libraries are checked with libloading before cudarc touches them.
//!
//! kiln-kernels-cuda lowers the plan (typed calls with 64-bit device addresses, the
//! weights layout, each call's launch geometry) and runs it (`kiln_kernels_cuda::host`:
//! buffers, modules, steps, graphs, timers, over a `host::Device`); this crate is that
//! `Device` on the driver: the library checks, the context and its one stream, NVRTC,
//! the driver calls (memory, launches, events, stream capture), and the device's
//! ceilings (copy bandwidth, the mma.sync f16 peak) for `kiln bench --kernels`.

mod backend;
mod ceilings;
pub mod compile;
mod device;
mod memory;

pub use backend::{CudaBackend, CudaOptions};
pub use device::Gpu;
pub use kiln_gpu_host::Cache;
