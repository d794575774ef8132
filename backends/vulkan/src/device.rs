//! The Vulkan device: the loader opened at run time, the physical device chosen (a GPU
//! first; a CPU implementation such as lavapipe only when asked), one compute queue, what
//! the device offers the kernels (subgroup arithmetic, subgroup size control, timestamps,
//! zero-initialised workgroup memory, integer dot products, f16 arithmetic, cooperative
//! matrices), and the
//! one-shot helpers (submit and wait, staged uploads and readbacks) that everything but
//! the decode step goes through.
//!
//! Every raw Vulkan call of the crate is in this file, `buffer.rs`, `objects.rs` and
//! `loaded.rs`, each in an `unsafe` block that says why its handles are valid.

use std::ffi::CStr;
use std::sync::Mutex;

use ash::vk;
use kiln_gpu_host::device::{DeviceKind, choose};
use kiln_gpu_host::out_of_memory;
use kiln_ir::backend::BackendError;
use kiln_kernels_wgsl::backend::GEMM_COOP_SHARED_BYTES;

pub(crate) const NAME: &str = "vulkan";

pub(crate) fn driver(message: impl Into<String>) -> BackendError {
    kiln_gpu_host::driver(NAME, message)
}

/// A failed Vulkan call as a BackendError: out of memory stays out of memory.
pub(crate) fn vk_error(doing: &str, r: vk::Result, bytes: u64) -> BackendError {
    match r {
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY => {
            out_of_memory(NAME, bytes)
        }
        r => driver(format!("{doing}: {r}")),
    }
}

fn no_device(reason: impl Into<String>) -> BackendError {
    kiln_gpu_host::no_device(NAME, reason)
}

/// Subgroup size control (Vulkan 1.3 or VK_EXT_subgroup_size_control) for compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SizeControl {
    pub min: u32,
    pub max: u32,
    /// Subgroups a workgroup may hold when a size is required.
    pub max_workgroup_subgroups: u32,
    /// `computeFullSubgroups`: a workgroup made of whole subgroups can be required.
    pub full_subgroups: bool,
}

/// What the chosen device is and offers.
#[derive(Clone)]
pub(crate) struct DeviceInfo {
    pub name: String,
    pub api_version: u32,
    pub vendor_id: u32,
    pub device_id: u32,
    pub pipeline_cache_uuid: [u8; vk::UUID_SIZE],
    pub limits: vk::PhysicalDeviceLimits,
    /// The default subgroup size, when compute shaders have subgroup arithmetic.
    pub subgroup_size: Option<u32>,
    pub size_control: Option<SizeControl>,
    /// Valid bits of the queue's timestamps (0: no timestamp queries).
    pub timestamp_bits: u32,
    /// Native zero-initialisation of workgroup memory (Vulkan 1.3).
    pub zero_init_workgroup: bool,
    /// Packed 4×8-bit integer dot products in shaders (Vulkan 1.3's
    /// shaderIntegerDotProduct, enabled): the int8 matvec's; else a polyfill.
    pub integer_dot: bool,
    /// f16 arithmetic in shaders, enabled: shaderFloat16 (Vulkan 1.2, or
    /// VK_KHR_shader_float16_int8) with the 16-bit storage buffer access (Vulkan 1.1) that
    /// naga's SPIR-V declares with any f16 type. Off where not asked for.
    pub shader_f16: bool,
    /// Cooperative matrices for the GEMM's coop tiles, enabled: VK_KHR_cooperative_matrix
    /// with a 16 × 16 × 16 configuration of f16 A and B, f32 C and result at subgroup
    /// scope in compute shaders, and the vulkanMemoryModel (with device scope) that
    /// naga's SPIR-V declares with them; on Vulkan 1.3 devices with f16 arithmetic and
    /// subgroup arithmetic, of subgroups of at most 64 and the tiles' workgroup memory.
    /// Off where not asked for.
    pub coop_matrix: bool,
    /// Bytes of the device-local heaps.
    pub memory_bytes: u64,
    /// The largest single allocation (`maxMemoryAllocationSize`).
    pub max_allocation_bytes: u64,
}

