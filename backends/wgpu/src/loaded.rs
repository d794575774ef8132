//! A plan's objects on wgpu: the buffers, pipelines and a bind group per weights buffer,
//! built once at load, and the calls of a step ([`Device`]): write the step buffer, encode
//! one compute pass from the step shape's dispatch list (kiln-kernels-wgsl's `run` keeps
//! one per shape), submit. wgpu cannot replay a command buffer, so the pass is encoded
//! every step (the next one's while the device runs the last: `run` asks for it as the
//! logits are read); everything that does not change between steps of one shape is
//! prepared. Params stay in the uniform buffer written at load (bound by each dispatch's
//! bind group): push constants are a native-only feature and would copy every dispatch's
//! params into every step.

use std::sync::Arc;

use kiln_gpu_host::Output;
use kiln_gpu_host::timers::Timestamps;
use kiln_gpu_host::upload::{Staged, StagedCopies};
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_kernels_wgsl::buffers::Buffers;
use kiln_kernels_wgsl::program::{ENTRY, Run, StepList};
use kiln_kernels_wgsl::run::Device;
use kiln_kernels_wgsl::{Program, Readback, Resource, Variant};

use crate::device::{Gpu, NAME};

/// Timestamp queries at the ends of every launch's pass (a timed step runs a pass per
/// launch: timestamps at pass boundaries are what every adapter with queries writes),
/// resolved into a buffer, copied after the outputs in the readback buffer.
#[derive(Debug)]
struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
}

/// A plan's objects on wgpu (the `Device` that kiln-kernels-wgsl's step flow drives).
#[derive(Debug)]
pub struct WgpuPlan {
    gpu: Arc<Gpu>,
    /// Each with whether it writes the KV pages (its bind group layout: the KV binding
    /// read-write, else read-only; WebGPU binds each as the shader declares it).
    pipelines: Vec<(wgpu::ComputePipeline, bool)>,
    /// The two bind group layouts (KV read-only, read-write): the params block and the
    /// weights window at dynamic offsets, so that a step's dispatches share a few bind
    /// groups (wgpu tracks each bind group a submitted step holds).
    layouts: [wgpu::BindGroupLayout; 2],
    /// Per weights buffer, a bind group of each layout; rebuilt only when the step buffer
    /// grows.
    bind_groups: Vec<[wgpu::BindGroup; 2]>,
    buffers: Buffers<wgpu::Buffer>,
    /// What a step copies out of the arena at its end (`readback_at`: where each output
    /// lies in it) and, timed, its timestamps (after the outputs), mapped when read.
    readback: wgpu::Buffer,
    readback_at: Readback,
    /// A KV page: WebGPU copies never overlap one buffer with itself.
    kv_scratch: wgpu::Buffer,
    timer: Option<Timer>,
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// Weights and params go up as queue writes, which wgpu stages itself: each flush of the
/// upload plan submits them and waits, so that they do not pile up.
struct QueueWrites<'a>(&'a Gpu);

impl StagedCopies<wgpu::Buffer> for QueueWrites<'_> {
    fn stage(&mut self, piece: Staged<'_, wgpu::Buffer>) -> Result<(), BackendError> {
        (self.0.queue).write_buffer(piece.dst, piece.offset, piece.bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        self.0.queue.submit([]);
        self.0.wait("uploading weights")
    }
}

