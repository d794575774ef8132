//! A plan on the device: the buffers, pipelines and bind groups built once at load, and
//! the per-step work: write the step buffer, record one encoder with a compute pass per
//! launch (timestamps around each when the adapter has them), submit.

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_kernels_wgsl::program::{Count, ENTRY};
use kiln_kernels_wgsl::{Capabilities, KernelError, Program, Resource, step, weights};

use crate::device::{Gpu, NAME};

pub(crate) fn kernel_error(e: KernelError) -> BackendError {
    e.for_backend(NAME)
}

/// Timestamp queries around every launch, resolved into a buffer read on demand.
struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// Nanoseconds per tick.
    period: f64,
}

pub(crate) struct Loaded {
    program: Program,
    pipelines: Vec<wgpu::ComputePipeline>,
    /// (launch, dispatch) bind groups, rebuilt only when the step buffer grows.
    bind_groups: Vec<Vec<wgpu::BindGroup>>,
    arena: wgpu::Buffer,
    weights: wgpu::Buffer,
    kv: wgpu::Buffer,
    params: wgpu::Buffer,
    step: wgpu::Buffer,
    kv_scratch: wgpu::Buffer,
    page_bytes: u64,
    timer: Option<Timer>,
    /// Tokens and output rows of the last step.
    last: (u32, u32),
    /// `KILN_DEBUG` set: print each kernel built and each dispatch's workgroups.
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

/// The capabilities the kernels may use on this device. `KILN_WGPU_SUBGROUPS=0` forces
/// the workgroup-memory reductions (the fallback of devices without subgroups).
pub(crate) fn capabilities(gpu: &Gpu) -> Capabilities {
    let forced_off = std::env::var("KILN_WGPU_SUBGROUPS").is_ok_and(|v| v == "0");
    Capabilities {
        subgroups: gpu.features.contains(wgpu::Features::SUBGROUP) && !forced_off,
        max_storage_binding: gpu.limits.max_storage_buffer_binding_size,
        uniform_align: u64::from(gpu.limits.min_uniform_buffer_offset_alignment),
    }
}

impl Loaded {
    pub fn new(
        gpu: &Gpu,
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        let program = Program::new(plan, source, kv, kv_page_count, &capabilities(gpu))
            .map_err(kernel_error)?;
        let weights = gpu.buffer("weights", program.weights.total, STORAGE)?;
        upload_weights(gpu, plan, &program, source, &weights)?;
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
                })
            })
            .transpose()?;
        let mut loaded = Loaded {
            program,
            pipelines,
            bind_groups: Vec::new(),
            arena,
            weights,
            kv: kv_buffer,
            params,
            step,
            kv_scratch,
            page_bytes,
            timer,
            last: (0, 0),
            debug: std::env::var_os("KILN_DEBUG").is_some(),
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
        let mut all = Vec::with_capacity(self.program.launches.len());
        for dispatches in &self.program.launches {
            let mut groups = Vec::with_capacity(dispatches.len());
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
                            Resource::Weights => self.weights.as_entire_binding(),
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
            all.push(groups);
        }
        self.bind_groups = all;
    }

    pub fn execute(&mut self, gpu: &Gpu, s: &Step<'_>) -> Result<(), BackendError> {
        step::check(s, &self.program.limits).map_err(kernel_error)?;
        let words = step::pack(s, self.program.rope.as_ref()).map_err(kernel_error)?;
        let bytes = words.len() as u64 * 4;
        if bytes > self.step.size() {
            self.step = gpu.buffer("step", bytes.next_power_of_two(), STORAGE)?;
            self.bind(gpu);
        }
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        gpu.queue.write_buffer(&self.step, 0, &data);
        let (n_tokens, n_outputs) = (words[0], words[1]);
        self.last = (n_tokens, n_outputs);
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        for (i, dispatches) in self.program.launches.iter().enumerate() {
            let timestamp_writes = self
                .timer
                .as_ref()
                .map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: &t.queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes,
            });
            for (d, group) in dispatches.iter().zip(&self.bind_groups[i]) {
                let [x, y, z] = d.grid.workgroups(n_tokens, n_outputs);
                if x == 0 || y == 0 || z == 0 {
                    continue;
                }
                if self.debug {
                    let name = &self.program.pipelines[d.pipeline].name;
                    eprintln!("wgpu: launch {i} {name} workgroups ({x}, {y}, {z})");
                }
                pass.set_pipeline(&self.pipelines[d.pipeline]);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x, y, z);
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
        let (offset, rows, cols) = self.program.output;
        let rows = match rows {
            Count::Tokens => self.last.0,
            Count::Outputs => self.last.1,
        } as usize;
        if out.len() != rows * cols {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("logits buffer of {} for {} values", out.len(), rows * cols),
            });
        }
        let bytes = gpu.read(&self.arena, offset, out.len() as u64 * 4)?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    pub fn copy_kv_page(&self, gpu: &Gpu, src: u32, dst: u32) -> Result<(), BackendError> {
        let n_pages = self.program.limits.kv_page_count as u64;
        let (src, dst) = (u64::from(src), u64::from(dst));
        if src >= n_pages || dst >= n_pages {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("KV page copy {src} -> {dst} outside {n_pages} pages"),
            });
        }
        // WebGPU copies never overlap one buffer with itself: go through a scratch page.
        let pb = self.page_bytes;
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.kv, src * pb, &self.kv_scratch, 0, pb);
        encoder.copy_buffer_to_buffer(&self.kv_scratch, 0, &self.kv, dst * pb, pb);
        gpu.queue.submit([encoder.finish()]);
        gpu.check("copying a KV page")
    }

    pub fn launch_times(&self, gpu: &Gpu) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(t) = &self.timer else {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: format!("timestamp queries on {}", gpu.info.name),
            });
        };
        let n = self.program.launches.len();
        let bytes = gpu.read(&t.resolved, 0, 16 * n as u64)?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        Ok((0..n)
            .map(|launch| LaunchTime {
                launch,
                seconds: ticks[2 * launch + 1].saturating_sub(ticks[2 * launch]) as f64
                    * t.period
                    * 1e-9,
            })
            .collect())
    }
}

/// Every weight to its place in the weights buffer, flushed every 64 MiB so that the
/// staging copies do not pile up.
fn upload_weights(
    gpu: &Gpu,
    plan: &Plan,
    program: &Program,
    source: &dyn WeightSource,
    buffer: &wgpu::Buffer,
) -> Result<(), BackendError> {
    let mut pending = 0usize;
    for (i, w) in plan.graph.weights.iter().enumerate() {
        let stored = source.weight(&w.name).ok_or_else(|| BackendError::Weight {
            backend: NAME,
            name: w.name.clone(),
            reason: "not in the model".into(),
        })?;
        let bytes = weights::upload_bytes(w, program.weights.matrix[i], stored.as_slice())
            .map_err(kernel_error)?;
        gpu.queue
            .write_buffer(buffer, program.weights.offsets[i], &bytes);
        pending += bytes.len();
        if pending > 64 << 20 {
            gpu.queue.submit([]);
            gpu.wait()?;
            pending = 0;
        }
    }
    gpu.queue.submit([]);
    gpu.check("uploading weights")
}
