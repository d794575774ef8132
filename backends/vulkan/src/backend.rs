//! The device API behind the Backend (kiln-kernels-wgsl's `WgslBackend`): what the
//! opened device offers, how kernels are built, plan loading; the plan itself runs in
//! [`crate::loaded`].

use std::sync::Arc;

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_kernels_wgsl::Program;
use kiln_kernels_wgsl::backend::{Adapter, Api, CoopMatrix, WgslBackend, WgslOptions};
use kiln_kernels_wgsl::program::subgroup_size;

use crate::device::Vk;
use crate::loaded::{Build, VulkanPlan};
use crate::pipeline_cache::CacheStats;

/// The Vulkan backend (ash), running kiln-kernels-wgsl compiled to SPIR-V by naga.
pub type VulkanBackend = WgslBackend<Vulkan>;

/// The opened Vulkan device and how kernels are built on it.
#[derive(Debug)]
pub struct Vulkan {
    build: Build,
    vk: Arc<Vk>,
}

impl Api for Vulkan {
    type Plan = VulkanPlan;

    fn open(options: &WgslOptions) -> Result<(Vulkan, Adapter), BackendError> {
        let coop = options.coop_matrix == CoopMatrix::Auto;
        let vk = Arc::new(Vk::open(options.allow_cpu, options.shader_f16, coop)?);
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
            cache: options.cache.clone(),
            debug: options.debug,
        };
        let limits = &info.limits;
        let adapter = Adapter {
            name: info.name.clone(),
            api: format!("Vulkan {}", info.api()),
            subgroup_size: build.subgroup_size.or(info.subgroup_size),
            subgroup_sizes: (info.size_control.map(|s| (s.min, s.max)))
                .or(info.subgroup_size.map(|s| (s, s))),
            shader_f16: info.shader_f16,
            // The coop tiles pick their blocks by subgroup_id: subgroup builtins.
            coop_matrix: info.coop_matrix && subgroups,
            memory_bytes: Some(info.memory_bytes).filter(|&b| b > 0),
            max_buffer_bytes: Some(info.max_allocation_bytes).filter(|&b| b > 0),
            max_binding_bytes: u64::from(limits.max_storage_buffer_range),
            max_uniform_binding: u64::from(limits.max_uniform_buffer_range),
            shared_memory_bytes: u64::from(limits.max_compute_shared_memory_size),
            uniform_align: limits.min_uniform_buffer_offset_alignment,
            storage_align: limits.min_storage_buffer_offset_alignment,
        };
        Ok((Vulkan { build, vk }, adapter))
    }

    fn load(
        &self,
        program: &Program,
        plan: &Plan,
        weights: &dyn WeightSource,
    ) -> Result<VulkanPlan, BackendError> {
        VulkanPlan::new((&self.vk, &self.build), program, plan, weights)
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