impl DeviceInfo {
    pub fn api(&self) -> String {
        format!(
            "{}.{}",
            vk::api_version_major(self.api_version),
            vk::api_version_minor(self.api_version)
        )
    }
}

fn kind(t: vk::PhysicalDeviceType) -> DeviceKind {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => DeviceKind::DiscreteGpu,
        vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceKind::IntegratedGpu,
        vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceKind::VirtualGpu,
        vk::PhysicalDeviceType::CPU => DeviceKind::Cpu,
        _ => DeviceKind::Other,
    }
}

/// The Vulkan instance, destroyed when it drops (after the device, which [`Vk`] destroys
/// first), with the loader it came from.
struct Instance {
    raw: ash::Instance,
    entry: ash::Entry,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: everything created from the instance (the device) is destroyed before
        // it: `Vk` destroys its device in its own drop, before its fields drop.
        unsafe { self.raw.destroy_instance(None) };
    }
}

/// An opened device. Shared (`Arc`) by everything created from it, so that it is
/// destroyed last.
pub(crate) struct Vk {
    pub device: ash::Device,
    pub family: u32,
    /// The queue; `vkQueueSubmit` needs it externally synchronised.
    queue: Mutex<vk::Queue>,
    /// The pool of one-shot command buffers (externally synchronised too).
    oneshot_pool: Mutex<vk::CommandPool>,
    memory: vk::PhysicalDeviceMemoryProperties,
    pub info: DeviceInfo,
    /// Last: destroyed after the device.
    _instance: Instance,
}

impl std::fmt::Debug for Vk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vk({}, Vulkan {})", self.info.name, self.info.api())
    }
}

impl Drop for Vk {
    fn drop(&mut self) {
        // SAFETY: every object created from the device holds an Arc of this Vk, so none is
        // left; the pool (null when its creation failed, which destroy ignores) was
        // created from this device.
        unsafe {
            let _ = self.device.device_wait_idle();
            if let Ok(pool) = self.oneshot_pool.get_mut() {
                self.device.destroy_command_pool(*pool, None);
            }
            self.device.destroy_device(None);
        }
    }
}

/// What the options ask of the device where it has it.
#[derive(Clone, Copy)]
struct Asked {
    f16: bool,
    coop: bool,
}

/// Whether the device offers the cooperative-matrix configuration of the GEMM's coop
/// tiles: M = N = K = 16, f16 A and B, f32 C and result, subgroup scope (what NVIDIA, AMD
/// and Intel drivers list).
fn has_gemm_coop_config(vulkan: &Instance, physical: vk::PhysicalDevice) -> bool {
    let ext = ash::khr::cooperative_matrix::Instance::new(&vulkan.entry, &vulkan.raw);
    // SAFETY: the physical device belongs to the instance, which reported the extension
    // for it; the entry point was loaded from that instance.
    let configs = unsafe { ext.get_physical_device_cooperative_matrix_properties(physical) }
        .unwrap_or_default();
    configs.iter().any(is_gemm_coop_config)
}

