//! The device API behind the Backend (kiln-kernels-wgsl's `WgslBackend`): options,
//! device properties, how kernels are built, plan loading; the plan itself runs in
//! [`crate::loaded`].

use std::sync::Arc;

use kiln_gpu_host::Cache;
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, DeviceProperties, WeightSource};
use kiln_kernels_wgsl::backend::{Api, WgslBackend};
use kiln_kernels_wgsl::{Capabilities, Program};

use crate::device::Vk;
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
pub type VulkanBackend = WgslBackend<Vulkan>;

/// The opened Vulkan device and how kernels are built on it.
#[derive(Debug)]
pub struct Vulkan {
    build: Build,
    vk: Arc<Vk>,
}

impl Api for Vulkan {
    type Options = VulkanOptions;
    type Plan = VulkanPlan;

    fn open(options: VulkanOptions) -> Result<(Vulkan, DeviceProperties), BackendError> {
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
        Ok((Vulkan { build, vk }, properties))
    }

    fn allowing_cpu(options: VulkanOptions) -> VulkanOptions {
        VulkanOptions {
            allow_cpu: true,
            ..options
        }
    }

    fn capabilities(&self, properties: &DeviceProperties) -> Capabilities {
        let align = self.vk.info.limits.min_uniform_buffer_offset_alignment;
        let caps = Capabilities::of(properties, align);
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
    ) -> Result<VulkanPlan, BackendError> {
        VulkanPlan::new((&self.vk, &self.build), program, plan, weights)
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights in device memory (vectors as f32), the params blocks, the logits
        // readback buffer.
        let align = self.vk.info.limits.min_uniform_buffer_offset_alignment;
        VulkanPlan::device_bytes(plan, align.max(16)) as usize
    }

    fn device_name(&self) -> String {
        self.vk.info.name.clone()
    }

    fn debug(&self) -> bool {
        self.build.debug
    }

    fn wait_idle(&self) -> Result<(), BackendError> {
        self.vk.wait_idle()
    }
}

/// What the Vulkan backend reports beyond the Backend trait.
pub trait VulkanInfo {
    /// Whether the kernels use subgroup operations on this device.
    fn uses_subgroups(&self) -> bool;
    /// What the kernel caches did during the last `load_plan`.
    fn cache_stats(&self) -> Option<CacheStats>;
}

impl VulkanInfo for VulkanBackend {
    fn uses_subgroups(&self) -> bool {
        self.api().build.subgroups
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        self.plan().map(|p| p.cache)
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
