//! A plan on the device: the buffers, pipelines and bind groups built once at load, and
//! the per-step work: write the step buffer, encode one compute pass from the step
//! shape's dispatch list (made once per shape, kept in an LRU), submit. wgpu cannot
//! replay a command buffer, so the pass is encoded every step; everything that does not
//! change between steps of one shape is prepared. Params stay in the uniform buffer
//! written at load (bound by each dispatch's bind group): push constants are a native-only
//! feature and would copy every dispatch's params into every step.

use kiln_gpu_host::Lru;
use kiln_gpu_host::output::f32s_from_le;
use kiln_gpu_host::timers::{launch_times, no_timestamps};
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, DeviceProperties, LaunchTime, Step, StepShape, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_kernels_wgsl::program::ENTRY;
use kiln_kernels_wgsl::{Capabilities, Program, Resource, weights};

use crate::device::{Gpu, NAME};

/// Timestamp queries around every launch, resolved into a buffer read on demand.
struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// Nanoseconds per tick.
    period: f64,
    /// Written inside the one compute pass (TIMESTAMP_QUERY_INSIDE_PASSES); otherwise
    /// each launch gets a pass of its own with the timestamps at its ends.
    inside_passes: bool,
}

/// Step shapes whose dispatch lists are kept (least recently used dropped first).
const PREPARED: usize = 8;

/// One dispatch of a step: its pipeline, bind group (index into `Loaded::bind_groups`)
/// and workgroups.
#[derive(Clone, Copy, Debug)]
struct Run {
    pipeline: u32,
    group: u32,
    workgroups: [u32; 3],
}

/// What a step of one shape runs: the dispatches in order, and where each launch's end
/// in them (for the timestamps).
#[derive(Debug)]
struct Prepared {
    runs: Vec<Run>,
    launch_ends: Vec<usize>,
}

pub(crate) struct Loaded {
    program: Program,
    pipelines: Vec<wgpu::ComputePipeline>,
    /// A bind group per dispatch of the program (launch by launch), rebuilt only when
    /// the step buffer grows.
    bind_groups: Vec<wgpu::BindGroup>,
    /// Step shape → its dispatch list.
    prepared: Lru<StepShape, Prepared>,
    arena: wgpu::Buffer,
    /// Indexed like `program.weights.buffers`.
    weights: Vec<wgpu::Buffer>,
    kv: wgpu::Buffer,
    params: wgpu::Buffer,
    step: wgpu::Buffer,
    kv_scratch: wgpu::Buffer,
    page_bytes: u64,
    timer: Option<Timer>,
    last: Option<StepShape>,
    /// Print each kernel built and each dispatch's workgroups.
    debug: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("launches", &self.program.launches.len())
            .field("pipelines", &self.program.pipelines.len())
            .field("arena_bytes", &self.program.arena_bytes)
            .finish()
    }
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

