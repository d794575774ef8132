//! A plan on the device: the modules compiled (or read from the cache) once at load, the
//! buffers (params, arena, weights, KV pages, step), and the per-step work: check and
//! pack the step, upload it, launch every dispatch in order on the one stream. The
//! Program (kiln-kernels-wgsl) decides every dispatch; kiln-kernels-cuda its geometry.
//!
//! Attention of steps of up to `DECODE_MAX_TOKENS` tokens takes the decode kernel
//! (attention_decode.cu: a block per (KV head, token, split), GQA heads sharing each page
//! load) and, when the step splits its contexts, the combine kernel; both take the
//! partial buffer, allocated at load for the largest step and reused by every layer (the
//! combine of one layer runs before the next layer's decode, on the one stream).
//! `CudaOptions::decode_attention` off keeps the one-block-per-(head, token) kernel.
//! Decode steps are captured as CUDA graphs and replayed ([`crate::graphs`]).

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute};
use cudarc::driver::{CudaEvent, CudaFunction, CudaSlice};
use cudarc::nvrtc::Ptx;
use kiln_gpu_host::output::{f32s_from_le, le_bytes, u32s_from_le};
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, DeviceProperties, LaunchTime, Step, StepShape, WeightSource};
use kiln_ir::graph::Rows;
use kiln_ir::kv_layout::{KvDtype, KvLayout};
use kiln_kernels_cuda::launch::{
    AttentionShape, DECODE_MAX_TOKENS, DEFAULT_MAX_SHARED, Launch, argmax_launch,
    attention_combine_launch, attention_decode_launch, attention_prefill_launch, attention_splits,
    decode_shared_bytes, launch, length_class, partial_bytes_max, prefill_shared_bytes,
};
use kiln_kernels_cuda::sources::{
    self, ARGMAX_ENTRY, COMBINE_ENTRY, DECODE_ENTRY, ENTRY, MMA_ENTRY, PREFILL_ENTRY,
};
use kiln_kernels_wgsl::{Capabilities, Program, Variant, weights};

use crate::device::{Gpu, NAME, driver};
use crate::graphs::Graphs;
use crate::memory::{address, alloc, copy_in, copy_out, run};

/// The functions of one kernel variant's module.
struct Kernel {
    variant: Variant,
    name: String,
    main: CudaFunction,
    /// The tensor-core entry of a matmul.
    mma: Option<CudaFunction>,
    /// The decode and combine entries of an attention variant.
    decode: Option<(CudaFunction, CudaFunction)>,
    /// The tensor-core prefill entry of the FP8 attention variant.
    prefill: Option<CudaFunction>,
}

pub(crate) struct Loaded {
    program: Program,
    /// Indexed like `program.pipelines`.
    kernels: Vec<Kernel>,
    argmax: CudaFunction,
    /// (params bytes) every dispatch's params block, uploaded once.
    params: CudaSlice<u8>,
    /// (arena_bytes) the f32 activations.
    arena: CudaSlice<u8>,
    /// (weights.total) every weight ([`weights::WeightLayout`]).
    weights: CudaSlice<u8>,
    /// (kv_page_count, page_bytes) the KV pages.
    kv: CudaSlice<u8>,
    /// (bytes) the decode attention splits' partial results (launch.rs: partial_floats):
    /// (tokens, heads, splits, head_dim) acc then (tokens, heads, splits, 2) (m, l), f32.
    partial: CudaSlice<u8>,
    /// Indexed like `program.launches`, then its dispatches: the attention shape of an
    /// attention dispatch that may take the decode kernel.
    attention: Vec<Vec<Option<AttentionShape>>>,
    sm_count: u32,
    /// Captured decode steps; None when graphs are off.
    graphs: Option<Graphs>,
    /// (words) the step buffer, grown as steps need.
    step: CudaSlice<u8>,
    /// (4) the argmax params block: rows_sel, cols, logits, pad.
    argmax_params: CudaSlice<u8>,
    /// (max_outputs) argmax's token ids.
    ids: CudaSlice<u8>,
    page_bytes: u64,
    tensor_cores: bool,
    /// (launch) start and end events, once `launch_times` asked for them.
    timers: Option<Vec<(CudaEvent, CudaEvent)>>,
    last: Option<StepShape>,
    /// Print each dispatch's launch.
    debug: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("launches", &self.program.launches.len())
            .field("kernels", &self.kernels.len())
            .field("arena_bytes", &self.program.arena_bytes)
            .finish()
    }
}

