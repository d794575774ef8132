//! A plan on the device. At load: the buffers (device-local, weights through staging
//! copies), one pipeline per kernel variant (SPIR-V from [`crate::spirv`], built through
//! the device's pipeline cache), one descriptor set for every dispatch (the params block
//! chosen by a dynamic uniform offset): [`crate::objects`]. Per step: the step buffer goes
//! up through a small copy command buffer, then the step's command buffer runs: recorded
//! once per step shape (tokens, output rows), since the grids depend on nothing else, and
//! replayed afterwards (the Vulkan analogue of a CUDA graph). It ends by copying the
//! logits to a mapped readback buffer, so `read_logits` only waits and reads.

use std::sync::Arc;

use ash::vk;
use kiln_gpu_host::output::f32s_from_le;
use kiln_gpu_host::timers::{launch_times, no_timestamps};
use kiln_gpu_host::{Cache, Lru, Output, kv::leading_slots};
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, DeviceProperties, LaunchTime, Step, StepShape, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_kernels_wgsl::{Capabilities, Program, Resource, weights};

use crate::buffer::{Buffer, Kind, Uploader};
use crate::device::{DeviceInfo, NAME, Vk, vk_error};
use crate::objects::Objects;
use crate::spirv::{CacheStats, Compiler};

/// Recorded step command buffers kept (least recently used dropped first).
const RECORDED: usize = 8;
const WORKGROUP: u32 = 64;

/// How the kernels are built on this device.
#[derive(Clone, Debug)]
pub(crate) struct Build {
    /// Subgroup reductions (off: the workgroup-memory variants).
    pub subgroups: bool,
    /// The subgroup size the subgroup variants require (subgroup size control), if any.
    pub subgroup_size: Option<u32>,
    pub cache: Cache,
    /// Print each kernel built and each recorded dispatch.
    pub debug: bool,
}

/// The subgroup size to require: `wanted`, else the largest the device offers up to a
/// workgroup (fewer partial sums per reduction). None without size control.
pub(crate) fn subgroup_size(info: &DeviceInfo, wanted: Option<u32>) -> Option<u32> {
    let sc = info.size_control?;
    let size = wanted
        .unwrap_or(sc.max)
        .clamp(sc.min, sc.max.min(WORKGROUP));
    (size.is_power_of_two()
        && WORKGROUP.is_multiple_of(size)
        && WORKGROUP / size <= sc.max_workgroup_subgroups)
        .then_some(size)
}

pub(crate) struct Loaded {
    /// First: dropping it waits for the device, before the buffers below go.
    objects: Objects,
    vk: Arc<Vk>,
    program: Program,
    kv_layout: KvLayout,
    /// Step shape → its recorded command buffer.
    recorded: Lru<StepShape, vk::CommandBuffer>,
    /// A step was submitted and not yet waited for.
    pending: bool,
    last: Option<StepShape>,
    /// The largest params block (the dynamic uniform range).
    params_range: u64,
    debug: bool,
    pub cache: CacheStats,
    arena: Buffer,
    /// Indexed like `program.weights.buffers`.
    weights: Vec<Buffer>,
    kv: Buffer,
    params: Buffer,
    step: Buffer,
    step_host: Buffer,
    readback: Buffer,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("launches", &self.program.launches.len())
            .field("pipelines", &self.program.pipelines.len())
            .field("arena_bytes", &self.program.arena_bytes)
            .field("recorded", &self.recorded.len())
            .finish()
    }
}

impl Loaded {
    /// Device bytes a load of `plan` takes besides the arena and the KV pages: the
    /// Program's (weights, params blocks) and the logits readback buffer.
    pub fn device_bytes(plan: &Plan, uniform_align: u64) -> u64 {
        let readback = Output::of(plan).map_or(0, |o| o.max_bytes());
        kiln_kernels_wgsl::program::load_bytes(plan, uniform_align) + readback
    }