impl Loaded {
    pub fn new(
        (gpu, properties, debug): (&Gpu, &DeviceProperties, bool),
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        let align = u64::from(gpu.limits.min_uniform_buffer_offset_alignment);
        let caps = Capabilities::of(properties, align);
        let program = Program::new(plan, source, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(NAME))?;
        let layout = &program.weights;
        let weights = layout
            .buffers
            .iter()
            .map(|b| gpu.buffer("weights", b.bytes, STORAGE))
            .collect::<Result<Vec<_>, _>>()?;
        // Flushed every 64 MiB, so that the staging copies do not pile up.
        let mut pending = 0;
        weights::upload_each(plan, layout, source, NAME, |offset, bytes| {
            let b = layout.buffer_of(offset);
            let at = offset - layout.buffers[b].start;
            gpu.queue.write_buffer(&weights[b], at, bytes);
            pending += bytes.len();
            if pending > 64 << 20 {
                gpu.queue.submit([]);
                pending = 0;
                return gpu.wait();
            }
            Ok(())
        })?;
        gpu.queue.submit([]);
        gpu.check("uploading weights")?;
        let arena = gpu.buffer("arena", program.arena_bytes, STORAGE)?;
        let kv_buffer = gpu.buffer("kv pages", program.kv_bytes, STORAGE)?;
        let page_bytes = kv.page_bytes() as u64;
        let kv_scratch = gpu.buffer("kv page copy", page_bytes, STORAGE)?;
        let params = gpu.buffer(
            "params",
            program.params.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        gpu.queue.write_buffer(&params, 0, &program.params);
        let step = gpu.buffer("step", 4096, STORAGE)?;
        let mut pipelines = Vec::with_capacity(program.pipelines.len());
        for p in &program.pipelines {
            let module = gpu
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&p.name),
                    source: wgpu::ShaderSource::Wgsl(p.source.as_str().into()),
                });
            let pipeline = gpu
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&p.name),
                    layout: None,
                    module: &module,
                    entry_point: Some(ENTRY),
                    compilation_options: Default::default(),
                    cache: None,
                });
            gpu.check(&format!("building kernel {}", p.name))?;
            pipelines.push(pipeline);
        }
        let n_queries = 2 * plan.launches.len() as u32;
        let timer = (gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY)
            && n_queries <= wgpu::QUERY_SET_MAX_QUERIES)
            .then(|| -> Result<Timer, BackendError> {
                Ok(Timer {
                    queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("launch times"),
                        ty: wgpu::QueryType::Timestamp,
                        count: n_queries,
                    }),
                    resolved: gpu.buffer(
                        "launch times",
                        u64::from(n_queries) * 8,
                        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    )?,
                    period: f64::from(gpu.queue.get_timestamp_period()),
                    inside_passes: gpu
                        .features
                        .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
                })
            })
            .transpose()?;
        let mut loaded = Loaded {
            program,
            pipelines,
            bind_groups: Vec::new(),
            prepared: Lru::new(PREPARED),
            arena,
            weights,
            kv: kv_buffer,
            params,
            step,
            kv_scratch,
            page_bytes,
            timer,
            last: None,
            debug,
        };
        if loaded.debug {
            for p in &loaded.program.pipelines {
                eprintln!("wgpu: built {} ({} bytes of WGSL)", p.name, p.source.len());
            }
        }
        loaded.bind(gpu);
        gpu.check("loading the plan")?;
        Ok(loaded)
    }

    /// (Re)build every bind group: once at load, again when the step buffer grows.
    fn bind(&mut self, gpu: &Gpu) {
        let mut groups = Vec::new();
        for dispatches in &self.program.launches {
            for d in dispatches {
                let entries: Vec<wgpu::BindGroupEntry<'_>> = d
                    .resources
                    .iter()
                    .map(|&r| wgpu::BindGroupEntry {
                        binding: r.binding(),
                        resource: match r {
                            Resource::Params => {
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &self.params,
                                    offset: d.params_offset,
                                    size: wgpu::BufferSize::new(d.params_size),
                                })
                            }
                            Resource::Arena => self.arena.as_entire_binding(),
                            Resource::Weights => {
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &self.weights[d.weights_buffer],
                                    offset: d.weights_offset,
                                    size: wgpu::BufferSize::new(d.weights_window),
                                })
                            }
                            Resource::Kv => self.kv.as_entire_binding(),
                            Resource::Step => self.step.as_entire_binding(),
                        },
                    })
                    .collect();
                let layout = self.pipelines[d.pipeline].get_bind_group_layout(0);
                groups.push(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &layout,
                    entries: &entries,
                }));
            }
        }
        self.bind_groups = groups;
    }

    /// The dispatch list of a step of `shape`: the dispatches with work, their
    /// workgroups.
    fn prepare(&self, shape: StepShape) -> Prepared {
        let mut runs = Vec::new();
        let mut launch_ends = Vec::with_capacity(self.program.launches.len());
        let mut first = 0;
        for (i, dispatches) in self.program.launches.iter().enumerate() {
            for (j, d, workgroups) in self.program.dispatches(i, shape) {
                if self.debug {
                    self.program.trace(NAME, i, d, workgroups);
                }
                runs.push(Run {
                    pipeline: d.pipeline as u32,
                    group: (first + j) as u32,
                    workgroups,
                });
            }
            first += dispatches.len();
            launch_ends.push(runs.len());
        }
        Prepared { runs, launch_ends }
    }

    pub fn execute(&mut self, gpu: &Gpu, s: &Step<'_>) -> Result<(), BackendError> {
        self.program.limits.check(s, NAME)?;
        let data = self.program.pack_step(s).map_err(|e| e.for_backend(NAME))?;
        if data.len() as u64 > self.step.size() {
            let size = (data.len() as u64).next_power_of_two();
            self.step = gpu.buffer("step", size, STORAGE)?;
            self.bind(gpu);
        }
        gpu.queue.write_buffer(&self.step, 0, &data);
        let shape = s.shape();
        self.last = Some(shape);
        if self.prepared.get(&shape).is_none() {
            let p = self.prepare(shape);
            self.prepared.insert(shape, p);
        }
        let Some(prepared) = self.prepared.get(&shape) else {
            return Err(crate::device::driver("a step's dispatch list went missing"));
        };
        let encode = |pass: &mut wgpu::ComputePass<'_>, runs: &[Run]| {
            encode(&self.pipelines, &self.bind_groups, pass, runs);
        };
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        match &self.timer {
            Some(t) if !t.inside_passes => {
                // A pass per launch, its timestamps at the pass's ends.
                let mut start = 0;
                for (i, &end) in prepared.launch_ends.iter().enumerate() {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &t.queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    encode(&mut pass, &prepared.runs[start..end]);
                    start = end;
                }
            }
            timer => {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                match timer {
                    Some(t) => {
                        let mut start = 0;
                        for (i, &end) in prepared.launch_ends.iter().enumerate() {
                            pass.write_timestamp(&t.queries, 2 * i as u32);
                            encode(&mut pass, &prepared.runs[start..end]);
                            pass.write_timestamp(&t.queries, 2 * i as u32 + 1);
                            start = end;
                        }
                    }
                    None => encode(&mut pass, &prepared.runs),
                }
            }
        }
        if let Some(t) = &self.timer {
            let n = 2 * self.program.launches.len() as u32;
            encoder.resolve_query_set(&t.queries, 0..n, &t.resolved, 0);
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.check("running a step")
    }

    pub fn read_output(&self, gpu: &Gpu, out: &mut [f32]) -> Result<(), BackendError> {
        let output = &self.program.output;
        output.check_logits(self.last, out.len(), NAME)?;
        let bytes = gpu.read(&self.arena, output.offset, out.len() as u64 * 4)?;
        f32s_from_le(&bytes, out);
        Ok(())
    }

    pub fn copy_kv_page(&self, gpu: &Gpu, src: u32, dst: u32) -> Result<(), BackendError> {
        self.program.limits.check_page_copy(src, dst, NAME)?;
        // WebGPU copies never overlap one buffer with itself: go through a scratch page.
        let (pb, src, dst) = (self.page_bytes, u64::from(src), u64::from(dst));
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.kv, src * pb, &self.kv_scratch, 0, pb);
        encoder.copy_buffer_to_buffer(&self.kv_scratch, 0, &self.kv, dst * pb, pb);
        gpu.queue.submit([encoder.finish()]);
        gpu.check("copying a KV page")
    }

    pub fn launch_times(&self, gpu: &Gpu) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(t) = &self.timer else {
            return Err(no_timestamps(NAME, &gpu.info.name));
        };
        let n = self.program.launches.len() as u64;
        let ticks: Vec<u64> = gpu
            .read(&t.resolved, 0, 16 * n)?
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(launch_times(&ticks, t.period, 64))
    }
}

/// Record `runs` into `pass`, setting a pipeline only where it changes.
fn encode(
    pipelines: &[wgpu::ComputePipeline],
    bind_groups: &[wgpu::BindGroup],
    pass: &mut wgpu::ComputePass<'_>,
    runs: &[Run],
) {
    let mut bound = u32::MAX;
    for r in runs {
        if r.pipeline != bound {
            pass.set_pipeline(&pipelines[r.pipeline as usize]);
            bound = r.pipeline;
        }
        pass.set_bind_group(0, &bind_groups[r.group as usize], &[]);
        let [x, y, z] = r.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}
