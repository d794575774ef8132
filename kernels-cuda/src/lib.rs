//! kiln-kernels-cuda: the CUDA kernels of kiln, one fused op per `.cu` file (the stems of
//! `kiln_ir::Op::name`), embedded as text, and the CUDA backend's own lowering of a plan
//! onto them. Pure Rust: no CUDA here, so its tests run anywhere.
//!
//! - [`variant`]: the kernels, their variants (weight type, KV type) and the symbol of
//!   every entry point (`matvec_q4_0_t8`, `matmul_f16_mv8`, `attention_fp8_decode`).
//! - [`args`]: each kernel's argument struct, declared once for Rust and C (64-bit device
//!   addresses; kernels take it by value).
//! - [`sources`]: the `.cu` / `.cuh` files and the assembly of one self-contained source
//!   per variant (textual `#include`s, no toolkit headers), plus argmax's and top-k's.
//! - [`weights`]: where each weight lies in the weights buffer (64-bit offsets), and the
//!   bytes uploaded there (packed for every quantized type the kernels read, `repack::PACKED`).
//! - [`lower`]: a plan to typed calls ([`lower::lower`]), and each call's launches for a
//!   step's shape ([`lower::geometry`]).
//! - [`launch`]: block sizes, tiles and the attention paths' geometry.
//! - [`repack`] and [`matvec`]: the decode path (issue 14): quantized weights repacked
//!   into quant and scale planes at upload, activations quantized to q8_1 once per
//!   launch, dp4a matvecs over token tiles up to 32 (`cuda/mv/`), and their scalar twin
//!   ([`matvec::twin`]); the lowering emits them for every matmul of a packed type.
//! - [`mmq`]: the prefill path of the packed types: the same q8_1 activations times the
//!   packed weights on the int8 tensor cores (`cuda/matmul_mmq.cu`, `cuda/mmq/`), a
//!   cp.async pipeline of 128-row tiles.
//! - [`peak`]: the tensor-core peak kernel of the backend's ceilings.
//! - [`host`]: the CUDA backend's host logic over a [`host::Device`] (memory, modules,
//!   launches, graphs, timers): backends/cuda's driver and backends/cuda-emu's emulator
//!   run the same code.

pub mod args;
pub mod host;
pub mod launch;
pub mod lower;
pub mod matvec;
pub mod mmq;
pub mod peak;
pub mod repack;
pub mod sources;
pub mod variant;
pub mod weights;

#[cfg(test)]
mod attention_tests;
#[cfg(test)]
mod interp_tests;
#[cfg(test)]
mod lower_tests;
#[cfg(test)]
mod tests;

pub use launch::Launch;
pub use lower::{Args, Buffers, Call, LowerError, Lowered, lower};
pub use variant::{Entry, Kernel, Variant};
