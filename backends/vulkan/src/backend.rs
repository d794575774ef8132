//! The Backend implementation: options, device, plan loading; the plan itself runs in
//! [`crate::loaded`].

use std::sync::Arc;

use kiln_gpu_host::{Cache, no_plan};
use kiln_ir::backend::{Backend, BackendError, DeviceProperties, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};
use kiln_kernels_wgsl::run::Loaded;
use kiln_kernels_wgsl::{Capabilities, Program};

use crate::device::{NAME, Vk};
use crate::loaded::{Build, VulkanPlan};
use crate::pipeline_cache::CacheStats;
use kiln_kernels_wgsl::program::subgroup_size;

/// How to open the backend. `Default`: a GPU only, subgroups where the device has them
/// (the largest size it offers up to a workgroup), no disk cache, quiet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VulkanOptions {
    /// Take a CPU implementation (lavapipe) when there is no GPU.
    pub allow_cpu: bool,
    /// Use subgroup operations where the device has them (off: the workgroup-memory
    /// reductions every device runs).
    pub subgroups: bool,
    /// The subgroup size to require where the device has subgroup size control (clamped
    /// to what it offers); None: the largest up to a workgroup.
    pub subgroup_size: Option<u32>,
    /// Where compiled kernels (SPIR-V, the pipeline cache) are kept.
    pub cache: Cache,
    /// Print each kernel built and, when a step shape is recorded, each dispatch.
    pub debug: bool,
    /// Make weights buffers of at most this many bytes, below the device's largest
    /// allocation (tests force the weights over several buffers with it).
    pub max_weights_buffer: Option<u64>,
}

impl Default for VulkanOptions {
    fn default() -> VulkanOptions {
        VulkanOptions {
            allow_cpu: false,
            subgroups: true,
            subgroup_size: None,
            cache: Cache::Off,
            debug: false,
            max_weights_buffer: None,
        }
    }
}

/// The Vulkan backend (ash), running kiln-kernels-wgsl compiled to SPIR-V by naga.
#[derive(Debug)]
pub struct VulkanBackend {
    properties: DeviceProperties,
    build: Build,
    loaded: Option<Loaded<VulkanPlan>>,
    // Last: everything above holds an Arc of the device and is dropped first.
    vk: Arc<Vk>,
}

impl VulkanBackend {
    /// Open the best GPU with the default options: never a CPU implementation, so that
    /// the engine's choice of the best backend never lands on a software rasterizer. No
    /// loader or no device is `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<VulkanBackend, BackendError> {
        VulkanBackend::with_options(VulkanOptions::default())
    }

    /// Open the best device, a CPU implementation (lavapipe) included: the tests' and
    /// benchmarks' constructor.
    pub fn any_device() -> Result<VulkanBackend, BackendError> {
        VulkanBackend::with_options(VulkanOptions {
            allow_cpu: true,
            ..VulkanOptions::default()
        })
    }

    pub fn with_options(options: VulkanOptions) -> Result<VulkanBackend, BackendError> {
        let vk = Arc::new(Vk::open(options.allow_cpu)?);
        let info = &vk.info;
        let subgroups = options.subgroups && info.subgroup_size.is_some();
        let build = Build {
            subgroups,
            // Required where the device has size control.
            subgroup_size: info.size_control.filter(|_| subgroups).and_then(|s| {
                subgroup_size(
                    (s.min, s.max),
                    s.max_workgroup_subgroups,
                    options.subgroup_size,
                )
            }),
            cache: options.cache,
            debug: options.debug,
        };
        let range = info.size_control.map(|s| (s.min as usize, s.max as usize));
        let limits = &info.limits;
        let properties = DeviceProperties {
            name: format!("{} (Vulkan {})", info.name, info.api()),
            compute_units: 1,
            subgroup_size: build
                .subgroup_size
                .or(info.subgroup_size)
                .filter(|_| subgroups)
                .map(|s| s as usize),
            subgroup_sizes: range.or(info.subgroup_size.map(|s| (s as usize, s as usize))),
            memory_bytes: Some(info.memory_bytes).filter(|&b| b > 0),
            max_buffer_bytes: Some(info.max_allocation_bytes)
                .filter(|&b| b > 0)
                .map(|b| options.max_weights_buffer.map_or(b, |m| m.min(b))),
            max_binding_bytes: Some(u64::from(limits.max_storage_buffer_range)),
            shared_memory_bytes: Some(limits.max_compute_shared_memory_size as usize),
            has_f16: false,
        };
        Ok(VulkanBackend {
            properties,
            build,
            loaded: None,
            vk,
        })
    }

    /// Whether the kernels use subgroup operations on this device.
    pub fn uses_subgroups(&self) -> bool {
        self.build.subgroups
    }

    /// What the kernel caches did during the last `load_plan`.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.loaded.as_ref().map(|l| l.device.cache)
    }

    fn loaded(&mut self) -> Result<&mut Loaded<VulkanPlan>, BackendError> {
        self.loaded.as_mut().ok_or_else(|| no_plan(NAME))
    }
}

impl Backend for VulkanBackend {
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
        let align = self.vk.info.limits.min_uniform_buffer_offset_alignment;
        let caps = Capabilities::of(&self.properties, align);
        // A window's base in its buffer is a dynamic offset, a u32.
        let caps = Capabilities {
            max_buffer: caps.max_buffer.min(1 << 32),
            ..caps
        };
        let program = Program::new(plan, weights, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(NAME))?;
        let device = VulkanPlan::new((&self.vk, &self.build), &program, plan, weights)?;
        self.loaded = Some(Loaded::new(program, device, kv, self.build.debug));
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
        match &mut self.loaded {
            Some(l) => l.synchronize(),
            None => self.vk.wait_idle(),
        }
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights in device memory (vectors as f32), the params blocks, the logits
        // readback buffer.
        let align = self.vk.info.limits.min_uniform_buffer_offset_alignment;
        VulkanPlan::device_bytes(plan, align.max(16)) as usize
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let device = self.vk.info.name.clone();
        self.loaded()?.launch_times(&device)
    }
}

#[cfg(test)]
mod tests {
    /// The engine may move a backend to its serving thread.
    #[test]
    fn the_backend_is_send() {
        fn send<T: Send>() {}
        send::<super::VulkanBackend>();
    }
}
