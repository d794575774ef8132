//! kiln-backend-cuda: the CUDA backend. The driver API comes through cudarc, loaded at run
//! time, so the crate builds on a machine without CUDA; kernels (kiln-kernels-cuda) are
//! compiled by NVRTC for the device's architecture at first use and cached on disk. A
//! machine without a driver or without NVRTC gets `BackendError::NoDevice`, never a
//! panic: the libraries are checked with libloading before cudarc touches them.
//!
//! kiln-kernels-cuda lowers the plan (typed calls with 64-bit device addresses, the
//! weights layout, each call's launch geometry); this crate owns the device: buffers,
//! modules, one stream, graphs, events for `launch_times`, and the device's ceilings
//! (copy bandwidth, the mma.sync f16 peak) for `kiln bench --kernels`.

mod backend;
mod ceilings;
pub mod compile;
mod device;
mod graphs;
mod loaded;
mod memory;
mod run;

pub use backend::{CudaBackend, CudaOptions};
pub use kiln_gpu_host::Cache;
