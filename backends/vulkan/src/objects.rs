//! The Vulkan objects of a loaded plan: the layouts, one pipeline per kernel variant
//! (built through the driver's pipeline cache), the descriptor set, the command pool with
//! the step-upload command buffer, the fence, the timestamp pool. They are created one by
//! one into an [`Objects`], which destroys whatever exists when it drops (after the
//! device is idle): a load that fails half-way leaks nothing, and a loaded plan needs no
//! teardown of its own.

use std::sync::Arc;

use ash::vk;
use kiln_ir::backend::BackendError;
use kiln_kernels_wgsl::program::ENTRY;
use kiln_kernels_wgsl::spirv::{Compiler, Target};
use kiln_kernels_wgsl::{Program, Resource};

use crate::device::{NAME, Vk, driver, vk_error};
use crate::loaded::Build;
use crate::pipeline_cache::{self, CacheStats};

/// How each resource is bound: the params block and the weights window at a dynamic
/// offset per dispatch (one set per weights buffer serves every dispatch), the other
/// buffers whole.
pub(crate) fn descriptor_type(r: Resource) -> vk::DescriptorType {
    match (r, r.dynamic()) {
        (Resource::Params, _) => vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
        (_, true) => vk::DescriptorType::STORAGE_BUFFER_DYNAMIC,
        (_, false) => vk::DescriptorType::STORAGE_BUFFER,
    }
}

/// Everything a loaded plan owns on the device besides its buffers. Null handles (what
/// was not created yet) are ignored by the destroy calls.
pub(crate) struct Objects {
    vk: Arc<Vk>,
    /// One set layout for every kernel: the params block (a dynamic uniform: each
    /// dispatch gives its offset), the weights window (a dynamic storage buffer: each
    /// dispatch gives its base) and the three other storage buffers, at Program's bindings.
    pub set_layout: vk::DescriptorSetLayout,
    pub layout: vk::PipelineLayout,
    /// Indexed like `program.pipelines`.
    pub pipelines: Vec<vk::Pipeline>,
    pub descriptor_pool: vk::DescriptorPool,
    /// One set per weights buffer (indexed like `program.weights.buffers`).
    pub sets: Vec<vk::DescriptorSet>,
    pub commands: vk::CommandPool,
    /// Re-recorded every step: the step buffer's copy.
    pub upload_cb: vk::CommandBuffer,
    pub fence: vk::Fence,
    /// Timestamp queries, two per launch (the queue's period and valid bits are in
    /// `DeviceInfo`).
    pub timer: Option<vk::QueryPool>,
}