impl Loaded {
    pub fn new(
        (gpu, properties): (&Gpu, &DeviceProperties),
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        // Every buffer within the 32-bit offsets of the properties; no subgroup variants
        // (the CUDA kernels use warp shuffles always).
        let caps = Capabilities {
            subgroups: false,
            ..Capabilities::of(properties, 16)
        };
        // The WGSL program runs more than the CUDA kernels do (Gemma 3's ops).
        if let Some(l) = plan
            .launches
            .iter()
            .find(|l| !sources::runs(&l.op, &plan.graph))
        {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: format!("{} ({}): no CUDA kernel", l.kernel, l.op),
            });
        }
        let program = Program::new(plan, source, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(NAME))?;
        let debug = gpu.debug;
        let mut kernels = Vec::with_capacity(program.pipelines.len());
        // (name, source) of every module: the plan's variants, then argmax.
        let mut sources_of = Vec::with_capacity(program.pipelines.len() + 1);
        for p in &program.pipelines {
            let src = sources::source(&p.variant).ok_or_else(|| BackendError::Unsupported {
                backend: NAME,
                what: format!("kernel {}", p.name),
            })?;
            sources_of.push((p.name.clone(), src));
        }
        sources_of.push(("argmax".to_string(), sources::argmax_source()));
        let mut cubins = compile_all(gpu, &sources_of)?.into_iter();
        let mut load = |name: &str| -> Result<_, BackendError> {
            let cubin = cubins.next().unwrap_or_default();
            gpu.ctx
                .load_module(Ptx::from_binary(cubin))
                .map_err(|e| driver(&format!("loading kernel {name}"), e))
        };
        for p in &program.pipelines {
            let module = load(&p.name)?;
            let function = |entry: &str| {
                module
                    .load_function(entry)
                    .map_err(|e| driver(&format!("loading {} of {}", entry, p.name), e))
            };
            let mma = if sources::has_tensor_cores(&p.variant) {
                Some(function(MMA_ENTRY)?)
            } else {
                None
            };
            let decode = if p.variant.op == "attention" {
                Some((function(DECODE_ENTRY)?, function(COMBINE_ENTRY)?))
            } else {
                None
            };
            let prefill = if sources::has_prefill(&p.variant) {
                Some(function(PREFILL_ENTRY)?)
            } else {
                None
            };
            kernels.push(Kernel {
                variant: p.variant,
                name: p.name.clone(),
                main: function(ENTRY)?,
                mma,
                decode,
                prefill,
            });
        }
        let argmax = load("argmax")?
            .load_function(ARGMAX_ENTRY)
            .map_err(|e| driver("loading argmax", e))?;
        let mut weights_buf = alloc(gpu, program.weights.total, "weights")?;
        weights::upload_each(plan, &program.weights, source, NAME, |offset, bytes| {
            copy_in(gpu, &mut weights_buf, offset as usize, bytes, "weights")
        })?;
        let mut params = alloc(gpu, program.params.len() as u64, "params")?;
        copy_in(gpu, &mut params, 0, &program.params, "params")?;
        let out = &program.output;
        let rows_sel = match out.rows {
            Rows::Tokens => 0u32,
            Rows::Outputs => 1,
        };
        let words = [rows_sel, out.cols as u32, (out.offset / 4) as u32, 0];
        let mut argmax_params = alloc(gpu, 16, "argmax params")?;
        copy_in(
            gpu,
            &mut argmax_params,
            0,
            &le_bytes(&words),
            "argmax params",
        )?;
        let max_rows = plan.max_tokens.max(plan.max_outputs) as u64;
        let attention = attention_shapes(gpu, properties, &program, &kernels)?;
        let partial_bytes = attention
            .iter()
            .flatten()
            .flatten()
            .map(partial_bytes_max)
            .max()
            .unwrap_or(0);
        let loaded = Loaded {
            partial: alloc(gpu, partial_bytes, "the attention splits")?,
            attention,
            // The attention splits fill the device's multiprocessors.
            sm_count: properties.compute_units as u32,
            graphs: (gpu.graphs && !debug).then(Graphs::default),
            arena: alloc(gpu, program.arena_bytes, "the arena")?,
            kv: alloc(gpu, program.kv_bytes, "KV pages")?,
            step: alloc(gpu, 4096, "the step")?,
            ids: alloc(gpu, 4 * max_rows, "token ids")?,
            page_bytes: kv.page_bytes() as u64,
            tensor_cores: gpu.tensor_cores,
            program,
            kernels,
            argmax,
            params,
            weights: weights_buf,
            argmax_params,
            timers: None,
            last: None,
            debug,
        };
        gpu.stream
            .synchronize()
            .map_err(|e| driver("loading the plan", e))?;
        Ok(loaded)
    }

    pub fn execute(&mut self, gpu: &Gpu, s: &Step<'_>) -> Result<(), BackendError> {
        self.program.limits.check(s, NAME)?;
        // The driver's current context is per thread; a server may step from any thread.
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| driver("binding the CUDA context", e))?;
        let data = self.program.pack_step(s).map_err(|e| e.for_backend(NAME))?;
        if data.len() > self.step.len() {
            self.step = alloc(gpu, (data.len() as u64).next_power_of_two(), "the step")?;
            // The graphs point at the old step buffer.
            if let Some(g) = &mut self.graphs {
                g.clear();
            }
        }
        copy_in(gpu, &mut self.step, 0, &data, "the step")?;
        let shape = s.shape();
        let (n_tokens, n_outputs) = (shape.tokens as u32, shape.outputs as u32);
        self.last = Some(shape);
        let max_context = s.positions.iter().max().map_or(0, |&p| p.saturating_add(1));
        let class = length_class(max_context);
        let graphed = self.timers.is_none() && n_tokens <= DECODE_MAX_TOKENS;
        match &mut self.graphs {
            Some(g) if graphed => {
                let shape = (n_tokens, n_outputs, class);
                if g.replay(shape)
                    .map_err(|e| driver("replaying a decode graph", e))?
                {
                    return Ok(());
                }
                // Capture needs the graphs and `self` at once: take them out meanwhile.
                let mut g = std::mem::take(g);
                let captured = g.capture(
                    &gpu.stream,
                    shape,
                    || self.launch_all(gpu, n_tokens, n_outputs, class),
                    driver,
                );
                self.graphs = Some(g);
                if let Err(e) = captured {
                    // Whatever failed inside the capture launched nothing: say so, turn
                    // graphs off, and run this step (and the next ones) directly.
                    eprintln!("kiln: CUDA graphs off: {e}");
                    self.graphs = None;
                    self.launch_all(gpu, n_tokens, n_outputs, class)?;
                }
                Ok(())
            }
            _ => self.launch_all(gpu, n_tokens, n_outputs, class),
        }
    }

    /// Launch every dispatch of a step of `n_tokens` tokens, `n_outputs` outputs and
    /// length class `class` on the stream (recorded instead when it is capturing).
    fn launch_all(
        &self,
        gpu: &Gpu,
        n_tokens: u32,
        n_outputs: u32,
        class: u32,
    ) -> Result<(), BackendError> {
        let params = address(gpu, &self.params);
        let all_buffers = [
            address(gpu, &self.arena),
            address(gpu, &self.weights),
            address(gpu, &self.kv),
            address(gpu, &self.step),
        ];
        let partial = address(gpu, &self.partial);
        for (i, dispatches) in self.program.launches.iter().enumerate() {
            if let Some(timers) = &self.timers {
                timers[i]
                    .0
                    .record(&gpu.stream)
                    .map_err(|e| driver("recording a timer", e))?;
            }
            for (j, d) in dispatches.iter().enumerate() {
                let k = &self.kernels[d.pipeline];
                let p = params + d.params_offset;
                // The dispatch's window of the weights (offsets in its params are from it).
                let mut buffers = all_buffers;
                buffers[1] += d.weights_base;
                let shape = self.attention[i][j];
                if let (Some(shape), Some((decode, combine))) = (shape, &k.decode) {
                    let splits = attention_splits(&shape, n_tokens, class, self.sm_count);
                    if let Some(l) = attention_decode_launch(&shape, n_tokens, splits) {
                        let args = [p, buffers[0], buffers[1], buffers[2], buffers[3], partial];
                        self.trace(i, k, &l);
                        run(gpu, decode, &l, &args).map_err(|e| {
                            driver(&format!("launching {} decode (launch {i})", k.name), e)
                        })?;
                        if let Some(l) = attention_combine_launch(&shape, n_tokens, splits) {
                            let args = [
                                p,
                                buffers[0],
                                buffers[1],
                                buffers[2],
                                buffers[3],
                                partial,
                                u64::from(splits),
                            ];
                            self.trace(i, k, &l);
                            run(gpu, combine, &l, &args).map_err(|e| {
                                driver(&format!("launching {} combine (launch {i})", k.name), e)
                            })?;
                        }
                        continue;
                    }
                }
                let prefill = shape.zip(k.prefill.as_ref()).and_then(|(shape, f)| {
                    attention_prefill_launch(&shape, n_tokens, self.tensor_cores).map(|l| (f, l))
                });
                if let Some((f, l)) = prefill {
                    self.trace(i, k, &l);
                    run(
                        gpu,
                        f,
                        &l,
                        &[p, buffers[0], buffers[1], buffers[2], buffers[3]],
                    )
                    .map_err(|e| {
                        driver(&format!("launching {} prefill (launch {i})", k.name), e)
                    })?;
                    continue;
                }
                let Some(l) = launch(&k.variant, &d.grid, n_tokens, n_outputs, self.tensor_cores)
                else {
                    continue;
                };
                let f = match (l.entry, &k.mma) {
                    (MMA_ENTRY, Some(mma)) => mma,
                    _ => &k.main,
                };
                self.trace(i, k, &l);
                run(
                    gpu,
                    f,
                    &l,
                    &[p, buffers[0], buffers[1], buffers[2], buffers[3]],
                )
                .map_err(|e| driver(&format!("launching {} (launch {i})", k.name), e))?;
            }
            if let Some(timers) = &self.timers {
                timers[i]
                    .1
                    .record(&gpu.stream)
                    .map_err(|e| driver("recording a timer", e))?;
            }
        }
        Ok(())
    }

    /// `debug`: print a launch.
    fn trace(&self, i: usize, k: &Kernel, l: &Launch) {
        if self.debug {
            eprintln!(
                "cuda: launch {i} {} {} grid {:?} block {:?} shared {}",
                k.name, l.entry, l.grid, l.block, l.shared_bytes
            );
        }
    }

    /// (rows, cols) of the plan's output in the last step.
    pub fn output_shape(&self) -> Result<(usize, usize), BackendError> {
        let last = self.last.ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no step has run".into(),
        })?;
        Ok((self.program.output.rows_in(last), self.program.output.cols))
    }

    pub fn read_output(&self, gpu: &Gpu, out: &mut [f32]) -> Result<(), BackendError> {
        let output = &self.program.output;
        output.check_logits(self.last, out.len(), NAME)?;
        let mut bytes = vec![0u8; out.len() * 4];
        copy_out(
            gpu,
            &self.arena,
            output.offset as usize,
            &mut bytes,
            "the logits",
        )?;
        f32s_from_le(&bytes, out);
        Ok(())
    }

    /// The greedy token of each output row of the last step, chosen on the device.
    pub fn argmax(&self, gpu: &Gpu, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        let output = &self.program.output;
        output.check_argmax(self.last, out.len(), vocab, NAME)?;
        let Some(l) = argmax_launch(out.len() as u32) else {
            return Ok(());
        };
        let args = [
            address(gpu, &self.argmax_params),
            address(gpu, &self.arena),
            address(gpu, &self.ids),
            address(gpu, &self.step),
        ];
        run(gpu, &self.argmax, &l, &args).map_err(|e| driver("launching argmax", e))?;
        let mut bytes = vec![0u8; out.len() * 4];
        copy_out(gpu, &self.ids, 0, &mut bytes, "token ids")?;
        u32s_from_le(&bytes, out);
        Ok(())
    }

    pub fn copy_kv_page(&self, gpu: &Gpu, src: u32, dst: u32) -> Result<(), BackendError> {
        self.program.limits.check_page_copy(src, dst, NAME)?;
        let (src, dst) = (u64::from(src), u64::from(dst));
        if src == dst {
            return Ok(());
        }
        let base = address(gpu, &self.kv);
        let pb = self.page_bytes;
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| driver("copying a KV page", e))?;
        // SAFETY: both pages lie inside the KV buffer (checked above: page < n_pages and
        // the buffer holds n_pages pages) and do not overlap (src != dst); the copy is
        // ordered on the stream with the launches that use them.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                base + dst * pb,
                base + src * pb,
                pb as usize,
                gpu.stream.cu_stream(),
            )
        }
        .map_err(|e| driver("copying a KV page", e))
    }

    /// Per-launch times of the last step. The first call turns the timers on (events
    /// around every launch cost a little on every step) and answers Unsupported: times
    /// come from the next step on.
    pub fn launch_times(&mut self, gpu: &Gpu) -> Result<Vec<LaunchTime>, BackendError> {
        let Some(timers) = &self.timers else {
            let mut timers = Vec::with_capacity(self.program.launches.len());
            for _ in &self.program.launches {
                let event = || {
                    gpu.ctx
                        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                        .map_err(|e| driver("creating a timer", e))
                };
                timers.push((event()?, event()?));
            }
            self.timers = Some(timers);
            // Timed steps launch directly (events between launches): drop the graphs.
            if let Some(g) = &mut self.graphs {
                g.clear();
            }
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: "launch times before a timed step (timers are on from the next step)".into(),
            });
        };
        gpu.stream
            .synchronize()
            .map_err(|e| driver("waiting for the timers", e))?;
        timers
            .iter()
            .enumerate()
            .map(|(launch, (start, end))| {
                let ms = start
                    .elapsed_ms(end)
                    .map_err(|e| driver("reading a timer", e))?;
                Ok(LaunchTime {
                    launch,
                    seconds: f64::from(ms) * 1e-3,
                })
            })
            .collect()
    }
}

