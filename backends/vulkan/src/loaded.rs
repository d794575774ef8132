//! A plan on the device. At load: the buffers (device-local, weights through staging
//! copies), one pipeline per kernel variant (SPIR-V from kiln-kernels-wgsl's `spirv`,
//! built through the device's pipeline cache), a descriptor set per weights buffer (the
//! params block and the weights window chosen by dynamic offsets): [`crate::objects`].
//! Per step ([`Device`]): the step buffer goes up through a small copy command buffer,
//! then the step's command buffer runs: recorded once per step shape from its dispatch
//! list, and replayed afterwards (the Vulkan analogue of a CUDA graph). It ends by copying
//! the logits to a mapped readback buffer, so `read_logits` only waits and reads.

use std::sync::Arc;

use ash::vk;
use kiln_gpu_host::timers::Timestamps;
use kiln_gpu_host::{Cache, Output};
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_kernels_wgsl::buffers::Buffers;
use kiln_kernels_wgsl::program::StepList;
use kiln_kernels_wgsl::run::{Device, STEP_BYTES};
use kiln_kernels_wgsl::{Program, Readback};

use crate::buffer::{Buffer, Kind, StagingCopies};
use crate::device::{NAME, Vk, vk_error};
use crate::objects::Objects;
use crate::pipeline_cache::CacheStats;

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

/// A plan's objects on the device (the `Device` that kiln-kernels-wgsl's step flow
/// drives).
pub struct VulkanPlan {
    /// First: dropping it waits for the device, before the buffers below go.
    objects: Objects,
    vk: Arc<Vk>,
    /// A step was submitted and not yet waited for.
    pending: bool,
    pub cache: CacheStats,
    buffers: Buffers<Buffer>,
    step_host: Buffer,
    /// What a step copies out of the arena: its logits, then its greedy ids
    /// (argmax.wgsl's), each at its `readback` offset.
    readback: Buffer,
    /// The program's outputs (logits, ids) and where each lies in `readback`.
    readback_at: Readback,
}

impl std::fmt::Debug for VulkanPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VulkanPlan")
            .field("weights_buffers", &self.buffers.weights.len())
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl VulkanPlan {
    pub(crate) fn new(
        (vk, build): (&Arc<Vk>, &Build),
        program: &Program,
        plan: &Plan,
        source: &dyn WeightSource,
    ) -> Result<VulkanPlan, BackendError> {
        let buffers = Buffers::new(program, |_, label, bytes| {
            Buffer::new(vk, label, bytes, Kind::Device)
        })?;
        let staging = |capacity| StagingCopies::new(vk, capacity);
        buffers.upload(program, plan, source, NAME, staging)?;
        let (objects, cache) = Objects::new(vk, program, build)?;
        let readback_at = Readback::of(program);
        let loaded = VulkanPlan {
            objects,
            vk: vk.clone(),
            pending: false,
            cache,
            buffers,
            step_host: Buffer::new(vk, "step staging", STEP_BYTES, Kind::Upload)?,
            readback: Buffer::new(vk, "logits", readback_at.bytes, Kind::Readback)?,
            readback_at,
        };
        loaded.write_sets(program);
        Ok(loaded)
    }

    /// Point the descriptor sets at the buffers (at load, and when the step buffer
    /// grows): set `i` binds weights buffer `i` (`Buffers::bind_group`).
    fn write_sets(&self, program: &Program) {
        let mut infos = Vec::with_capacity(5 * self.buffers.weights.len());
        for (i, &set) in self.objects.sets.iter().enumerate() {
            let bindings = self.buffers.bind_group(program, i);
            infos.extend(bindings.map(|(r, buffer, range)| {
                let info = [vk::DescriptorBufferInfo {
                    buffer: buffer.raw,
                    offset: 0,
                    range: range.unwrap_or(vk::WHOLE_SIZE),
                }];
                (set, r, info)
            }));
        }
        let writes: Vec<vk::WriteDescriptorSet<'_>> = (infos.iter())
            .map(|(set, r, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(*set)
                    .dst_binding(r.binding())
                    .descriptor_type(crate::objects::descriptor_type(*r))
                    .buffer_info(info)
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
                    d.cmd_copy_buffer(cb, self.step_host.raw, self.buffers.step.raw, &[copy]);
                    self.vk.full_barrier(cb);
                })
                .and_then(|()| d.end_command_buffer(cb))
        }
        .map_err(|e| vk_error("recording the step upload", e, 0))
    }

    fn record_into(
        &self,
        cb: vk::CommandBuffer,
        program: &Program,
        list: &StepList,
        timed: bool,
    ) -> Result<(), BackendError> {
        let (d, o) = (&self.vk.device, &self.objects);
        let timer = o.timer.filter(|_| timed);
        // Orders what compute shaders wrote before what the next ones read or write.
        let compute_barrier = || {
            let barrier = [vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::SHADER_WRITE)
                .dst_access_mask(vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE)];
            let (stage, flags) = (
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::DependencyFlags::empty(),
            );
            // SAFETY: `cb` is recording.
            unsafe { d.cmd_pipeline_barrier(cb, stage, stage, flags, &barrier, &[], &[]) };
        };
        let out_bytes = program.output.bytes_in(list.shape);
        let stamp = |query: u32| {
            if let Some(pool) = timer {
                let stage = vk::PipelineStageFlags::BOTTOM_OF_PIPE;
                // SAFETY: `cb` is recording; the pool holds two queries per launch.
                unsafe { d.cmd_write_timestamp(cb, stage, pool, query) };
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
            if let Some(pool) = timer {
                d.cmd_reset_query_pool(cb, pool, 0, program.timestamp_queries());
            }
            let mut bound = None;
            for launch in list.launches() {
                stamp(launch.queries[0]);
                // The dispatches of one launch are independent (several matrices of one
                // input): no barrier between them, but before one that reads what an
                // earlier one wrote (the int8 matvec after its quantization).
                for run in launch.runs {
                    if run.barrier {
                        compute_barrier();
                    }
                    if bound != Some(run.pipeline) {
                        let pipeline = o.pipelines[run.pipeline];
                        d.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline);
                        bound = Some(run.pipeline);
                    }
                    d.cmd_bind_descriptor_sets(
                        cb,
                        vk::PipelineBindPoint::COMPUTE,
                        o.layout,
                        0,
                        &[o.sets[run.weights_buffer]],
                        &run.dynamic_offsets(),
                    );
                    let [x, y, z] = run.workgroups;
                    d.cmd_dispatch(cb, x, y, z);
                }
                stamp(launch.queries[1]);
                compute_barrier();
            }
            if out_bytes > 0 {
                self.vk.full_barrier(cb);
                let copies: Vec<vk::BufferCopy> = (self.readback_at.copies(list.shape))
                    .map(|(src_offset, dst_offset, size)| vk::BufferCopy {
                        src_offset,
                        dst_offset,
                        size,
                    })
                    .collect();
                d.cmd_copy_buffer(cb, self.buffers.arena.raw, self.readback.raw, &copies);
            }
            self.vk.full_barrier(cb);
            d.end_command_buffer(cb)
                .map_err(|e| vk_error("recording a step", e, 0))
        }
    }
}

