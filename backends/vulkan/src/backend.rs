//! The Backend implementation: device, user buffers, plan loading; the plan itself runs
//! in [`crate::loaded`].

use std::path::PathBuf;
use std::sync::Arc;

use kiln_ir::backend::{
    Backend, BackendError, BufferId, DeviceProperties, LaunchTime, Step, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};
use kiln_kernels_wgsl::weights::WeightLayout;

use crate::buffer::{Buffer, Kind, Uploader, download};
use crate::device::{NAME, Vk};
use crate::loaded::{Build, Loaded, readback_bytes, subgroup_size};
use crate::spirv::{CacheStats, default_cache_dir};

/// Where compiled kernels are cached on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cache {
    /// `$KILN_CACHE_DIR/vulkan`, else `$XDG_CACHE_HOME/kiln/vulkan`, else
    /// `~/.cache/kiln/vulkan` (`KILN_CACHE_DIR=` set empty: no cache).
    #[default]
    Default,
    /// This folder.
    Dir(PathBuf),
    /// No disk cache: every load compiles.
    Off,
}

/// How to open the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VulkanOptions {
    /// Take a CPU implementation (lavapipe) when there is no GPU.
    pub allow_cpu: bool,
    /// Use subgroup operations where the device has them (off: the workgroup-memory
    /// reductions every device runs).
    pub subgroups: bool,
    pub cache: Cache,
}

impl Default for VulkanOptions {
    /// A GPU only, subgroups unless `KILN_VULKAN_SUBGROUPS=0`, the default cache.
    fn default() -> VulkanOptions {
        VulkanOptions {
            allow_cpu: false,
            subgroups: !std::env::var("KILN_VULKAN_SUBGROUPS").is_ok_and(|v| v == "0"),
            cache: Cache::Default,
        }
    }
}

/// The Vulkan backend (ash), running kiln-kernels-wgsl compiled to SPIR-V by naga.
#[derive(Debug)]
pub struct VulkanBackend {
    properties: DeviceProperties,
    build: Build,
    /// Buffers of `alloc`, with the size asked for.
    buffers: Vec<Option<(Buffer, usize)>>,
    loaded: Option<Loaded>,
    // Last: everything above holds an Arc of the device and is dropped first.
    vk: Arc<Vk>,
}

impl VulkanBackend {
    /// Open the best GPU. A CPU implementation (lavapipe) is taken only with
    /// `KILN_VULKAN_DEVICE=any`, so that the engine's choice of the best backend never
    /// lands on a software rasterizer. No loader or no device is
    /// `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<VulkanBackend, BackendError> {
        VulkanBackend::with_options(VulkanOptions {
            allow_cpu: std::env::var("KILN_VULKAN_DEVICE").is_ok_and(|v| v == "any"),
            ..VulkanOptions::default()
        })
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
        let subgroups = options.subgroups && vk.info.subgroup_size.is_some();
        let build = Build {
            subgroups,
            subgroup_size: subgroups.then(|| subgroup_size(&vk)).flatten(),
            cache_dir: match options.cache {
                Cache::Default => default_cache_dir(),
                Cache::Dir(d) => Some(d),
                Cache::Off => None,
            },
        };
        let info = &vk.info;
        let properties = DeviceProperties {
            name: format!("{} (Vulkan {})", info.name, info.api()),
            compute_units: 1,
            subgroup_size: if subgroups {
                build
                    .subgroup_size
                    .or(info.subgroup_size)
                    .map(|s| s as usize)
            } else {
                None
            },
            memory_bytes: Some(info.memory_bytes).filter(|&b| b > 0),
            has_f16: false,
        };
        Ok(VulkanBackend {
            properties,
            build,
            buffers: Vec::new(),
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
        self.loaded.as_ref().map(|l| l.cache)
    }

    fn loaded(&mut self) -> Result<&mut Loaded, BackendError> {
        self.loaded.as_mut().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })
    }

    fn range(&self, id: BufferId, offset: usize, len: usize) -> Result<&Buffer, BackendError> {
        let (buffer, size) = self
            .buffers
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| BackendError::BadStep {
                backend: NAME,
                reason: format!("unknown buffer {}", id.0),
            })?;
        if offset.checked_add(len).is_none_or(|end| end > *size) {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("{len} bytes at {offset} are outside a {size}-byte buffer"),
            });
        }
        Ok(buffer)
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
        kiln_kernels_wgsl::program::supports(op, graph)
    }

    fn alloc(&mut self, bytes: usize) -> Result<BufferId, BackendError> {
        let buffer = Buffer::new(&self.vk, "user buffer", bytes as u64, Kind::Device)?;
        self.buffers.push(Some((buffer, bytes)));
        Ok(BufferId(self.buffers.len() as u32 - 1))
    }

    fn upload(&mut self, id: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        let buffer = self.range(id, offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        // Buffer copies have no alignment rule: any offset goes straight in.
        let mut up = Uploader::new(&self.vk, data.len() as u64);
        up.push(buffer, offset as u64, data)?;
        up.flush()
    }

    fn download(
        &mut self,
        id: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let buffer = self.range(id, offset, out.len())?;
        download(&self.vk, buffer, offset as u64, out)
    }

    fn free(&mut self, id: BufferId) {
        if let Some(slot) = self.buffers.get_mut(id.0 as usize) {
            if slot.is_some() {
                // A step may still read it.
                let _ = self.vk.wait_idle();
            }
            *slot = None;
        }
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.loaded = None;
        self.loaded = Some(Loaded::new(
            &self.vk,
            &self.build,
            plan,
            weights,
            kv,
            kv_page_count,
        )?);
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        self.loaded()?.execute(step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_output(out)
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
        let weights = WeightLayout::new(plan, u64::MAX).map_or(0, |l| l.total as usize);
        let align = self
            .vk
            .info
            .limits
            .min_uniform_buffer_offset_alignment
            .max(16) as usize;
        weights + plan.launches.len() * 3 * align + readback_bytes(plan) as usize
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        self.loaded()?.launch_times()
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
