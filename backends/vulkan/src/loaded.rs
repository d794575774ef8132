//! A plan on the device. At load: the buffers (device-local, weights through staging
//! copies), one pipeline per kernel variant (SPIR-V from [`crate::spirv`], built through
//! the device's pipeline cache), one descriptor set for every dispatch (the params block
//! chosen by a dynamic uniform offset). Per step: the step buffer goes up through a small
//! copy command buffer, then the step's command buffer runs: recorded once per step shape
//! (tokens, output rows), since the grids depend on nothing else, and replayed afterwards
//! (the Vulkan analogue of a CUDA graph). It ends by copying the logits to a mapped
//! readback buffer, so `read_logits` only waits and reads.

use std::sync::Arc;

use ash::vk;
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_kernels_wgsl::program::Count;
use kiln_kernels_wgsl::{Capabilities, KernelError, Program, Resource, step, weights};

use crate::buffer::{Buffer, Kind, Uploader};
use crate::device::{NAME, Vk, vk_error};
use crate::objects::Objects;
use crate::spirv::{CacheStats, Compiler};

/// Recorded step command buffers kept (least recently used dropped first).
const RECORDED: usize = 8;
const WORKGROUP: u32 = 64;

pub(crate) fn kernel_error(e: KernelError) -> BackendError {
    e.for_backend(NAME)
}

/// How the kernels are built on this device.
#[derive(Clone, Debug)]
pub(crate) struct Build {
    /// Subgroup reductions (off: the workgroup-memory variants).
    pub subgroups: bool,
    /// The subgroup size the subgroup variants require (subgroup size control), if any.
    pub subgroup_size: Option<u32>,
    pub cache_dir: Option<std::path::PathBuf>,
}