impl WgpuPlan {
    pub(crate) fn new(
        gpu: &Arc<Gpu>,
        program: &Program,
        plan: &Plan,
        source: &dyn WeightSource,
        debug: bool,
    ) -> Result<WgpuPlan, BackendError> {
        let buffers = Buffers::new(program, |r, label, bytes| {
            let usage = match r {
                Resource::Params => wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                _ => STORAGE,
            };
            gpu.buffer(label, bytes, usage)
        })?;
        buffers.upload(program, plan, source, NAME, |_| Ok(QueueWrites(gpu)))?;
        let layouts = [false, true].map(|writes_kv| bind_group_layout(gpu, writes_kv));
        let pipeline_layouts = layouts.each_ref().map(|l| {
            (gpu.device).create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(l)],
                immediate_size: 0,
            })
        });
        let mut pipelines = Vec::with_capacity(program.pipelines.len());
        for p in &program.pipelines {
            let writes_kv = Variant::writes_kv(p.variant.op);
            let module = (gpu.device).create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&p.name),
                source: wgpu::ShaderSource::Wgsl(p.source.as_str().into()),
            });
            let pipeline = (gpu.device).create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&p.name),
                layout: Some(&pipeline_layouts[usize::from(writes_kv)]),
                module: &module,
                entry_point: Some(ENTRY),
                compilation_options: Default::default(),
                cache: None,
            });
            gpu.check(&format!("building kernel {}", p.name))?;
            if debug {
                eprintln!("wgpu: built {} ({} bytes of WGSL)", p.name, p.source.len());
            }
            pipelines.push((pipeline, writes_kv));
        }
        let readback_at = Readback::of(program);
        let read = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let bytes = readback_at.bytes + 8 * u64::from(program.timestamp_queries());
        let mut loaded = WgpuPlan {
            readback: gpu.buffer("logits", bytes, read)?,
            readback_at,
            gpu: gpu.clone(),
            pipelines,
            layouts,
            bind_groups: Vec::new(),
            buffers,
            kv_scratch: gpu.buffer("kv page copy", program.kv_page_bytes, STORAGE)?,
            timer: Timer::new(gpu, program.timestamp_queries())?,
        };
        loaded.bind(program);
        gpu.check("loading the plan")?;
        Ok(loaded)
    }

    /// (Re)build every bind group: once at load, again when the step buffer grows. Bind
    /// group `i` binds weights buffer `i` (`Buffers::bind_group`).
    fn bind(&mut self, program: &Program) {
        let groups = (0..self.buffers.weights.len()).map(|i| {
            let entries = self
                .buffers
                .bind_group(program, i)
                .map(|(r, buffer, size)| {
                    let size = size.and_then(wgpu::BufferSize::new);
                    wgpu::BindGroupEntry {
                        binding: r.binding(),
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: 0,
                            size,
                        }),
                    }
                });
            self.layouts.each_ref().map(|layout| {
                (self.gpu.device).create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout,
                    entries: &entries,
                })
            })
        });
        self.bind_groups = groups.collect();
    }

    /// Record `runs` into `pass`, setting a pipeline only where it changes.
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>, runs: &[Run]) {
        let mut bound = None;
        for r in runs {
            let (pipeline, writes_kv) = &self.pipelines[r.pipeline];
            if bound != Some(r.pipeline) {
                pass.set_pipeline(pipeline);
                bound = Some(r.pipeline);
            }
            let group = &self.bind_groups[r.weights_buffer][usize::from(*writes_kv)];
            pass.set_bind_group(0, group, &r.dynamic_offsets());
            let [x, y, z] = r.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }
}

/// The one bind group layout of every kernel (with the KV binding as `writes_kv` says):
/// params and the weights window at dynamic offsets, the rest whole buffers.
fn bind_group_layout(gpu: &Gpu, writes_kv: bool) -> wgpu::BindGroupLayout {
    let entry = |r: Resource| {
        let ty = match r {
            Resource::Params => wgpu::BufferBindingType::Uniform,
            _ => wgpu::BufferBindingType::Storage {
                read_only: !r.written(writes_kv),
            },
        };
        wgpu::BindGroupLayoutEntry {
            binding: r.binding(),
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: r.dynamic(),
                min_binding_size: None,
            },
            count: None,
        }
    };
    (gpu.device).create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &Resource::ALL.map(entry),
    })
}

