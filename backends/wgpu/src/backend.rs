//! The Backend implementation: options, device, plan loading; the plan itself runs in
//! [`crate::loaded`].

use std::sync::Arc;

use kiln_gpu_host::no_plan;
use kiln_ir::backend::{Backend, BackendError, DeviceProperties, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};
use kiln_kernels_wgsl::run::Loaded;
use kiln_kernels_wgsl::{Capabilities, Program};

use crate::device::{Gpu, NAME};
use crate::loaded::WgpuPlan;

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

/// The WebGPU backend: wgpu on Vulkan, Metal or DX12, running kiln-kernels-wgsl.
#[derive(Debug)]
pub struct WgpuBackend {
    gpu: Arc<Gpu>,
    properties: DeviceProperties,
    debug: bool,
    loaded: Option<Loaded<WgpuPlan>>,
}

impl WgpuBackend {
    /// Open the best GPU adapter with the default options: never a CPU implementation,
    /// so that the engine's choice of the best backend never lands on a software
    /// rasterizer. No adapter is `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<WgpuBackend, BackendError> {
        WgpuBackend::with_options(WgpuOptions::default())
    }

    /// Open the best adapter, a CPU implementation (lavapipe) included: the tests' and
    /// benchmarks' constructor.
    pub fn any_adapter() -> Result<WgpuBackend, BackendError> {
        WgpuBackend::with_options(WgpuOptions {
            allow_cpu: true,
            ..WgpuOptions::default()
        })
    }

    pub fn with_options(options: WgpuOptions) -> Result<WgpuBackend, BackendError> {
        let gpu = Gpu::open(options.allow_cpu)?;
        let (info, limits) = (&gpu.info, &gpu.limits);
        let subgroups = options.subgroups && gpu.features.contains(wgpu::Features::SUBGROUP);
        let properties = DeviceProperties {
            name: format!("{} ({:?})", info.name, info.backend),
            compute_units: 1,
            subgroup_size: subgroups.then_some(info.subgroup_min_size as usize),
            subgroup_sizes: Some((
                info.subgroup_min_size as usize,
                info.subgroup_max_size as usize,
            ))
            .filter(|&(min, _)| min > 0),
            max_buffer_bytes: Some(
                options
                    .max_weights_buffer
                    .map_or(limits.max_buffer_size, |m| m.min(limits.max_buffer_size)),
            ),
            max_binding_bytes: Some(limits.max_storage_buffer_binding_size),
            shared_memory_bytes: Some(limits.max_compute_workgroup_storage_size as usize),
            ..DeviceProperties::default()
        };
        Ok(WgpuBackend {
            gpu: Arc::new(gpu),
            properties,
            debug: options.debug,
            loaded: None,
        })
    }

    fn loaded(&mut self) -> Result<&mut Loaded<WgpuPlan>, BackendError> {
        self.loaded.as_mut().ok_or_else(|| no_plan(NAME))
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        kiln_kernels_wgsl::program::supports_device(op, graph, &self.properties)
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.loaded = None;
        let align = u64::from(self.gpu.limits.min_uniform_buffer_offset_alignment);
        let caps = Capabilities::of(&self.properties, align);
        let program = Program::new(plan, weights, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(NAME))?;
        let device = WgpuPlan::new(&self.gpu, &program, plan, weights, self.debug)?;
        self.loaded = Some(Loaded::new(program, device, kv, self.debug));
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        self.loaded()?.execute(step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_logits(out)
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, n_tokens: usize) -> Result<(), BackendError> {
        self.loaded()?.copy_kv_page(src, dst, n_tokens)
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.gpu.wait()?;
        self.gpu.check("synchronizing")
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights are uploaded to the device (vectors as f32), plus the params blocks.
        let align = self.gpu.limits.min_uniform_buffer_offset_alignment;
        kiln_kernels_wgsl::program::load_bytes(plan, u64::from(align)) as usize
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let device = self.gpu.info.name.clone();
        self.loaded()?.launch_times(&device)
    }
}