/// The subgroup size to require: `KILN_VULKAN_SUBGROUP_SIZE`, else the largest the device
/// offers up to a workgroup (fewer partial sums per reduction). None without size control.
pub(crate) fn subgroup_size(vk: &Vk) -> Option<u32> {
    let sc = vk.info.size_control?;
    let wanted = std::env::var("KILN_VULKAN_SUBGROUP_SIZE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(sc.max);
    let size = wanted.clamp(sc.min, sc.max.min(WORKGROUP));
    (size.is_power_of_two()
        && WORKGROUP.is_multiple_of(size)
        && WORKGROUP / size <= sc.max_workgroup_subgroups)
        .then_some(size)
}

pub(crate) struct Timer {
    pub(crate) pool: vk::QueryPool,
    /// Nanoseconds per tick.
    pub(crate) period: f64,
    pub(crate) mask: u64,
}

pub(crate) struct Loaded {
    vk: Arc<Vk>,
    program: Program,
    kv_layout: KvLayout,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    pipelines: Vec<vk::Pipeline>,
    descriptor_pool: vk::DescriptorPool,
    set: vk::DescriptorSet,
    commands: vk::CommandPool,
    /// Re-recorded every step: the step buffer's copy.
    upload_cb: vk::CommandBuffer,
    /// (tokens, outputs) → the step's command buffer; most recently used last.
    recorded: Vec<((u32, u32), vk::CommandBuffer)>,
    fence: vk::Fence,
    /// A step was submitted and not yet waited for.
    pending: bool,
    timer: Option<Timer>,
    /// Tokens and output rows of the last step; whether any step ran.
    last: (u32, u32),
    ran: bool,
    /// The largest params block (the dynamic uniform range).
    params_range: u64,
    /// `KILN_DEBUG`: print each kernel built and, when a step shape is recorded, each
    /// dispatch's workgroups.
    debug: bool,
    pub cache: CacheStats,
    arena: Buffer,
    weights: Buffer,
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

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = self.vk.wait_idle();
        let d = &self.vk.device;
        // SAFETY: the device is idle, so nothing created here is in use; each object was
        // created from this device and is destroyed once (the pool frees its buffers).
        unsafe {
            d.destroy_command_pool(self.commands, None);
            d.destroy_fence(self.fence, None);
            if let Some(t) = &self.timer {
                d.destroy_query_pool(t.pool, None);
            }
            for &p in &self.pipelines {
                d.destroy_pipeline(p, None);
            }
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_pool(self.descriptor_pool, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
        // The buffers drop after this, with the device idle.
    }
}

/// Bytes of the plan's output at its largest: the readback buffer.
pub(crate) fn readback_bytes(plan: &Plan) -> u64 {
    let Some(out) = plan.graph.output else {
        return 0;
    };
    let ty = &plan.graph.values[out.0 as usize];
    let rows = match ty.rows() {
        kiln_ir::graph::Rows::Tokens => plan.max_tokens,
        kiln_ir::graph::Rows::Outputs => plan.max_outputs,
    };
    (rows * ty.cols() * 4) as u64
}

impl Loaded {
    pub fn new(
        vk: &Arc<Vk>,
        build: &Build,
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        let limits = &vk.info.limits;
        let caps = Capabilities {
            subgroups: build.subgroups,
            max_storage_binding: u64::from(limits.max_storage_buffer_range),
            uniform_align: limits.min_uniform_buffer_offset_alignment.max(16),
        };
        let program = Program::new(plan, source, kv, kv_page_count, &caps).map_err(kernel_error)?;
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
        let weights_buf = Buffer::new(vk, "weights", program.weights.total, Kind::Device)?;
        let arena = Buffer::new(vk, "arena", program.arena_bytes, Kind::Device)?;
        let kv_buf = Buffer::new(vk, "kv pages", program.kv_bytes, Kind::Device)?;
        let params = Buffer::new(
            vk,
            "params",
            program.params.len() as u64 + params_range,
            Kind::Device,
        )?;
        let step_bytes = 4096;
        let step_buf = Buffer::new(vk, "step", step_bytes, Kind::Device)?;
        let step_host = Buffer::new(vk, "step staging", step_bytes, Kind::Upload)?;
        let readback = Buffer::new(vk, "logits", readback_bytes(plan), Kind::Readback)?;

        let mut up = Uploader::new(vk, program.weights.total + program.params.len() as u64);
        up.push(&params, 0, &program.params)?;
        for (i, w) in plan.graph.weights.iter().enumerate() {
            let stored = source.weight(&w.name).ok_or_else(|| BackendError::Weight {
                backend: NAME,
                name: w.name.clone(),
                reason: "not in the model".into(),
            })?;
            let bytes = weights::upload_bytes(w, program.weights.matrix[i], stored.as_slice())
                .map_err(kernel_error)?;
            up.push(&weights_buf, program.weights.offsets[i], &bytes)?;
        }
        up.flush()?;
        drop(up);

        let mut objects = Objects::new(vk);
        let (set_layout, layout) = objects.layouts()?;
        let mut compiler = Compiler::new(&vk.info, build.subgroups, build.cache_dir.clone());
        let debug = std::env::var_os("KILN_DEBUG").is_some();
        let pipelines = objects.pipelines(&mut compiler, &program, layout, build, debug)?;
        let (descriptor_pool, set) = objects.descriptor_set(set_layout)?;
        let commands = objects.command_pool()?;
        let fence = objects.fence()?;
        let upload_cb = objects.command_buffer(commands)?;
        let timer = objects.timer(2 * plan.launches.len() as u32)?;
        objects.disarm();

        let loaded = Loaded {
            vk: vk.clone(),
            program,
            kv_layout: *kv,
            set_layout,
            layout,
            pipelines,
            descriptor_pool,
            set,
            commands,
            upload_cb,
            recorded: Vec::new(),
            fence,
            pending: false,
            timer,
            last: (0, 0),
            ran: false,
            params_range,
            debug,
            cache: compiler.stats,
            arena,
            weights: weights_buf,
            kv: kv_buf,
            params,
            step: step_buf,
            step_host,
            readback,
        };
        loaded.write_set();
        Ok(loaded)
    }

    /// Point the descriptor set at the buffers (at load, and when the step buffer grows).
    fn write_set(&self) {
        let info = |b: &Buffer, range: u64| {
            [vk::DescriptorBufferInfo {
                buffer: b.raw,
                offset: 0,
                range,
            }]
        };
        let params = info(&self.params, self.params_range);
        let arena = info(&self.arena, vk::WHOLE_SIZE);
        let weights = info(&self.weights, vk::WHOLE_SIZE);
        let kv = info(&self.kv, vk::WHOLE_SIZE);
        let step = info(&self.step, vk::WHOLE_SIZE);
        fn write<'a>(
            set: vk::DescriptorSet,
            r: Resource,
            ty: vk::DescriptorType,
            buffer: &'a [vk::DescriptorBufferInfo; 1],
        ) -> vk::WriteDescriptorSet<'a> {
            vk::WriteDescriptorSet::default()
                .dst_set(set)
                .dst_binding(r.binding())
                .descriptor_type(ty)
                .buffer_info(buffer)
        }
        let set = self.set;
        let storage = vk::DescriptorType::STORAGE_BUFFER;
        let writes = [
            write(
                set,
                Resource::Params,
                vk::DescriptorType::UNIFORM_BUFFER_DYNAMIC,
                &params,
            ),
            write(set, Resource::Arena, storage, &arena),
            write(set, Resource::Weights, storage, &weights),
            write(set, Resource::Kv, storage, &kv),
            write(set, Resource::Step, storage, &step),
        ];
        // SAFETY: the set is not in use by any pending command buffer (callers wait and
        // drop recorded ones first); the buffers are valid and have these usages.
        unsafe { self.vk.device.update_descriptor_sets(&writes, &[]) };
    }

    /// Wait for the last submitted step.
    fn wait(&mut self) -> Result<(), BackendError> {
        if self.pending {
            self.vk.wait_fence(self.fence)?;
            self.pending = false;
        }
        Ok(())
    }

    pub fn synchronize(&mut self) -> Result<(), BackendError> {
        self.wait()
    }

    pub fn execute(&mut self, s: &Step<'_>) -> Result<(), BackendError> {
        step::check(s, &self.program.limits).map_err(kernel_error)?;
        // Packed while the previous step may still run.
        let words = step::pack(s, self.program.rope.as_ref()).map_err(kernel_error)?;
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let bytes = data.len() as u64;
        self.wait()?;
        if bytes > self.step.size {
            let size = bytes.next_power_of_two();
            self.step = Buffer::new(&self.vk, "step", size, Kind::Device)?;
            self.step_host = Buffer::new(&self.vk, "step staging", size, Kind::Upload)?;
            self.forget_recorded();
            self.write_set();
        }
        self.step_host.write(0, &data)?;
        let shape = (words[0], words[1]);
        let replay = self.recorded(shape)?;
        self.record_upload(bytes)?;
        // SAFETY: the fence is not in use (waited for above).
        unsafe { self.vk.device.reset_fences(&[self.fence]) }
            .map_err(|e| vk_error("resetting a fence", e, 0))?;
        self.vk.submit(&[self.upload_cb, replay], self.fence)?;
        self.pending = true;
        self.last = shape;
        self.ran = true;
        Ok(())
    }

    fn forget_recorded(&mut self) {
        let cbs: Vec<vk::CommandBuffer> = self.recorded.drain(..).map(|(_, cb)| cb).collect();
        if !cbs.is_empty() {
            // SAFETY: no step is pending (callers waited); the buffers are from this pool.
            unsafe { self.vk.device.free_command_buffers(self.commands, &cbs) };
        }
    }

    /// The step's copy: step staging → step buffer, between barriers that order it after
    /// the previous step and before this one.
    fn record_upload(&self, bytes: u64) -> Result<(), BackendError> {
        let (d, cb) = (&self.vk.device, self.upload_cb);
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
    fn recorded(&mut self, shape: (u32, u32)) -> Result<vk::CommandBuffer, BackendError> {
        if let Some(i) = self.recorded.iter().position(|(s, _)| *s == shape) {
            let entry = self.recorded.remove(i);
            self.recorded.push(entry);
            return Ok(entry.1);
        }
        if self.recorded.len() == RECORDED {
            let (_, old) = self.recorded.remove(0);
            // SAFETY: no step is pending (waited for in `execute`); from this pool.
            unsafe { self.vk.device.free_command_buffers(self.commands, &[old]) };
        }
        let cb = Objects::allocate(&self.vk, self.commands)?;
        if let Err(e) = self.record(cb, shape) {
            // SAFETY: never submitted; from this pool.
            unsafe { self.vk.device.free_command_buffers(self.commands, &[cb]) };
            return Err(e);
        }
        self.recorded.push((shape, cb));
        Ok(cb)
    }

    fn record(
        &self,
        cb: vk::CommandBuffer,
        (n_tokens, n_outputs): (u32, u32),
    ) -> Result<(), BackendError> {
        let d = &self.vk.device;
        let compute_barrier = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE)];
        let (offset, rows, cols) = self.program.output;
        let rows = match rows {
            Count::Tokens => n_tokens,
            Count::Outputs => n_outputs,
        };
        let out_bytes = u64::from(rows) * cols as u64 * 4;
        if self.debug {
            eprintln!("vulkan: recording the step of {n_tokens} tokens, {n_outputs} outputs");
        }
        // SAFETY: `cb` is freshly allocated from this device's pool; every handle recorded
        // (pipelines, layout, set, query pool, buffers) lives as long as the recorded
        // buffer (they are destroyed in Drop, after the pool; the step buffer's
        // replacement drops every recorded buffer first). Grids and copy ranges are
        // within the buffers Program sized.
        unsafe {
            d.begin_command_buffer(cb, &vk::CommandBufferBeginInfo::default())
                .map_err(|e| vk_error("recording a step", e, 0))?;
            if let Some(t) = &self.timer {
                d.cmd_reset_query_pool(cb, t.pool, 0, 2 * self.program.launches.len() as u32);
            }
            let mut bound = None;
            for (i, dispatches) in self.program.launches.iter().enumerate() {
                if let Some(t) = &self.timer {
                    d.cmd_write_timestamp(
                        cb,
                        vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                        t.pool,
                        2 * i as u32,
                    );
                }
                // The dispatches of one launch are independent (several matrices of one
                // input): no barrier between them.
                for dispatch in dispatches {
                    let [x, y, z] = dispatch.grid.workgroups(n_tokens, n_outputs);
                    if x == 0 || y == 0 || z == 0 {
                        continue;
                    }
                    if self.debug {
                        let name = &self.program.pipelines[dispatch.pipeline].name;
                        eprintln!("vulkan: launch {i} {name} workgroups ({x}, {y}, {z})");
                    }
                    if bound != Some(dispatch.pipeline) {
                        d.cmd_bind_pipeline(
                            cb,
                            vk::PipelineBindPoint::COMPUTE,
                            self.pipelines[dispatch.pipeline],
                        );
                        bound = Some(dispatch.pipeline);
                    }
                    d.cmd_bind_descriptor_sets(
                        cb,
                        vk::PipelineBindPoint::COMPUTE,
                        self.layout,
                        0,
                        &[self.set],
                        &[dispatch.params_offset as u32],
                    );
                    d.cmd_dispatch(cb, x, y, z);
                }
                if let Some(t) = &self.timer {
                    d.cmd_write_timestamp(
                        cb,
                        vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                        t.pool,
                        2 * i as u32 + 1,
                    );
                }
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
                    src_offset: offset,
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
        let (_, rows, cols) = self.program.output;
        let rows = match rows {
            Count::Tokens => self.last.0,
            Count::Outputs => self.last.1,
        } as usize;
        if !self.ran || out.len() != rows * cols {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("logits buffer of {} for {} values", out.len(), rows * cols),
            });
        }
        self.wait()?;
        let mut bytes = vec![0u8; out.len() * 4];
        self.readback.read(0, &mut bytes)?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
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
        let n_pages = self.program.limits.kv_page_count as u64;
        let (src, dst) = (u64::from(src), u64::from(dst));
        if src >= n_pages || dst >= n_pages {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("KV page copy {src} -> {dst} outside {n_pages} pages"),
            });
        }
        let regions = page_copy_regions(&self.kv_layout, src, dst, n_tokens);
        if src == dst || regions.is_empty() {
            return Ok(());
        }
        let kv = self.kv.raw;
        let vk = &self.vk;
        vk.oneshot(|cb| {
            // SAFETY: `cb` is recording; the regions lie in two distinct pages of the KV
            // buffer (checked above), so they do not overlap.
            unsafe { vk.device.cmd_copy_buffer(cb, kv, kv, &regions) };
        })
    }

    pub fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(t) = &self.timer else {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: format!("timestamp queries on {}", self.vk.info.name),
            });
        };
        if !self.ran {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: "no step has run".into(),
            });
        }
        let (pool, period, mask) = (t.pool, t.period, t.mask);
        self.wait()?;
        let n = self.program.launches.len();
        let mut ticks = vec![0u64; 2 * n];
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
        Ok((0..n)
            .map(|launch| LaunchTime {
                launch,
                seconds: ((ticks[2 * launch + 1] & mask).wrapping_sub(ticks[2 * launch] & mask)
                    & mask) as f64
                    * period
                    * 1e-9,
            })
            .collect())
    }
}

