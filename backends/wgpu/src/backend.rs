//! The device API behind the Backend (kiln-kernels-wgsl's `WgslBackend`): what the
//! opened adapter offers, plan loading; the plan itself runs in [`crate::loaded`].

use std::sync::Arc;

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_kernels_wgsl::Program;
use kiln_kernels_wgsl::backend::{Adapter, Api, WgslBackend, WgslOptions};

use crate::device::Gpu;
use crate::loaded::WgpuPlan;

/// The WebGPU backend: wgpu on Vulkan, Metal or DX12, running kiln-kernels-wgsl.
pub type WgpuBackend = WgslBackend<Wgpu>;

/// The opened wgpu device.
#[derive(Debug)]
pub struct Wgpu {
    gpu: Arc<Gpu>,
    debug: bool,
}

impl Api for Wgpu {
    type Plan = WgpuPlan;

    fn open(options: &WgslOptions) -> Result<(Wgpu, Adapter), BackendError> {
        let gpu = Gpu::open(options.allow_cpu, options.shader_f16)?;
        let (info, limits) = (&gpu.info, &gpu.limits);
        let subgroups = gpu.features.contains(wgpu::Features::SUBGROUP);
        let sizes = (info.subgroup_min_size, info.subgroup_max_size);
        let adapter = Adapter {
            name: info.name.clone(),
            api: format!("{:?}", info.backend),
            subgroup_size: subgroups.then_some(sizes.0),
            subgroup_sizes: Some(sizes).filter(|&(min, _)| min > 0),
            shader_f16: gpu.features.contains(wgpu::Features::SHADER_F16),
            // wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX offers 8 × 8 f32 matrices (Metal's
            // simdgroup matrices), not the 16 × 16 f16 × f16 → f32 of the coop tiles:
            // f32 inputs would double their workgroup memory and traffic and gain no
            // f16 tensor-core rate, and no device here could test it. On Vulkan devices
            // the Vulkan backend runs the coop tiles; wgpu keeps the portable tiles.
            coop_matrix: false,
            memory_bytes: None,
            max_buffer_bytes: Some(limits.max_buffer_size),
            max_binding_bytes: limits.max_storage_buffer_binding_size,
            max_uniform_binding: limits.max_uniform_buffer_binding_size,
            shared_memory_bytes: u64::from(limits.max_compute_workgroup_storage_size),
            uniform_align: u64::from(limits.min_uniform_buffer_offset_alignment),
            storage_align: u64::from(limits.min_storage_buffer_offset_alignment),
        };
        let gpu = Arc::new(gpu);
        let debug = options.debug;
        Ok((Wgpu { gpu, debug }, adapter))
    }

    fn load(
        &self,
        program: &Program,
        plan: &Plan,
        weights: &dyn WeightSource,
    ) -> Result<WgpuPlan, BackendError> {
        WgpuPlan::new(&self.gpu, program, plan, weights, self.debug)
    }

    fn wait_idle(&self) -> Result<(), BackendError> {
        self.gpu.wait("synchronizing")
    }
}
