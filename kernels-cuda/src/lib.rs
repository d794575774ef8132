//! kiln-kernels-cuda: the CUDA kernels of kiln, one fused op per `.cu` file with the
//! stems of kernels-wgsl (the stems of `kiln_ir::Op::name`), embedded as text, and what a
//! host needs to launch them. Pure Rust: no CUDA here, so its tests run anywhere.
//!
//! The CUDA backend runs the same [`Program`](kiln_kernels_wgsl::Program) as the WGSL
//! backends: the same dispatches, params blocks (the same words in the same order), step
//! buffer and weights buffer. Only the kernels differ, and they mirror the WGSL ones,
//! which the conformance suite verified on lavapipe. This crate adds:
//!
//! - [`sources`]: the `.cu` / `.cuh` files and the assembly of one self-contained source
//!   per [`Variant`](kiln_kernels_wgsl::Variant) (textual `#include`s, no toolkit
//!   headers), plus the greedy LM-head kernel ([`sources::argmax_source`]).
//! - [`launch`]: entry point, grid, block and shared memory of each dispatch for a step's
//!   token count, and the choice between the matrix-vector kernel (up to 8 tokens) and the
//!   tensor-core kernel (prefill).
//! - [`repack`] and [`matvec`]: the decode path of the CUDA backend's own lowering (issue
//!   14): quantized weights repacked into quant and scale planes, activations quantized
//!   to q8_1 once per launch, dp4a matvecs over token tiles up to 32 (`cuda/mv/`), and
//!   their scalar twin ([`matvec::twin`]).

pub mod args;
pub mod launch;
pub mod matvec;
pub mod repack;
pub mod sources;

#[cfg(test)]
mod attention_tests;
#[cfg(test)]
mod tests;

pub use launch::{Launch, launch};
