//! The Vulkan objects a [`crate::loaded::Loaded`] is made of, created one by one at load
//! (layouts, pipelines through the pipeline cache, the descriptor set, the command pool
//! and buffers, the fence, the timestamp pool) and destroyed again if loading fails half-way.

use std::sync::Arc;

use ash::vk;
use kiln_ir::backend::BackendError;
use kiln_kernels_wgsl::program::ENTRY;
use kiln_kernels_wgsl::{Program, Resource};

use crate::device::{Vk, driver, vk_error};
use crate::loaded::{Build, Timer};
use crate::spirv::Compiler;

/// Vulkan objects being created for a Loaded: destroyed if loading fails half-way.
pub(crate) struct Objects {
    vk: Arc<Vk>,
    set_layouts: Vec<vk::DescriptorSetLayout>,
    layouts: Vec<vk::PipelineLayout>,
    pipelines: Vec<vk::Pipeline>,
    descriptor_pools: Vec<vk::DescriptorPool>,
    command_pools: Vec<vk::CommandPool>,
    fences: Vec<vk::Fence>,
    query_pools: Vec<vk::QueryPool>,
}

impl Drop for Objects {
    fn drop(&mut self) {
        let d = &self.vk.device;
        // SAFETY: everything listed was created here from this device and never
        // submitted (a failed load), or the lists were emptied by `disarm`.
        unsafe {
            for &p in &self.pipelines {
                d.destroy_pipeline(p, None);
            }
            for &l in &self.layouts {
                d.destroy_pipeline_layout(l, None);
            }
            for &l in &self.set_layouts {
                d.destroy_descriptor_set_layout(l, None);
            }
            for &p in &self.descriptor_pools {
                d.destroy_descriptor_pool(p, None);
            }
            for &p in &self.command_pools {
                d.destroy_command_pool(p, None);
            }
            for &f in &self.fences {
                d.destroy_fence(f, None);
            }
            for &q in &self.query_pools {
                d.destroy_query_pool(q, None);
            }
        }
    }
}

impl Objects {
    pub(crate) fn new(vk: &Arc<Vk>) -> Objects {
        Objects {
            vk: vk.clone(),
            set_layouts: Vec::new(),
            layouts: Vec::new(),
            pipelines: Vec::new(),
            descriptor_pools: Vec::new(),
            command_pools: Vec::new(),
            fences: Vec::new(),
            query_pools: Vec::new(),
        }
    }

    /// Loading succeeded: the Loaded owns everything now.
    pub(crate) fn disarm(mut self) {
        self.set_layouts.clear();
        self.layouts.clear();
        self.pipelines.clear();
        self.descriptor_pools.clear();
        self.command_pools.clear();
        self.fences.clear();
        self.query_pools.clear();
    }