impl Device for VulkanPlan {
    const NAME: &'static str = NAME;
    type Recorded = vk::CommandBuffer;

    fn wait_step(&mut self) -> Result<(), BackendError> {
        self.wait()
    }

    fn grow_step(&mut self, program: &Program, bytes: u64) -> Result<(), BackendError> {
        self.buffers.step = Buffer::new(&self.vk, "step", bytes, Kind::Device)?;
        self.step_host = Buffer::new(&self.vk, "step staging", bytes, Kind::Upload)?;
        self.write_sets(program);
        Ok(())
    }

    fn write_step(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.step_host.write(0, data)?;
        self.record_upload(data.len() as u64)
    }

    /// The step's command buffer, recorded once and replayed.
    fn record(
        &mut self,
        program: &Program,
        list: &StepList,
        timed: bool,
    ) -> Result<vk::CommandBuffer, BackendError> {
        let cb = self.objects.command_buffer()?;
        if let Err(e) = self.record_into(cb, program, list, timed) {
            self.objects.free(&[cb]); // never submitted
            return Err(e);
        }
        Ok(cb)
    }

    fn release(&mut self, recorded: Vec<vk::CommandBuffer>) {
        // Not pending: `run` waits for the last step before it releases anything.
        self.objects.free(&recorded);
    }

    /// Run the step's command buffer after the step buffer's copy; it stays to be
    /// replayed (after a failed submission, the pool frees it with the plan's objects).
    fn submit(
        &mut self,
        recorded: vk::CommandBuffer,
    ) -> Result<Option<vk::CommandBuffer>, BackendError> {
        // SAFETY: the fence is not in use (the last step was waited for).
        unsafe { self.vk.device.reset_fences(&[self.objects.fence]) }
            .map_err(|e| vk_error("resetting a fence", e, 0))?;
        let buffers = [self.objects.upload_cb, recorded];
        self.vk.submit(&buffers, self.objects.fence)?;
        self.pending = true;
        Ok(Some(recorded))
    }

    fn read_output(&mut self, output: &Output, out: &mut [u8]) -> Result<(), BackendError> {
        // The step copied each of the program's outputs into the readback buffer.
        self.wait()?;
        let at = self.readback_at.find(output, NAME)?;
        self.readback.read(at, out)
    }

    fn copy_kv(&mut self, src: u64, dst: u64, regions: &[(u64, u64)]) -> Result<(), BackendError> {
        let regions: Vec<vk::BufferCopy> = (regions.iter())
            .map(|&(at, size)| vk::BufferCopy {
                src_offset: src + at,
                dst_offset: dst + at,
                size,
            })
            .collect();
        let (vk, kv) = (&self.vk, self.buffers.kv.raw);
        vk.oneshot(|cb| {
            // SAFETY: `cb` is recording; the regions lie in two distinct pages of the KV
            // buffer, so they do not overlap.
            unsafe { vk.device.cmd_copy_buffer(cb, kv, kv, &regions) };
        })
    }

    fn timestamps(&mut self, queries: u32) -> Result<Option<Timestamps>, BackendError> {
        let Some(pool) = self.objects.timer else {
            return Ok(None);
        };
        self.wait()?;
        let mut ticks = vec![0u64; queries as usize];
        // SAFETY: the pool holds these queries, all written by the last step, which is
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
        Ok(Some(Timestamps {
            ticks,
            period_ns: f64::from(self.vk.info.limits.timestamp_period),
            valid_bits: self.vk.info.timestamp_bits,
        }))
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.wait()
    }
}
