//! kiln-backend-wgpu: the WebGPU backend. wgpu runs the WGSL kernels of
//! kiln-kernels-wgsl on Vulkan, Metal or DX12 (on a Linux machine without a GPU, Mesa's
//! lavapipe). The kernels crate decides every dispatch (pipeline, bindings, params,
//! workgroups); this crate owns the device: buffers, pipelines built once at
//! `load_plan`, bind groups reused, one command encoder per step, timestamp queries for
//! `launch_times`.

mod backend;
mod device;
mod loaded;

pub use backend::{Wgpu, WgpuBackend};
pub use kiln_kernels_wgsl::backend::{CoopMatrix, WgslOptions};
pub use loaded::WgpuPlan;