    /// One set layout for every kernel: the params block (a dynamic uniform: each
    /// dispatch gives its offset) and the four storage buffers, at Program's bindings.
    pub(crate) fn layouts(
        &mut self,
    ) -> Result<(vk::DescriptorSetLayout, vk::PipelineLayout), BackendError> {
        let binding = |r: Resource, ty| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(r.binding())
                .descriptor_type(ty)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        };
        let storage = vk::DescriptorType::STORAGE_BUFFER;
        let bindings = [
            binding(Resource::Params, vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC),
            binding(Resource::Arena, storage),
            binding(Resource::Weights, storage),
            binding(Resource::Kv, storage),
            binding(Resource::Step, storage),
        ];
        let d = &self.vk.device;
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: the device is valid; the info outlives the call.
        let set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }
            .map_err(|e| vk_error("creating a descriptor set layout", e, 0))?;
        self.set_layouts.push(set_layout);
        let set_layouts = [set_layout];
        let info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
        // SAFETY: as above; the set layout was just created.
        let layout = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(|e| vk_error("creating a pipeline layout", e, 0))?;
        self.layouts.push(layout);
        Ok((set_layout, layout))
    }

    /// Every pipeline of the program, through the device's pipeline cache (loaded from
    /// and saved to disk).
    pub(crate) fn pipelines(
        &mut self,
        compiler: &mut Compiler,
        program: &Program,
        layout: vk::PipelineLayout,
        build: &Build,
        debug: bool,
    ) -> Result<Vec<vk::Pipeline>, BackendError> {
        let vk = self.vk.clone();
        let d = &vk.device;
        let initial = compiler.load_pipeline_cache(&vk.info);
        let mut cache_info = vk::PipelineCacheCreateInfo::default().initial_data(&initial);
        // SAFETY: the initial data outlives the call; drivers check its header and
        // ignore data that is not theirs.
        let cache = match unsafe { d.create_pipeline_cache(&cache_info, None) } {
            Ok(c) => {
                compiler.stats.pipeline_cache_bytes = initial.len();
                c
            }
            Err(_) => {
                cache_info = vk::PipelineCacheCreateInfo::default();
                // SAFETY: as above, empty.
                unsafe { d.create_pipeline_cache(&cache_info, None) }
                    .map_err(|e| vk_error("creating a pipeline cache", e, 0))?
            }
        };
        let result = self.build_pipelines(compiler, program, layout, build, cache, debug);
        if result.is_ok() {
            // SAFETY: the cache is valid and not used concurrently.
            if let Ok(data) = unsafe { d.get_pipeline_cache_data(cache) } {
                compiler.save_pipeline_cache(&vk.info, &data);
            }
        }
        // SAFETY: no pipeline creation is in flight with this cache.
        unsafe { d.destroy_pipeline_cache(cache, None) };
        result
    }

    fn build_pipelines(
        &mut self,
        compiler: &mut Compiler,
        program: &Program,
        layout: vk::PipelineLayout,
        build: &Build,
        cache: vk::PipelineCache,
        debug: bool,
    ) -> Result<Vec<vk::Pipeline>, BackendError> {
        let vk = self.vk.clone();
        let d = &vk.device;
        let entry = std::ffi::CString::new(ENTRY).map_err(|_| driver("entry point name"))?;
        let mut out = Vec::with_capacity(program.pipelines.len());
        for p in &program.pipelines {
            let words = compiler.spirv(&p.name, &p.source)?;
            let info = vk::ShaderModuleCreateInfo::default().code(&words);
            // SAFETY: `words` is SPIR-V that naga validated and wrote (or our cache's
            // copy of it, magic number checked); it outlives the call.
            let module = unsafe { d.create_shader_module(&info, None) }
                .map_err(|e| vk_error(&format!("creating the module of {}", p.name), e, 0))?;
            let sized = p.variant.subgroups && build.subgroup_size.is_some();
            let mut required = vk::PipelineShaderStageRequiredSubgroupSizeCreateInfo::default()
                .required_subgroup_size(build.subgroup_size.unwrap_or(0));
            let mut flags = vk::PipelineShaderStageCreateFlags::empty();
            if sized && vk.info.size_control.is_some_and(|s| s.full_subgroups) {
                flags |= vk::PipelineShaderStageCreateFlags::REQUIRE_FULL_SUBGROUPS;
            }
            let mut stage = vk::PipelineShaderStageCreateInfo::default()
                .flags(flags)
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(&entry);
            if sized {
                stage = stage.push_next(&mut required);
            }
            let create = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(layout)];
            // SAFETY: the module, layout and cache are valid; the infos outlive the call;
            // the required subgroup size is within the device's range (subgroup_size).
            let made = unsafe { d.create_compute_pipelines(cache, &create, None) };
            // SAFETY: pipelines keep no reference to their module.
            unsafe { d.destroy_shader_module(module, None) };
            let pipeline =
                made.map_err(|(_, e)| vk_error(&format!("building kernel {}", p.name), e, 0))?[0];
            self.pipelines.push(pipeline);
            out.push(pipeline);
            if debug {
                eprintln!(
                    "vulkan: built {} ({} bytes of WGSL, {} of SPIR-V{})",
                    p.name,
                    p.source.len(),
                    words.len() * 4,
                    if sized {
                        format!(", subgroups of {}", build.subgroup_size.unwrap_or(0))
                    } else {
                        String::new()
                    }
                );
            }
        }
        Ok(out)
    }

    pub(crate) fn descriptor_set(
        &mut self,
        set_layout: vk::DescriptorSetLayout,
    ) -> Result<(vk::DescriptorPool, vk::DescriptorSet), BackendError> {
        let d = &self.vk.device;
        let sizes = [
            vk::DescriptorPoolSize {
                ty: vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
                descriptor_count: 1,
            },
            vk::DescriptorPoolSize {
                ty: vk::DescriptorType::STORAGE_BUFFER,
                descriptor_count: 4,
            },
        ];
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(1)
            .pool_sizes(&sizes);
        // SAFETY: the device is valid; the info outlives the call.
        let pool = unsafe { d.create_descriptor_pool(&info, None) }
            .map_err(|e| vk_error("creating a descriptor pool", e, 0))?;
        self.descriptor_pools.push(pool);
        let layouts = [set_layout];
        let alloc = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(pool)
            .set_layouts(&layouts);
        // SAFETY: the pool has room for this one set of this layout.
        let set = unsafe { d.allocate_descriptor_sets(&alloc) }
            .map_err(|e| vk_error("allocating a descriptor set", e, 0))?[0];
        Ok((pool, set))
    }

    pub(crate) fn command_pool(&mut self) -> Result<vk::CommandPool, BackendError> {
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(self.vk.family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: the family is the device's compute queue family.
        let pool = unsafe { self.vk.device.create_command_pool(&info, None) }
            .map_err(|e| vk_error("creating a command pool", e, 0))?;
        self.command_pools.push(pool);
        Ok(pool)
    }

    pub(crate) fn allocate(
        vk: &Vk,
        pool: vk::CommandPool,
    ) -> Result<vk::CommandBuffer, BackendError> {
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool belongs to this device and is used from one thread (the
        // Loaded's owner).
        Ok(unsafe { vk.device.allocate_command_buffers(&alloc) }
            .map_err(|e| vk_error("allocating a command buffer", e, 0))?[0])
    }

    pub(crate) fn command_buffer(
        &mut self,
        pool: vk::CommandPool,
    ) -> Result<vk::CommandBuffer, BackendError> {
        Objects::allocate(&self.vk, pool)
    }

    pub(crate) fn fence(&mut self) -> Result<vk::Fence, BackendError> {
        // SAFETY: the device is valid.
        let fence = unsafe {
            self.vk
                .device
                .create_fence(&vk::FenceCreateInfo::default(), None)
        }
        .map_err(|e| vk_error("creating a fence", e, 0))?;
        self.fences.push(fence);
        Ok(fence)
    }

    /// Timestamp queries, two per launch, when the queue has timestamps.
    pub(crate) fn timer(&mut self, queries: u32) -> Result<Option<Timer>, BackendError> {
        let bits = self.vk.info.timestamp_bits;
        if bits == 0 || queries == 0 {
            return Ok(None);
        }
        let info = vk::QueryPoolCreateInfo::default()
            .query_type(vk::QueryType::TIMESTAMP)
            .query_count(queries);
        // SAFETY: the device is valid.
        let pool = unsafe { self.vk.device.create_query_pool(&info, None) }
            .map_err(|e| vk_error("creating a query pool", e, 0))?;
        self.query_pools.push(pool);
        Ok(Some(Timer {
            pool,
            period: f64::from(self.vk.info.limits.timestamp_period),
            mask: if bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            },
        }))
    }
}