impl Drop for Objects {
    fn drop(&mut self) {
        let _ = self.vk.wait_idle();
        let d = &self.vk.device;
        // SAFETY: the device is idle, so nothing here is in use; each handle was created
        // from this device (or is null, which destroy calls ignore) and is destroyed once;
        // the command pool frees its command buffers.
        unsafe {
            d.destroy_command_pool(self.commands, None);
            d.destroy_fence(self.fence, None);
            if let Some(pool) = self.timer {
                d.destroy_query_pool(pool, None);
            }
            for &p in &self.pipelines {
                d.destroy_pipeline(p, None);
            }
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_pool(self.descriptor_pool, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

impl Objects {
    /// Every object of `program` on this device, and what the kernel caches did.
    pub(crate) fn new(
        vk: &Arc<Vk>,
        program: &Program,
        build: &Build,
    ) -> Result<(Objects, CacheStats), BackendError> {
        let mut o = Objects {
            vk: vk.clone(),
            set_layout: vk::DescriptorSetLayout::null(),
            layout: vk::PipelineLayout::null(),
            pipelines: Vec::new(),
            descriptor_pool: vk::DescriptorPool::null(),
            sets: Vec::new(),
            commands: vk::CommandPool::null(),
            upload_cb: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            timer: None,
        };
        o.layouts()?;
        let target = Target {
            // SPIR-V 1.3 is Vulkan 1.1's, 1.5 Vulkan 1.2's, 1.6 Vulkan 1.3's.
            version: match vk.info.api_version {
                v if v >= vk::API_VERSION_1_3 => (1, 6),
                v if v >= vk::API_VERSION_1_2 => (1, 5),
                _ => (1, 3),
            },
            native_zero_init: vk.info.zero_init_workgroup,
            integer_dot: vk.info.integer_dot,
            f16: vk.info.shader_f16,
            coop_matrix: vk.info.coop_matrix,
            subgroups: build.subgroups,
        };
        let mut compiler = Compiler::new(target, &build.cache);
        let pipeline_cache_bytes = o.pipelines(&mut compiler, program, build)?;
        o.descriptor_sets(program.weights.buffers.len() as u32)?;
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(vk.family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: the family is the device's compute queue family.
        o.commands = unsafe { vk.device.create_command_pool(&info, None) }
            .map_err(|e| vk_error("creating a command pool", e, 0))?;
        o.upload_cb = o.command_buffer()?;
        o.fence = vk.fence()?;
        o.timer(program.timestamp_queries())?;
        let spirv = compiler.stats();
        let stats = CacheStats {
            spirv_hits: spirv.hits,
            spirv_compiled: spirv.built,
            pipeline_cache_bytes,
        };
        Ok((o, stats))
    }

    /// A primary command buffer from the pool.
    pub(crate) fn command_buffer(&self) -> Result<vk::CommandBuffer, BackendError> {
        // The pool is used from one thread (the plan's owner).
        self.vk.command_buffer(self.commands)
    }

    /// Give command buffers of the pool back. They must not be pending.
    pub(crate) fn free(&self, buffers: &[vk::CommandBuffer]) {
        if !buffers.is_empty() {
            // SAFETY: from this pool, and not pending (the callers' contract).
            unsafe { self.vk.device.free_command_buffers(self.commands, buffers) };
        }
    }

    fn layouts(&mut self) -> Result<(), BackendError> {
        let bindings = Resource::ALL.map(|r| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(r.binding())
                .descriptor_type(descriptor_type(r))
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        });
        let d = &self.vk.device;
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: the device is valid; the info outlives the call.
        self.set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }
            .map_err(|e| vk_error("creating a descriptor set layout", e, 0))?;
        let set_layouts = [self.set_layout];
        let info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
        // SAFETY: as above; the set layout was just created.
        self.layout = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(|e| vk_error("creating a pipeline layout", e, 0))?;
        Ok(())
    }

    /// Every pipeline of the program, through the device's pipeline cache (loaded from
    /// and saved to disk); the bytes of pipeline cache the driver took.
    fn pipelines(
        &mut self,
        compiler: &mut Compiler,
        program: &Program,
        build: &Build,
    ) -> Result<usize, BackendError> {
        let vk = self.vk.clone();
        let d = &vk.device;
        let mut initial = pipeline_cache::load(compiler.cache(), &vk.info);
        let cache_info = vk::PipelineCacheCreateInfo::default().initial_data(&initial);
        // SAFETY: the initial data outlives the call; drivers check its header and
        // ignore data that is not theirs.
        let cache = match unsafe { d.create_pipeline_cache(&cache_info, None) } {
            Ok(c) => c,
            Err(_) => {
                initial.clear();
                // SAFETY: as above, empty.
                unsafe { d.create_pipeline_cache(&Default::default(), None) }
                    .map_err(|e| vk_error("creating a pipeline cache", e, 0))?
            }
        };
        let mut result = Ok(());
        for p in &program.pipelines {
            result = self.pipeline(compiler, p, build, cache);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            // SAFETY: the cache is valid and not used concurrently.
            if let Ok(data) = unsafe { d.get_pipeline_cache_data(cache) } {
                pipeline_cache::save(compiler.cache(), &vk.info, &data);
            }
        }
        // SAFETY: no pipeline creation is in flight with this cache.
        unsafe { d.destroy_pipeline_cache(cache, None) };
        result.map(|()| initial.len())
    }

    fn pipeline(
        &mut self,
        compiler: &mut Compiler,
        p: &kiln_kernels_wgsl::Pipeline,
        build: &Build,
        cache: vk::PipelineCache,
    ) -> Result<(), BackendError> {
        let vk = self.vk.clone();
        let d = &vk.device;
        let entry = std::ffi::CString::new(ENTRY).map_err(|_| driver("entry point name"))?;
        let words = (compiler.spirv(&p.name, &p.source)).map_err(|e| e.for_backend(NAME))?;
        let info = vk::ShaderModuleCreateInfo::default().code(&words);
        // SAFETY: `words` is SPIR-V that naga validated and wrote (or our cache's copy of
        // it, magic number checked); it outlives the call.
        let module = unsafe { d.create_shader_module(&info, None) }
            .map_err(|e| vk_error(&format!("creating the module of {}", p.name), e, 0))?;
        let sized = p.variant.subgroups && build.subgroup_size.is_some();
        let mut required = vk::PipelineShaderStageRequiredSubgroupSizeCreateInfo::default()
            .required_subgroup_size(build.subgroup_size.unwrap_or(0));
        let mut flags = vk::PipelineShaderStageCreateFlags::empty();
        // Cooperative matrices are a whole subgroup's: their kernels too run in full
        // subgroups where that can be required (any size: they take subgroup_id's).
        let coop = p.variant.coop == Some(kiln_kernels_wgsl::Coop::Native);
        if (sized || coop) && vk.info.size_control.is_some_and(|s| s.full_subgroups) {
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
            .layout(self.layout)];
        // SAFETY: the module, layout and cache are valid; the infos outlive the call; the
        // required subgroup size is within the device's range (loaded::subgroup_size).
        let made = unsafe { d.create_compute_pipelines(cache, &create, None) };
        // SAFETY: pipelines keep no reference to their module.
        unsafe { d.destroy_shader_module(module, None) };
        let pipeline =
            made.map_err(|(_, e)| vk_error(&format!("building kernel {}", p.name), e, 0))?[0];
        self.pipelines.push(pipeline);
        if build.debug {
            let size = build.subgroup_size.filter(|_| sized);
            let sizes = size.map_or(String::new(), |s| format!(", subgroups of {s}"));
            eprintln!(
                "vulkan: built {} ({} bytes of WGSL, {} of SPIR-V{sizes})",
                p.name,
                p.source.len(),
                words.len() * 4,
            );
        }
        Ok(())
    }

    fn descriptor_sets(&mut self, n: u32) -> Result<(), BackendError> {
        let d = &self.vk.device;
        // A descriptor of each resource per set.
        let sizes = Resource::ALL.map(|r| vk::DescriptorPoolSize {
            ty: descriptor_type(r),
            descriptor_count: n,
        });
        let info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(n)
            .pool_sizes(&sizes);
        // SAFETY: the device is valid; the info outlives the call.
        self.descriptor_pool = unsafe { d.create_descriptor_pool(&info, None) }
            .map_err(|e| vk_error("creating a descriptor pool", e, 0))?;
        let layouts = vec![self.set_layout; n as usize];
        let alloc = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(self.descriptor_pool)
            .set_layouts(&layouts);
        // SAFETY: the pool has room for these n sets of this layout.
        self.sets = unsafe { d.allocate_descriptor_sets(&alloc) }
            .map_err(|e| vk_error("allocating descriptor sets", e, 0))?;
        Ok(())
    }

    /// Timestamp queries, two per launch, when the queue has timestamps.
    fn timer(&mut self, queries: u32) -> Result<(), BackendError> {
        let bits = self.vk.info.timestamp_bits;
        if bits == 0 || queries == 0 {
            return Ok(());
        }
        let info = vk::QueryPoolCreateInfo::default()
            .query_type(vk::QueryType::TIMESTAMP)
            .query_count(queries);
        // SAFETY: the device is valid.
        let pool = unsafe { self.vk.device.create_query_pool(&info, None) }
            .map_err(|e| vk_error("creating a query pool", e, 0))?;
        self.timer = Some(pool);
        Ok(())
    }
}
