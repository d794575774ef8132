//! kiln-backend-cuda-emu: kiln's CUDA kernels executed on the CPU, so that machines
//! without a GPU (CI, most development sessions) run the real CUDA C, not a Rust twin of
//! it, against the CPU reference.
//!
//! - [`Module`]: a kernel module (a `kiln_kernels_cuda::Variant`'s assembled source, as
//!   NVRTC gets it) compiled by the host C++ compiler ([`compile`]) against a CUDA
//!   dialect (`src/host/dialect.h`), a fiber runtime (`src/host/runtime.h`: a block's
//!   threads are cooperative ucontext fibers, `__syncthreads` a block barrier, warp
//!   collectives an exchange between the 32 lanes) and a twin of the kernels' only PTX,
//!   `kernels-cuda/src/cuda/ptx.cuh` (`src/host/ptx.h`: mma.sync m16n8k16, cp.async,
//!   the f16 / E4M3 conversions, dp4a); launched with device addresses that are host
//!   addresses.
//! - [`EmuDevice`]: `kiln_kernels_cuda::host::Device` on those modules and host memory,
//!   and [`EmuBackend`], the CUDA backend's own host logic on it
//!   (`CudaBackendOn<EmuDevice>`: lowering, launch geometry, step buffer, weight upload,
//!   graphs, timers, the code backends/cuda runs on a GPU), which the conformance suite
//!   runs against the CPU reference (tests/tests/conformance.rs, targets `cuda_emu*`).
//!
//! What it does not model: timing, memory coalescing, bank conflicts, register limits,
//! concurrent blocks (blocks run one after another, so a kernel whose blocks wait on one
//! another would deadlock here as well — none do).

mod backend;
pub mod cache;
pub mod compile;
mod error;
pub mod memory;
mod module;
pub mod source;

pub use backend::{EmuBackend, EmuDevice, EmuOptions, NAME};
pub use error::EmuError;
pub use module::Module;
