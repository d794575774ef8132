//! The CUDA backend's host logic, written once over a [`Device`] (issue 14's emulator
//! M2): the plan lowered onto device buffers with its modules and weights
//! ([`loaded`]), a step's launches with graphs and timers ([`run`], [`graphs`]), and the
//! `kiln_ir::Backend` itself ([`CudaBackendOn`]). backends/cuda implements `Device` on
//! the driver API (cudarc), backends/cuda-emu on the CPU emulator, so the code a GPU runs
//! is the code CI runs (the conformance targets `cuda_emu*`, tests/tests/cuda_emu.rs).
//! What is left to a device is the calls of its API: no op, no lowering, no step layout.

mod backend;
mod device;
mod graphs;
mod loaded;
mod memory;
mod run;

pub use backend::CudaBackendOn;
pub use device::{Contents, Device, Functions, Modules, Paths, driver_error, entry_table};
pub use memory::{Allocation, alloc};
