//! kiln-backend-cuda: the CUDA backend. The driver API comes through cudarc, loaded at run
//! time, so the crate builds on a machine without CUDA; kernels (kiln-kernels-cuda) are
//! compiled by NVRTC for the device's architecture at first use and cached on disk. A
//! machine without a driver or without NVRTC gets `BackendError::NoDevice`, never a
//! panic: the libraries are checked with libloading before cudarc touches them.
//!
//! The kernels crate and kiln-kernels-wgsl decide every dispatch (the same `Program` as
//! the WGSL backends: params blocks, step buffer, weights buffer); this crate owns the
//! device: buffers, modules, one stream, events for `launch_times`.

mod backend;
pub mod compile;
mod device;
mod graphs;
mod loaded;
mod memory;

pub use backend::{CudaBackend, CudaOptions};
pub use kiln_gpu_host::Cache;
