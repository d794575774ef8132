//! The device API behind the Backend (kiln-kernels-wgsl's `WgslBackend`): options,
//! device properties, plan loading; the plan itself runs in [`crate::loaded`].

use std::sync::Arc;

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, DeviceProperties, WeightSource};
use kiln_kernels_wgsl::backend::{Api, WgslBackend};
use kiln_kernels_wgsl::{Capabilities, Program};

use crate::device::Gpu;
use crate::loaded::WgpuPlan;

/// The WebGPU backend: wgpu on Vulkan, Metal or DX12, running kiln-kernels-wgsl.
pub type WgpuBackend = WgslBackend<Wgpu>;

/// How to open the backend. `Default`: a GPU adapter only, subgroups where it has them,
/// quiet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgpuOptions {
    /// Take a CPU implementation (lavapipe, WARP) when there is no GPU adapter.
    pub allow_cpu: bool,
    /// Use subgroup operations where the adapter has them (off: the workgroup-memory
    /// reductions every device runs).
    pub subgroups: bool,
    /// Print each kernel built and, when a step shape is first prepared, each
    /// dispatch's workgroups to stderr.
    pub debug: bool,
    /// Make weights buffers of at most this many bytes, below the device's largest
    /// buffer (tests force the weights over several buffers with it).
    pub max_weights_buffer: Option<u64>,
}

impl Default for WgpuOptions {
    fn default() -> WgpuOptions {
        WgpuOptions {
            allow_cpu: false,
            subgroups: true,
            debug: false,
            max_weights_buffer: None,
        }
    }
}

/// The opened wgpu device.
#[derive(Debug)]
pub struct Wgpu {
    gpu: Arc<Gpu>,
    debug: bool,
}

impl Api for Wgpu {
    type Options = WgpuOptions;
    type Plan = WgpuPlan;

    fn open(options: WgpuOptions) -> Result<(Wgpu, DeviceProperties), BackendError> {
        let gpu = Gpu::open(options.allow_cpu)?;
        let (info, limits) = (&gpu.info, &gpu.limits);
        let subgroups = options.subgroups && gpu.features.contains(wgpu::Features::SUBGROUP);
        let sizes = (
            info.subgroup_min_size as usize,
            info.subgroup_max_size as usize,
        );
        let properties = DeviceProperties {
            name: format!("{} ({:?})", info.name, info.backend),
            compute_units: 1,
            subgroup_size: subgroups.then_some(sizes.0),
            subgroup_sizes: Some(sizes).filter(|&(min, _)| min > 0),
            max_buffer_bytes: Some(
                (options.max_weights_buffer)
                    .map_or(limits.max_buffer_size, |m| m.min(limits.max_buffer_size)),
            ),
            max_binding_bytes: Some(limits.max_storage_buffer_binding_size),
            shared_memory_bytes: Some(limits.max_compute_workgroup_storage_size as usize),
            ..DeviceProperties::default()
        };
        let gpu = Arc::new(gpu);
        Ok((
            Wgpu {
                gpu,
                debug: options.debug,
            },
            properties,
        ))
    }

    fn allowing_cpu(options: WgpuOptions) -> WgpuOptions {
        WgpuOptions {
            allow_cpu: true,
            ..options
        }
    }

    fn capabilities(&self, properties: &DeviceProperties) -> Capabilities {
        let caps = Capabilities::of(properties, self.uniform_align());
        // A window's base in its buffer is a dynamic offset, a u32.
        Capabilities {
            max_buffer: caps.max_buffer.min(1 << 32),
            ..caps
        }
    }

    fn load(
        &self,
        program: &Program,
        plan: &Plan,
        weights: &dyn WeightSource,
    ) -> Result<WgpuPlan, BackendError> {
        WgpuPlan::new(&self.gpu, program, plan, weights, self.debug)
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights are uploaded to the device (vectors as f32), plus the params blocks.
        kiln_kernels_wgsl::program::load_bytes(plan, self.uniform_align()) as usize
    }

    fn device_name(&self) -> String {
        self.gpu.info.name.clone()
    }

    fn debug(&self) -> bool {
        self.debug
    }

    fn wait_idle(&self) -> Result<(), BackendError> {
        self.gpu.wait()?;
        self.gpu.check("synchronizing")
    }
}

impl Wgpu {
    fn uniform_align(&self) -> u64 {
        u64::from(self.gpu.limits.min_uniform_buffer_offset_alignment)
    }
}
