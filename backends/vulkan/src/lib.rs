//! kiln-backend-vulkan: the Vulkan backend on ash. It runs the WGSL kernels of
//! kiln-kernels-wgsl, turned into SPIR-V by naga at first use and cached on disk (with
//! the driver's pipeline cache). The kernels crate decides every dispatch (pipeline,
//! bindings, params, workgroups); this crate owns the device: device-local buffers filled
//! through staging copies, pipelines built once at `load_plan`, one descriptor set with
//! the params as a dynamic uniform offset, a command buffer per step shape recorded once
//! and replayed, subgroup size control, timestamp queries for `launch_times`.
//!
//! The loader (libvulkan) is opened at run time: without it, or without a device, the
//! backend is `BackendError::NoDevice`.

mod backend;
mod buffer;
mod device;
mod loaded;
mod objects;
mod pipeline_cache;

pub use backend::{Vulkan, VulkanBackend, VulkanInfo};
pub use kiln_gpu_host::Cache;
pub use kiln_kernels_wgsl::Coop;
pub use kiln_kernels_wgsl::backend::{CoopMatrix, WgslOptions};
pub use loaded::VulkanPlan;
pub use pipeline_cache::CacheStats;
