//! kiln-kernels-wgsl: the WGSL kernels of kiln, one fused op per file (the stems of
//! `kiln_ir::Op::name`), and the backend-neutral host logic that the WebGPU (wgpu) and
//! Vulkan backends share. The graph decides, the backend executes:
//!
//! - [`sources`]: the `.wgsl` files embedded with `include_str!`, and the assembly of a
//!   kernel variant (weight dtype, KV dtype, subgroup or workgroup reductions).
//! - [`program`]: a [`Plan`](kiln_ir::Plan) turned into [`Program`]: the pipelines to
//!   build, and for every launch its dispatches (pipeline, resources to bind, a params
//!   block as bytes, workgroup counts for a step).
//! - [`step`]: the step buffer (token ids, positions, block tables, RoPE cos/sin), written
//!   in kiln-gpu-host for every GPU kernel set; the step checks are kiln-ir's
//!   (`StepLimits`), the same for every backend.
//! - [`weights`]: which weights buffer each weight lives in and where, the bytes to
//!   upload.
//!
//! - [`backend`]: the Backend of every WGSL device API ([`backend::Api`]): the options,
//!   the device's properties and the program's capabilities from what the API reports.
//! - [`buffers`]: the buffers a program binds, and what each binding covers.
//! - [`run`]: a program on a device, run the same way by every WGSL backend (step
//!   buffer, dispatch lists per step shape, logits, KV page copies, timestamps); a
//!   backend implements [`run::Device`], the calls of its API.
//! - [`spirv`] (the `spirv` feature): the kernels as SPIR-V with naga, through the disk
//!   cache (what the Vulkan backend builds its pipelines from).
//!
//! A backend owns five buffers ([`Resource`]) and runs each dispatch in order; nothing in
//! it depends on which op it runs.

pub mod backend;
pub mod buffers;
pub mod program;
pub mod repack;
pub mod run;
pub mod sources;
#[cfg(any(feature = "spirv", test))]
pub mod spirv;
pub mod weights;

/// The step buffer (kiln-gpu-host's, shared with the CUDA kernels).
pub use kiln_gpu_host::step;

#[cfg(test)]
mod tests;

use kiln_ir::backend::DeviceProperties;

pub use program::{Dispatch, Grid, Pipeline, Program, Readback, Resource, Run, StepList};
pub use sources::{Coop, Variant};

/// What the device offers that the kernels can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Subgroup operations in compute shaders (wgpu's Features::SUBGROUP).
    pub subgroups: bool,
    /// f16 arithmetic in shaders (WebGPU's shader-f16; Vulkan's shaderFloat16 with 16-bit
    /// storage): the f16 variants ([`Variant::has_f16`]).
    pub shader_f16: bool,
    /// The f16 variants' tiles multiplied as cooperative matrices (natively, where the
    /// device has them; or their twin, a test's choice); None: by their own loop.
    pub gemm_coop: Option<Coop>,
    /// The largest storage buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// The largest buffer, in bytes: each weights buffer holds at most this (a dispatch
    /// binds a window of one).
    pub max_buffer: u64,
    /// Alignment of uniform buffer offsets (256 on most devices).
    pub uniform_align: u64,
}

impl Capabilities {
    /// What a device of `properties` offers: subgroup variants where it reports a
    /// subgroup size (a backend leaves it None when they are off), f16 variants where it
    /// has f16 arithmetic (`has_f16`, false when they are off), bindings up to its
    /// largest; params blocks at `uniform_align`. No cooperative matrices (the
    /// backend's [`crate::backend::Adapter`] says where there are).
    pub fn of(properties: &DeviceProperties, uniform_align: u64) -> Capabilities {
        Capabilities {
            subgroups: properties.subgroup_size.is_some(),
            shader_f16: properties.has_f16,
            gemm_coop: None,
            max_storage_binding: properties.max_binding_bytes.unwrap_or(u64::MAX),
            max_buffer: properties.max_buffer_bytes.unwrap_or(u64::MAX),
            uniform_align,
        }
    }
}

/// Why a plan or a step cannot run on these kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("bad step: {0}")]
    BadStep(String),
    #[error("weight {name:?}: {reason}")]
    Weight { name: String, reason: String },
    /// A kernel that does not compile (naga's message, with the kernel's name).
    #[error("{0}")]
    Compile(String),
}

impl From<kiln_gpu_host::HostError> for KernelError {
    fn from(e: kiln_gpu_host::HostError) -> KernelError {
        match e {
            kiln_gpu_host::HostError::BadStep(reason) => KernelError::BadStep(reason),
            kiln_gpu_host::HostError::Weight { name, reason } => {
                KernelError::Weight { name, reason }
            }
        }
    }
}

impl KernelError {
    /// The same error as a backend's (every backend on these kernels maps it alike).
    pub fn for_backend(self, backend: &'static str) -> kiln_ir::backend::BackendError {
        use kiln_ir::backend::BackendError;
        match self {
            KernelError::Unsupported(what) => BackendError::Unsupported { backend, what },
            KernelError::BadStep(reason) => BackendError::BadStep { backend, reason },
            KernelError::Compile(message) => BackendError::Driver { backend, message },
            KernelError::Weight { name, reason } => BackendError::Weight {
                backend,
                name,
                reason,
            },
        }
    }
}
