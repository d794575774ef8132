//! kiln-backend-cpu: the CPU backend. It runs a compiled [`kiln_ir::Plan`] launch by
//! launch with threaded kernels (one file per fused op in `kernels/`), keeps weights in
//! the model's memory map (no copy), and stores the KV cache in FP8 or F16 pages.

mod backend;
mod ceilings;
mod exec;
pub mod kernels;
pub mod pool;
pub mod simd;

pub use backend::{CpuBackend, CpuOptions};