/// The attention shape of every dispatch that may take the decode kernel (None for the
/// others, and for all with the decode attention off), read from its params block;
/// raises the decode and prefill kernels' dynamic shared memory limit where they need
/// more than the default 48 KiB (decode: F16 heads of more than 184 dims; prefill: heads
/// of more than 160), up to what the device lets a block have.
fn attention_shapes(
    gpu: &Gpu,
    properties: &DeviceProperties,
    program: &Program,
    kernels: &[Kernel],
) -> Result<Vec<Vec<Option<AttentionShape>>>, BackendError> {
    let on = gpu.decode_attention;
    let max_shared = properties.shared_memory_bytes.unwrap_or(0);
    // (pipeline, [decode, prefill]) the dynamic shared memory limit set so far.
    let mut raised = vec![[0u32; 2]; kernels.len()];
    let mut shapes = Vec::with_capacity(program.launches.len());
    for dispatches in &program.launches {
        let mut row = Vec::with_capacity(dispatches.len());
        for d in dispatches {
            let k = &kernels[d.pipeline];
            let (Some((decode, _)), Some(kv), true) = (&k.decode, k.variant.kv, on) else {
                row.push(None);
                continue;
            };
            let value_bytes = match kv {
                KvDtype::F8E4M3 => 1,
                KvDtype::F16 => 2,
            };
            let at = d.params_offset as usize;
            let words: Vec<u32> = program
                .params
                .get(at..at + 28)
                .unwrap_or_default()
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = AttentionShape::from_params(&words, value_bytes).ok_or_else(|| {
                BackendError::Unsupported {
                    backend: NAME,
                    what: format!("attention params {words:?} of {}", k.name),
                }
            })?;
            // The largest each function needs over the dispatches of its pipeline.
            let wants = [
                (Some(decode), decode_shared_bytes(&shape)),
                (k.prefill.as_ref(), prefill_shared_bytes(&shape)),
            ];
            for (slot, (f, shared)) in wants.into_iter().enumerate() {
                let Some(f) = f else { continue };
                let done = &mut raised[d.pipeline][slot];
                if shared as usize > max_shared {
                    return Err(BackendError::Unsupported {
                        backend: NAME,
                        what: format!(
                            "{} with {shared} bytes of shared memory a block (the device has {max_shared})",
                            k.name
                        ),
                    });
                }
                if shared > DEFAULT_MAX_SHARED && shared > *done {
                    f.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        shared as i32,
                    )
                    .map_err(|e| driver(&format!("raising the shared memory of {}", k.name), e))?;
                    *done = shared;
                }
            }
            row.push(Some(shape));
        }
        shapes.push(row);
    }
    Ok(shapes)
}

/// The cubin of every (name, source), in order: from the disk cache, or compiled by NVRTC
/// on a few threads (a first start compiles a dozen kernels of about a second each).
fn compile_all(gpu: &Gpu, jobs: &[(String, String)]) -> Result<Vec<Vec<u8>>, BackendError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, src)) = jobs.get(i) else {
                            return done;
                        };
                        done.push((i, gpu.compiler.cubin(name, src)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut cubins: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];
    for (i, r) in results {
        let cubin = r.map_err(|e| driver(&format!("building kernel {}", jobs[i].0), e))?;
        cubins[i] = Some(cubin);
    }
    cubins
        .into_iter()
        .zip(jobs)
        .map(|(c, (name, _))| {
            c.ok_or_else(|| {
                driver(
                    &format!("building kernel {name}"),
                    "a compile thread failed",
                )
            })
        })
        .collect()
}