/// The copy regions of `n_tokens` leading token slots of a page, per layer: K values, V
/// values, and for FP8 the K and V scales. The whole page at once when it is full.
pub(crate) fn page_copy_regions(
    kv: &KvLayout,
    src: u64,
    dst: u64,
    n_tokens: usize,
) -> Vec<vk::BufferCopy> {
    let pb = kv.page_bytes() as u64;
    let region = |offset: usize, size: usize| vk::BufferCopy {
        src_offset: src * pb + offset as u64,
        dst_offset: dst * pb + offset as u64,
        size: size as u64,
    };
    let n = n_tokens.min(kv.kv_page_size());
    if n == kv.kv_page_size() {
        return vec![region(0, pb as usize)];
    }
    if n == 0 {
        return Vec::new();
    }
    let heads = kv.n_kv_heads();
    let values = n * heads * kv.head_dim() * kv.dtype().value_bytes();
    let mut out = Vec::new();
    for layer in 0..kv.n_layers() {
        for (offset, size) in [
            (kv.k_offset(layer, 0, 0), values),
            (kv.v_offset(layer, 0, 0), values),
            (kv.k_scale_offset(layer, 0, 0), n * heads * 4),
            (kv.v_scale_offset(layer, 0, 0), n * heads * 4),
        ] {
            if let Some(offset) = offset {
                out.push(region(offset, size));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_page_copies_take_the_leading_slots_of_every_region() {
        let kv = KvLayout::new(2, 3, 64).unwrap(); // FP8: values and scales
        let pb = kv.page_bytes() as u64;
        let whole = page_copy_regions(&kv, 1, 4, 16);
        assert_eq!(whole.len(), 1);
        assert_eq!(
            (whole[0].src_offset, whole[0].dst_offset, whole[0].size),
            (pb, 4 * pb, pb)
        );
        let part = page_copy_regions(&kv, 1, 4, 5);
        assert_eq!(part.len(), 2 * 4);
        assert_eq!(part[0].size, 5 * 3 * 64);
        assert_eq!(part[2].size, 5 * 3 * 4);
        assert_eq!(
            part[1].src_offset,
            pb + kv.v_offset(0, 0, 0).unwrap() as u64
        );
        assert!(part.iter().all(|r| r.dst_offset - r.src_offset == 3 * pb));
        let f16 = kv.with_dtype(kiln_ir::kv_layout::KvDtype::F16).unwrap();
        assert_eq!(page_copy_regions(&f16, 0, 1, 3).len(), 2 * 2);
        assert!(page_copy_regions(&kv, 0, 1, 0).is_empty());
    }
}