fn is_gemm_coop_config(p: &vk::CooperativeMatrixPropertiesKHR) -> bool {
    (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
        && p.a_type == vk::ComponentTypeKHR::FLOAT16
        && p.b_type == vk::ComponentTypeKHR::FLOAT16
        && p.c_type == vk::ComponentTypeKHR::FLOAT32
        && p.result_type == vk::ComponentTypeKHR::FLOAT32
        && p.scope == vk::ScopeKHR::SUBGROUP
}

/// A candidate physical device with what kiln needs of it.
struct Candidate {
    physical: vk::PhysicalDevice,
    properties: vk::PhysicalDeviceProperties,
    family: u32,
    timestamp_bits: u32,
}

/// The device's name from its properties.
fn name(p: &vk::PhysicalDeviceProperties) -> String {
    p.device_name_as_c_str()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Vk {
    /// The best device; CPU implementations (lavapipe) only when `allow_cpu`; f16
    /// arithmetic enabled where the device has it and `f16`, cooperative matrices where
    /// it has them and `coop` (and f16).
    pub fn open(allow_cpu: bool, f16: bool, coop: bool) -> Result<Vk, BackendError> {
        // SAFETY: loading libvulkan runs its initialisers; the Vulkan loader is a
        // well-behaved library, and a missing one is an error, not a crash.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| {
            no_device(format!(
                "no Vulkan loader ({e}; on Linux `apt-get install libvulkan1 \
                 mesa-vulkan-drivers` gives one, with lavapipe)"
            ))
        })?;
        // SAFETY: the entry points were just loaded.
        let version = unsafe { entry.try_enumerate_instance_version() }
            .ok()
            .flatten()
            .unwrap_or(vk::API_VERSION_1_0);
        if version < vk::API_VERSION_1_1 {
            return Err(no_device(
                "the Vulkan loader is 1.0; kiln needs Vulkan 1.1 (subgroups, SPIR-V 1.3)",
            ));
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"kiln")
            .engine_name(c"kiln")
            .api_version(version.min(vk::API_VERSION_1_3));
        let create = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: the create info and what it points to live through the call.
        let raw = unsafe { entry.create_instance(&create, None) }
            .map_err(|e| no_device(format!("creating a Vulkan instance: {e}")))?;
        // From here on, an error drops the instance, which destroys it.
        let instance = Instance { raw, entry };
        let best = Vk::choose(&instance.raw, allow_cpu)?;
        let name = name(&best.properties);
        let asked = Asked { f16, coop };
        let (device, mut info) = Vk::create(&instance, &best, name, asked)?;
        // SAFETY: the physical device belongs to the instance.
        let memory = unsafe { (instance.raw).get_physical_device_memory_properties(best.physical) };
        info.memory_bytes = memory.memory_heaps[..memory.memory_heap_count as usize]
            .iter()
            .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .sum();
        // SAFETY: the family index was checked against the device's families; one queue
        // was asked of it.
        let queue = unsafe { device.get_device_queue(best.family, 0) };
        let mut vk = Vk {
            device,
            family: best.family,
            queue: Mutex::new(queue),
            oneshot_pool: Mutex::new(vk::CommandPool::null()),
            memory,
            info,
            _instance: instance,
        };
        let pool_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(best.family)
            .flags(vk::CommandPoolCreateFlags::TRANSIENT);
        // SAFETY: the device is valid and the family is one of its queues'.
        let pool = unsafe { vk.device.create_command_pool(&pool_info, None) }
            .map_err(|e| vk_error("creating a command pool", e, 0))?;
        vk.oneshot_pool = Mutex::new(pool);
        Ok(vk)
    }

    /// The best physical device of the instance (Vulkan 1.1, a compute queue).
    fn choose(instance: &ash::Instance, allow_cpu: bool) -> Result<Candidate, BackendError> {
        // SAFETY: the instance is valid.
        let physicals = unsafe { instance.enumerate_physical_devices() }
            .map_err(|e| no_device(format!("listing devices: {e}")))?;
        let mut candidates = Vec::new();
        let mut skipped = Vec::new();
        for physical in physicals {
            // SAFETY: `physical` was just enumerated from this instance.
            let properties = unsafe { instance.get_physical_device_properties(physical) };
            let name = name(&properties);
            if properties.api_version < vk::API_VERSION_1_1 {
                skipped.push(format!("{name} (Vulkan 1.0)"));
                continue;
            }
            // SAFETY: as above.
            let families =
                unsafe { instance.get_physical_device_queue_family_properties(physical) };
            let Some((family, f)) = families
                .iter()
                .enumerate()
                .find(|(_, f)| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
            else {
                skipped.push(format!("{name} (no compute queue)"));
                continue;
            };
            let kind = kind(properties.device_type);
            let candidate = Candidate {
                physical,
                properties,
                family: family as u32,
                timestamp_bits: f.timestamp_valid_bits,
            };
            candidates.push((kind, name, candidate));
        }
        let none = || {
            if skipped.is_empty() {
                "no Vulkan device (no driver; on Linux `apt-get install mesa-vulkan-drivers` \
                 gives lavapipe)"
                    .to_string()
            } else {
                format!("no usable Vulkan device: {}", skipped.join(", "))
            }
        };
        let allow = "set KILN_VULKAN_DEVICE=any (WgslOptions::allow_cpu)";
        choose(candidates, allow_cpu, NAME, none, allow)
    }

    /// Query the device's subgroup, f16 and cooperative-matrix abilities and create the
    /// logical device with what kiln uses of them (f16 arithmetic and cooperative
    /// matrices only when asked).
    fn create(
        vulkan: &Instance,
        c: &Candidate,
        name: String,
        asked: Asked,
    ) -> Result<(ash::Device, DeviceInfo), BackendError> {
        let instance = &vulkan.raw;
        let f16 = asked.f16;
        let api = c.properties.api_version;
        // SAFETY: the physical device belongs to the instance.
        let extensions = unsafe { instance.enumerate_device_extension_properties(c.physical) }
            .unwrap_or_default();
        let has_ext = |wanted: &CStr| {
            extensions
                .iter()
                .any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == wanted))
        };
        let core13 = api >= vk::API_VERSION_1_3;
        let size_control_ext = !core13 && has_ext(vk::EXT_SUBGROUP_SIZE_CONTROL_NAME);
        // shaderFloat16: core in 1.2, else the extension's.
        let float16_ext = api < vk::API_VERSION_1_2 && has_ext(vk::KHR_SHADER_FLOAT16_INT8_NAME);
        let float16_known = api >= vk::API_VERSION_1_2 || float16_ext;
        // Cooperative matrices: on Vulkan 1.3 only (SPIR-V 1.6, whose modules declare the
        // Vulkan memory model as naga writes it for them).
        let coop_ext = asked.coop && f16 && core13 && has_ext(vk::KHR_COOPERATIVE_MATRIX_NAME);

        // Properties: subgroups (1.1 core), subgroup size control (1.3 or the extension).
        let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
        let mut size_props = vk::PhysicalDeviceSubgroupSizeControlProperties::default();
        let mut maintenance3 = vk::PhysicalDeviceMaintenance3Properties::default();
        let mut coop_props = vk::PhysicalDeviceCooperativeMatrixPropertiesKHR::default();
        {
            let mut props2 = vk::PhysicalDeviceProperties2::default()
                .push_next(&mut subgroup)
                .push_next(&mut maintenance3);
            if core13 || size_control_ext {
                props2 = props2.push_next(&mut size_props);
            }
            if coop_ext {
                props2 = props2.push_next(&mut coop_props);
            }
            // SAFETY: the chain holds structures the device's version or extensions know;
            // they outlive the call.
            unsafe { instance.get_physical_device_properties2(c.physical, &mut props2) };
        }
        // Features: size control, zero-initialised workgroup memory, f16 arithmetic and
        // 16-bit storage (1.1 core).
        let mut f13 = vk::PhysicalDeviceVulkan13Features::default();
        let mut f_ext = vk::PhysicalDeviceSubgroupSizeControlFeatures::default();
        let mut f_float16 = vk::PhysicalDeviceShaderFloat16Int8Features::default();
        let mut f_storage16 = vk::PhysicalDevice16BitStorageFeatures::default();
        let mut f_coop = vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default();
        let mut f_memory_model = vk::PhysicalDeviceVulkanMemoryModelFeatures::default();
        {
            let mut features2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f_storage16);
            if coop_ext {
                features2 = features2
                    .push_next(&mut f_coop)
                    .push_next(&mut f_memory_model);
            }
            if core13 {
                features2 = features2.push_next(&mut f13);
            } else if size_control_ext {
                features2 = features2.push_next(&mut f_ext);
            }
            if float16_known {
                features2 = features2.push_next(&mut f_float16);
            }
            // SAFETY: as above.
            unsafe { instance.get_physical_device_features2(c.physical, &mut features2) };
        }
        let arithmetic = subgroup
            .supported_stages
            .contains(vk::ShaderStageFlags::COMPUTE)
            && subgroup
                .supported_operations
                .contains(vk::SubgroupFeatureFlags::BASIC | vk::SubgroupFeatureFlags::ARITHMETIC)
            && subgroup.subgroup_size > 0;
        let (size_control_on, full_on) = if core13 {
            (f13.subgroup_size_control, f13.compute_full_subgroups)
        } else {
            (f_ext.subgroup_size_control, f_ext.compute_full_subgroups)
        };
        let size_control = (arithmetic
            && size_control_on == vk::TRUE
            && size_props
                .required_subgroup_size_stages
                .contains(vk::ShaderStageFlags::COMPUTE)
            && size_props.min_subgroup_size > 0)
            .then_some(SizeControl {
                min: size_props.min_subgroup_size,
                max: size_props.max_subgroup_size,
                max_workgroup_subgroups: size_props.max_compute_workgroup_subgroups,
                full_subgroups: full_on == vk::TRUE,
            });
        let zero_init = core13 && f13.shader_zero_initialize_workgroup_memory == vk::TRUE;
        let integer_dot = core13 && f13.shader_integer_dot_product == vk::TRUE;
        // naga declares StorageBuffer16BitAccess and UniformAndStorageBuffer16BitAccess
        // with any f16 type (spirv.rs), so both come with shaderFloat16.
        let shader_f16 = f16
            && float16_known
            && f_float16.shader_float16 == vk::TRUE
            && f_storage16.storage_buffer16_bit_access == vk::TRUE
            && f_storage16.uniform_and_storage_buffer16_bit_access == vk::TRUE;
        let max_subgroup = size_control.map_or(subgroup.subgroup_size, |s| s.max);
        let coop_matrix = coop_ext
            && shader_f16
            && arithmetic
            && max_subgroup <= 64
            && u64::from(c.properties.limits.max_compute_shared_memory_size)
                >= GEMM_COOP_SHARED_BYTES
            && f_coop.cooperative_matrix == vk::TRUE
            && f_memory_model.vulkan_memory_model == vk::TRUE
            && f_memory_model.vulkan_memory_model_device_scope == vk::TRUE
            && coop_props
                .cooperative_matrix_supported_stages
                .contains(vk::ShaderStageFlags::COMPUTE)
            && has_gemm_coop_config(vulkan, c.physical);

        // Enable exactly what is used.
        let mut enable13 = vk::PhysicalDeviceVulkan13Features::default()
            .subgroup_size_control(size_control.is_some())
            .compute_full_subgroups(size_control.is_some_and(|s| s.full_subgroups))
            .shader_zero_initialize_workgroup_memory(zero_init)
            .shader_integer_dot_product(integer_dot);
        let mut enable_ext = vk::PhysicalDeviceSubgroupSizeControlFeatures::default()
            .subgroup_size_control(size_control.is_some())
            .compute_full_subgroups(size_control.is_some_and(|s| s.full_subgroups));
        let mut enable_float16 =
            vk::PhysicalDeviceShaderFloat16Int8Features::default().shader_float16(true);
        let mut enable_storage16 = vk::PhysicalDevice16BitStorageFeatures::default()
            .storage_buffer16_bit_access(true)
            .uniform_and_storage_buffer16_bit_access(true);
        let mut enable_coop =
            vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default().cooperative_matrix(true);
        // Device scope too: wgpu-hal finds naga's barriers under the Vulkan memory model
        // need it (VUID-RuntimeSpirv-vulkanMemoryModel-06265).
        let mut enable_memory_model = vk::PhysicalDeviceVulkanMemoryModelFeatures::default()
            .vulkan_memory_model(true)
            .vulkan_memory_model_device_scope(true);
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(c.family)
            .queue_priorities(&priorities)];
        let mut ext_names = Vec::new();
        if size_control_ext && size_control.is_some() {
            ext_names.push(vk::EXT_SUBGROUP_SIZE_CONTROL_NAME.as_ptr());
        }
        if shader_f16 && float16_ext {
            ext_names.push(vk::KHR_SHADER_FLOAT16_INT8_NAME.as_ptr());
        }
        if coop_matrix {
            ext_names.push(vk::KHR_COOPERATIVE_MATRIX_NAME.as_ptr());
        }
        let mut create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&ext_names);
        if core13 {
            create = create.push_next(&mut enable13);
        } else if size_control_ext && size_control.is_some() {
            create = create.push_next(&mut enable_ext);
        }
        if shader_f16 {
            create = create
                .push_next(&mut enable_float16)
                .push_next(&mut enable_storage16);
        }
        if coop_matrix {
            create = create
                .push_next(&mut enable_coop)
                .push_next(&mut enable_memory_model);
        }
        // SAFETY: the create info, its queue infos, names and feature chain outlive the
        // call; every feature enabled was reported by the device.
        let device = unsafe { instance.create_device(c.physical, &create, None) }
            .map_err(|e| no_device(format!("{name}: creating the device: {e}")))?;
        let info = DeviceInfo {
            name,
            api_version: api,
            vendor_id: c.properties.vendor_id,
            device_id: c.properties.device_id,
            pipeline_cache_uuid: c.properties.pipeline_cache_uuid,
            limits: c.properties.limits,
            subgroup_size: arithmetic.then_some(subgroup.subgroup_size),
            size_control,
            timestamp_bits: c.timestamp_bits,
            zero_init_workgroup: zero_init,
            integer_dot,
            shader_f16,
            coop_matrix,
            memory_bytes: 0,
            max_allocation_bytes: maintenance3.max_memory_allocation_size,
        };
        Ok((device, info))
    }

    /// A memory type for `bits` with every flag of `required`, preferring those with
    /// `preferred` too.
    pub fn memory_type(
        &self,
        bits: u32,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
    ) -> Option<u32> {
        let types = &self.memory.memory_types[..self.memory.memory_type_count as usize];
        let fits = |i: usize, flags: vk::MemoryPropertyFlags| {
            bits & (1 << i) != 0 && types[i].property_flags.contains(flags)
        };
        (0..types.len())
            .find(|&i| fits(i, required | preferred))
            .or_else(|| (0..types.len()).find(|&i| fits(i, required)))
            .map(|i| i as u32)
    }

    /// Submit command buffers, signalling `fence` when done.
    pub fn submit(
        &self,
        buffers: &[vk::CommandBuffer],
        fence: vk::Fence,
    ) -> Result<(), BackendError> {
        let queue = self
            .queue
            .lock()
            .map_err(|_| driver("the queue lock is poisoned"))?;
        let submit = [vk::SubmitInfo::default().command_buffers(buffers)];
        // SAFETY: the queue is held locked; the command buffers are recorded and not
        // pending (callers wait for their previous submission); the fence is unsignalled.
        unsafe { self.device.queue_submit(*queue, &submit, fence) }
            .map_err(|e| vk_error("submitting work", e, 0))
    }

    pub fn wait_fence(&self, fence: vk::Fence) -> Result<(), BackendError> {
        // SAFETY: the fence was created from this device.
        unsafe { self.device.wait_for_fences(&[fence], true, u64::MAX) }
            .map_err(|e| vk_error("waiting for the device", e, 0))
    }

    pub fn wait_idle(&self) -> Result<(), BackendError> {
        // SAFETY: the device is valid; the queue is not being submitted to meanwhile
        // (the lock is taken).
        let _queue = self
            .queue
            .lock()
            .map_err(|_| driver("the queue lock is poisoned"))?;
        // SAFETY: as above.
        unsafe { self.device.device_wait_idle() }
            .map_err(|e| vk_error("waiting for the device", e, 0))
    }

    /// A primary command buffer from `pool`, a pool of this device that the caller uses
    /// from one thread at a time.
    pub fn command_buffer(&self, pool: vk::CommandPool) -> Result<vk::CommandBuffer, BackendError> {
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool belongs to this device and is used from one thread (the
        // caller's contract).
        let buffers = unsafe { self.device.allocate_command_buffers(&alloc) }
            .map_err(|e| vk_error("allocating a command buffer", e, 0))?;
        (buffers.first().copied()).ok_or_else(|| driver("no command buffer was allocated"))
    }

    /// An unsignalled fence.
    pub fn fence(&self) -> Result<vk::Fence, BackendError> {
        // SAFETY: the device is valid.
        unsafe {
            self.device
                .create_fence(&vk::FenceCreateInfo::default(), None)
        }
        .map_err(|e| vk_error("creating a fence", e, 0))
    }

    /// Record commands into a one-shot command buffer between two full barriers (so it
    /// is ordered with everything submitted before and after), submit it and wait.
    pub fn oneshot(&self, record: impl FnOnce(vk::CommandBuffer)) -> Result<(), BackendError> {
        let pool = self
            .oneshot_pool
            .lock()
            .map_err(|_| driver("the command pool lock is poisoned"))?;
        // The pool is held locked.
        let cb = self.command_buffer(*pool)?;
        let result = self.fence().and_then(|fence| {
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: the command buffer is freshly allocated from the locked pool.
            let recorded = unsafe {
                self.device
                    .begin_command_buffer(cb, &begin)
                    .map(|()| {
                        self.full_barrier(cb);
                        record(cb);
                        self.full_barrier(cb);
                    })
                    .and_then(|()| self.device.end_command_buffer(cb))
            }
            .map_err(|e| vk_error("recording commands", e, 0));
            let done = recorded
                .and_then(|()| self.submit(&[cb], fence))
                .and_then(|()| self.wait_fence(fence));
            // SAFETY: the fence is no longer in use (waited for, or never submitted).
            unsafe { self.device.destroy_fence(fence, None) };
            done
        });
        if result.is_err() {
            // The work may still be queued: let it finish before freeing its buffer.
            let _ = self.wait_idle();
        }
        // SAFETY: the command buffer is no longer pending; the pool is locked.
        unsafe { self.device.free_command_buffers(*pool, &[cb]) };
        result
    }

    /// A barrier that orders every earlier command's memory accesses (compute, transfer,
    /// host) before every later command's.
    pub fn full_barrier(&self, cb: vk::CommandBuffer) {
        let barrier = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE)];
        // SAFETY: `cb` is in the recording state (callers' contract).
        unsafe {
            self.device.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::PipelineStageFlags::ALL_COMMANDS | vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &barrier,
                &[],
                &[],
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GEMM's configuration, as NVIDIA lists it, and the neighbours a driver lists
    /// too (f16 results, 8-bit inputs, other sizes, workgroup scope) that it cannot use.
    #[test]
    fn only_the_16x16x16_f16_f32_subgroup_configuration_serves_the_gemm() {
        let gemm = vk::CooperativeMatrixPropertiesKHR {
            m_size: 16,
            n_size: 16,
            k_size: 16,
            a_type: vk::ComponentTypeKHR::FLOAT16,
            b_type: vk::ComponentTypeKHR::FLOAT16,
            c_type: vk::ComponentTypeKHR::FLOAT32,
            result_type: vk::ComponentTypeKHR::FLOAT32,
            scope: vk::ScopeKHR::SUBGROUP,
            ..Default::default()
        };
        assert!(is_gemm_coop_config(&gemm));
        let others = [
            vk::CooperativeMatrixPropertiesKHR {
                c_type: vk::ComponentTypeKHR::FLOAT16,
                result_type: vk::ComponentTypeKHR::FLOAT16,
                ..gemm
            },
            vk::CooperativeMatrixPropertiesKHR {
                a_type: vk::ComponentTypeKHR::SINT8,
                b_type: vk::ComponentTypeKHR::SINT8,
                ..gemm
            },
            vk::CooperativeMatrixPropertiesKHR {
                m_size: 16,
                n_size: 8,
                k_size: 16,
                ..gemm
            },
            vk::CooperativeMatrixPropertiesKHR {
                scope: vk::ScopeKHR::WORKGROUP,
                ..gemm
            },
        ];
        for (i, other) in others.iter().enumerate() {
            assert!(!is_gemm_coop_config(other), "configuration {i}");
        }
    }
}