    pub fn new(
        (vk, properties, build): (&Arc<Vk>, &DeviceProperties, &Build),
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        let limits = &vk.info.limits;
        let caps = Capabilities::of(properties, limits.min_uniform_buffer_offset_alignment);
        // A window's base in its buffer is a dynamic offset, a u32.
        let caps = Capabilities {
            max_buffer: caps.max_buffer.min(1 << 32),
            ..caps
        };
        let program = Program::new(plan, source, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(NAME))?;
        let params_range = program
            .launches
            .iter()
            .flatten()
            .map(|d| d.params_size)
            .max()
            .unwrap_or(16);
        if params_range > u64::from(limits.max_uniform_buffer_range) {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: format!("params blocks of {params_range} bytes"),
            });
        }
        let device = |label, bytes| Buffer::new(vk, label, bytes, Kind::Device);
        let layout = &program.weights;
        let weights_buf = layout
            .buffers
            .iter()
            .map(|b| device("weights", b.bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let params = device("params", program.params.len() as u64 + params_range)?;
        let mut up = Uploader::new(vk, layout.total + program.params.len() as u64);
        up.push(&params, 0, &program.params)?;
        weights::upload_each(plan, layout, source, NAME, |offset, bytes| {
            let b = layout.buffer_of(offset);
            up.push(&weights_buf[b], offset - layout.buffers[b].start, bytes)
        })?;
        up.flush()?;
        drop(up);

        let mut compiler = Compiler::new(&vk.info, build.subgroups, &build.cache);
        let loaded = Loaded {
            objects: Objects::new(vk, &program, build, &mut compiler)?,
            vk: vk.clone(),
            kv_layout: *kv,
            recorded: Lru::new(RECORDED),
            pending: false,
            last: None,
            params_range,
            debug: build.debug,
            cache: compiler.stats(),
            arena: device("arena", program.arena_bytes)?,
            weights: weights_buf,
            kv: device("kv pages", program.kv_bytes)?,
            params,
            step: device("step", 4096)?,
            step_host: Buffer::new(vk, "step staging", 4096, Kind::Upload)?,
            readback: Buffer::new(vk, "logits", program.output.max_bytes(), Kind::Readback)?,
            program,
        };
        loaded.write_set();
        Ok(loaded)
    }

    /// Point the descriptor sets at the buffers (at load, and when the step buffer
    /// grows): set `i` binds weights buffer `i`, windows of the same size as the
    /// dispatches' (one per buffer).
    fn write_set(&self) {
        let info = |b: &Buffer, range: u64| {
            [vk::DescriptorBufferInfo {
                buffer: b.raw,
                offset: 0,
                range,
            }]
        };
        let mut infos = Vec::with_capacity(5 * self.weights.len());
        for (i, (&set, weights)) in self.objects.sets.iter().zip(&self.weights).enumerate() {
            let window = self.program.weights_windows[i];
            infos.extend([
                (set, Resource::Params, info(&self.params, self.params_range)),
                (set, Resource::Arena, info(&self.arena, vk::WHOLE_SIZE)),
                (set, Resource::Weights, info(weights, window)),
                (set, Resource::Kv, info(&self.kv, vk::WHOLE_SIZE)),
                (set, Resource::Step, info(&self.step, vk::WHOLE_SIZE)),
            ]);
        }
        let writes: Vec<vk::WriteDescriptorSet<'_>> = infos
            .iter()
            .map(|(set, r, buffer)| {
                let ty = match r {
                    Resource::Params => vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
                    Resource::Weights => vk::DescriptorType::STORAGE_BUFFER_DYNAMIC,
                    _ => vk::DescriptorType::STORAGE_BUFFER,
                };
                vk::WriteDescriptorSet::default()
                    .dst_set(*set)
                    .dst_binding(r.binding())
                    .descriptor_type(ty)
                    .buffer_info(buffer)
            })
            .collect();
        // SAFETY: the set is not in use by any pending command buffer (callers wait and
        // drop recorded ones first); the buffers are valid and have these usages.
        unsafe { self.vk.device.update_descriptor_sets(&writes, &[]) };
    }

    /// Wait for the last submitted step.
    fn wait(&mut self) -> Result<(), BackendError> {
        if self.pending {
            self.vk.wait_fence(self.objects.fence)?;
            self.pending = false;
        }
        Ok(())
    }

    pub fn synchronize(&mut self) -> Result<(), BackendError> {
        self.wait()
    }

    pub fn execute(&mut self, s: &Step<'_>) -> Result<(), BackendError> {
        self.program.limits.check(s, NAME)?;
        // Packed while the previous step may still run.
        let data = self.program.pack_step(s).map_err(|e| e.for_backend(NAME))?;
        let bytes = data.len() as u64;
        self.wait()?;
        if bytes > self.step.size {
            let size = bytes.next_power_of_two();
            self.step = Buffer::new(&self.vk, "step", size, Kind::Device)?;
            self.step_host = Buffer::new(&self.vk, "step staging", size, Kind::Upload)?;
            // The recorded steps bind the old step buffer.
            self.objects.free(&self.recorded.drain());
            self.write_set();
        }
        self.step_host.write(0, &data)?;
        let shape = s.shape();
        let replay = self.recorded(shape)?;
        self.record_upload(bytes)?;
        // SAFETY: the fence is not in use (waited for above).
        unsafe { self.vk.device.reset_fences(&[self.objects.fence]) }
            .map_err(|e| vk_error("resetting a fence", e, 0))?;
        let buffers = [self.objects.upload_cb, replay];
        self.vk.submit(&buffers, self.objects.fence)?;
        self.pending = true;
        self.last = Some(shape);
        Ok(())
    }

    /// The step's copy: step staging → step buffer, between barriers that order it after
    /// the previous step and before this one.
    fn record_upload(&self, bytes: u64) -> Result<(), BackendError> {
        let (d, cb) = (&self.vk.device, self.objects.upload_cb);
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        let copy = vk::BufferCopy {
            src_offset: 0,
            dst_offset: 0,
            size: bytes,
        };
        // SAFETY: the command buffer is not pending (the previous step was waited for);
        // its pool allows resetting single buffers; both buffers live and hold `bytes`.
        unsafe {
            d.reset_command_buffer(cb, vk::CommandBufferResetFlags::empty())
                .and_then(|()| d.begin_command_buffer(cb, &begin))
                .map(|()| {
                    self.vk.full_barrier(cb);
                    d.cmd_copy_buffer(cb, self.step_host.raw, self.step.raw, &[copy]);
                    self.vk.full_barrier(cb);
                })
                .and_then(|()| d.end_command_buffer(cb))
        }
        .map_err(|e| vk_error("recording the step upload", e, 0))
    }

    /// The command buffer of a step shape: recorded on first use, replayed afterwards.
    fn recorded(&mut self, shape: StepShape) -> Result<vk::CommandBuffer, BackendError> {
        if let Some(&cb) = self.recorded.get(&shape) {
            return Ok(cb);
        }
        let cb = self.objects.command_buffer()?;
        if let Err(e) = self.record(cb, shape) {
            self.objects.free(&[cb]); // never submitted
            return Err(e);
        }
        // No step is pending (waited for in `execute`): the evicted one may go.
        if let Some(old) = self.recorded.insert(shape, cb) {
            self.objects.free(&[old]);
        }
        Ok(cb)
    }

    fn record(&self, cb: vk::CommandBuffer, shape: StepShape) -> Result<(), BackendError> {
        let (d, o) = (&self.vk.device, &self.objects);
        let compute_barrier = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE)];
        let out_bytes = self.program.output.bytes_in(shape);
        if self.debug {
            let (t, n) = (shape.tokens, shape.outputs);
            eprintln!("vulkan: recording the step of {t} tokens, {n} outputs");
        }
        let stamp = |i: usize| {
            if let Some(t) = &o.timer {
                let stage = vk::PipelineStageFlags::BOTTOM_OF_PIPE;
                // SAFETY: `cb` is recording; the pool holds two queries per launch.
                unsafe { d.cmd_write_timestamp(cb, stage, t.pool, i as u32) };
            }
        };
        // SAFETY: `cb` is freshly allocated from this device's pool; every handle recorded
        // (pipelines, layout, set, query pool, buffers) lives as long as the recorded
        // buffer (the objects go after the pool frees it; the step buffer's replacement
        // drops every recorded buffer first). Grids and copy ranges are within the buffers
        // Program sized.
        unsafe {
            d.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
                .map_err(|e| vk_error("recording a step", e, 0))?;
            if let Some(t) = &o.timer {
                d.cmd_reset_query_pool(cb, t.pool, 0, 2 * self.program.launches.len() as u32);
            }
            let mut bound = None;
            for i in 0..self.program.launches.len() {
                stamp(2 * i);
                // The dispatches of one launch are independent (several matrices of one
                // input): no barrier between them.
                for (_, dispatch, [x, y, z]) in self.program.dispatches(i, shape) {
                    if self.debug {
                        self.program.trace(NAME, i, dispatch, [x, y, z]);
                    }
                    if bound != Some(dispatch.pipeline) {
                        let pipeline = o.pipelines[dispatch.pipeline];
                        d.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline);
                        bound = Some(dispatch.pipeline);
                    }
                    d.cmd_bind_descriptor_sets(
                        cb,
                        vk::PipelineBindPoint::COMPUTE,
                        o.layout,
                        0,
                        &[o.sets[dispatch.weights_buffer]],
                        // Dynamic offsets in binding order: params, weights (below 4 GiB:
                        // the buffers are at most that).
                        &[
                            dispatch.params_offset as u32,
                            dispatch.weights_offset as u32,
                        ],
                    );
                    d.cmd_dispatch(cb, x, y, z);
                }
                stamp(2 * i + 1);
                d.cmd_pipeline_barrier(
                    cb,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::PipelineStageFlags::COMPUTE_SHADER,
                    vk::DependencyFlags::empty(),
                    &compute_barrier,
                    &[],
                    &[],
                );
            }
            if out_bytes > 0 {
                self.vk.full_barrier(cb);
                let copy = vk::BufferCopy {
                    src_offset: self.program.output.offset,
                    dst_offset: 0,
                    size: out_bytes,
                };
                d.cmd_copy_buffer(cb, self.arena.raw, self.readback.raw, &[copy]);
            }
            self.vk.full_barrier(cb);
            d.end_command_buffer(cb)
                .map_err(|e| vk_error("recording a step", e, 0))
        }
    }

    pub fn read_output(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.program
            .output
            .check_logits(self.last, out.len(), NAME)?;
        self.wait()?;
        let mut bytes = vec![0u8; out.len() * 4];
        self.readback.read(0, &mut bytes)?;
        f32s_from_le(&bytes, out);
        Ok(())
    }

    /// Copy the first `n_tokens` token slots of page `src` (every layer's K, V and
    /// scales) into page `dst`.
    pub fn copy_kv_page(
        &mut self,
        src: u32,
        dst: u32,
        n_tokens: usize,
    ) -> Result<(), BackendError> {
        self.program.limits.check_page_copy(src, dst, NAME)?;
        let pb = self.kv_layout.page_bytes() as u64;
        let (src, dst) = (u64::from(src) * pb, u64::from(dst) * pb);
        let regions: Vec<vk::BufferCopy> = leading_slots(&self.kv_layout, n_tokens)
            .into_iter()
            .map(|(offset, size)| vk::BufferCopy {
                src_offset: src + offset,
                dst_offset: dst + offset,
                size,
            })
            .collect();
        if src == dst || regions.is_empty() {
            return Ok(());
        }
        let (vk, kv) = (&self.vk, self.kv.raw);
        vk.oneshot(|cb| {
            // SAFETY: `cb` is recording; the regions lie in two distinct pages of the KV
            // buffer (checked above), so they do not overlap.
            unsafe { vk.device.cmd_copy_buffer(cb, kv, kv, &regions) };
        })
    }

    pub fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(t) = &self.objects.timer else {
            return Err(no_timestamps(NAME, &self.vk.info.name));
        };
        let (pool, period, bits) = (t.pool, t.period, t.valid_bits);
        if self.last.is_none() {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: "no step has run".into(),
            });
        }
        self.wait()?;
        let mut ticks = vec![0u64; 2 * self.program.launches.len()];
        // SAFETY: the pool holds 2n queries, all written by the last step, which is
        // complete (waited for above).
        unsafe {
            self.vk.device.get_query_pool_results(
                pool,
                0,
                &mut ticks,
                vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
            )
        }
        .map_err(|e| vk_error("reading timestamps", e, 0))?;
        Ok(launch_times(&ticks, period, bits))
    }
}