impl Timer {
    /// `queries` timestamp queries, where the adapter has them.
    fn new(gpu: &Gpu, queries: u32) -> Result<Option<Timer>, BackendError> {
        if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY)
            || queries > wgpu::QUERY_SET_MAX_QUERIES
        {
            return Ok(None);
        }
        Ok(Some(Timer {
            queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("launch times"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            }),
            resolved: gpu.buffer(
                "launch times",
                u64::from(queries) * 8,
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            )?,
        }))
    }
}

impl Device for WgpuPlan {
    const NAME: &'static str = NAME;
    /// A step's commands, submitted once: the next step's are encoded while the device
    /// runs the last one.
    type Recorded = wgpu::CommandBuffer;

    fn grow_step(&mut self, program: &Program, bytes: u64) -> Result<(), BackendError> {
        self.buffers.step = self.gpu.buffer("step", bytes, STORAGE)?;
        self.bind(program);
        Ok(())
    }

    fn write_step(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.gpu.queue.write_buffer(&self.buffers.step, 0, data);
        Ok(())
    }

    /// A step's commands: its list in one compute pass (where `timed`, a pass per launch
    /// with the timestamps at its ends, resolved at the end), then its outputs' copies.
    fn record(
        &mut self,
        program: &Program,
        list: &StepList,
        timed: bool,
    ) -> Result<wgpu::CommandBuffer, BackendError> {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        match self.timer.as_ref().filter(|_| timed) {
            Some(t) => {
                for launch in list.launches() {
                    let [start, end] = launch.queries;
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &t.queries,
                            beginning_of_pass_write_index: Some(start),
                            end_of_pass_write_index: Some(end),
                        }),
                    });
                    self.encode(&mut pass, launch.runs);
                }
                let n = program.timestamp_queries();
                encoder.resolve_query_set(&t.queries, 0..n, &t.resolved, 0);
                let at = self.readback_at.bytes;
                encoder.copy_buffer_to_buffer(&t.resolved, 0, &self.readback, at, 8 * u64::from(n));
            }
            None => self.encode(
                &mut encoder.begin_compute_pass(&Default::default()),
                &list.runs,
            ),
        }
        for (src, dst, bytes) in self.readback_at.copies(list.shape) {
            let (arena, readback) = (&self.buffers.arena, &self.readback);
            encoder.copy_buffer_to_buffer(arena, src, readback, dst, bytes);
        }
        let commands = encoder.finish();
        self.gpu.check("encoding a step")?;
        Ok(commands)
    }

    fn submit(
        &mut self,
        commands: wgpu::CommandBuffer,
    ) -> Result<Option<wgpu::CommandBuffer>, BackendError> {
        self.gpu.queue.submit([commands]);
        self.gpu.check("running a step").map(|()| None)
    }

    fn read_output(&mut self, output: &Output, out: &mut [u8]) -> Result<(), BackendError> {
        let at = self.readback_at.find(output, NAME)?;
        self.gpu.read(&self.readback, at, out)
    }

    fn copy_kv(&mut self, src: u64, dst: u64, regions: &[(u64, u64)]) -> Result<(), BackendError> {
        // Through the scratch page, at the regions' offsets in a page.
        let (kv, scratch) = (&self.buffers.kv, &self.kv_scratch);
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        for &(at, bytes) in regions {
            encoder.copy_buffer_to_buffer(kv, src + at, scratch, at, bytes);
        }
        for &(at, bytes) in regions {
            encoder.copy_buffer_to_buffer(scratch, at, kv, dst + at, bytes);
        }
        self.gpu.queue.submit([encoder.finish()]);
        self.gpu.check("copying a KV page")
    }

    fn timestamps(&mut self, queries: u32) -> Result<Option<Timestamps>, BackendError> {
        if self.timer.is_none() {
            return Ok(None);
        }
        let mut bytes = vec![0u8; 8 * queries as usize];
        self.gpu
            .read(&self.readback, self.readback_at.bytes, &mut bytes)?;
        let period_ns = f64::from(self.gpu.queue.get_timestamp_period());
        Ok(Some(Timestamps::from_le_bytes(&bytes, period_ns, 64)))
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.gpu.wait("synchronizing")
    }
}
