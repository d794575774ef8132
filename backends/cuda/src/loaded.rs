//! A plan on the device: kiln-kernels-cuda's lowering of it (typed calls, see
//! `kiln_kernels_cuda::lower`), the modules of its variants compiled (or read from the
//! cache) once at load, and the buffers (arena, weights, KV pages, step, the decode
//! attention's partial results). A step packs and uploads the step buffer, then runs
//! every call's launches in order on the one stream ([`crate::run`]); decode steps are
//! captured as CUDA graphs and replayed ([`crate::graphs`]).
//!
//! Attention of steps of up to `DECODE_MAX_TOKENS` tokens takes the decode kernel (a
//! block per (KV head, token, split), GQA heads sharing each page load) and, when the
//! step splits its contexts, the combine kernel; both use the partial buffer, allocated
//! at load for the largest step and reused by every layer (the combine of one layer runs
//! before the next layer's decode, on the one stream). `CudaOptions::decode_attention`
//! off keeps the one-block-per-(head, token) kernel.

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaEvent, CudaFunction, CudaSlice};
use cudarc::nvrtc::Ptx;
use kiln_gpu_host::Output;
use kiln_gpu_host::output::{f32s_from_le, u32s_from_le};
use kiln_gpu_host::step::{RopeTable, rope_geometries, rope_table};
use kiln_gpu_host::weights::upload_each;
use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, DeviceProperties, StepLimits, StepShape, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_kernels_cuda::args::{ArgmaxArgs, ConstPtr, KernelArgs, Ptr};
use kiln_kernels_cuda::launch::{
    AttentionShape, DEFAULT_MAX_SHARED, argmax_launch, decode_shared_bytes, prefill_shared_bytes,
};
use kiln_kernels_cuda::lower::geometry::value_bytes;
use kiln_kernels_cuda::lower::{
    Args, Buffers, Lowered, lower, partial_bytes, q8_1_bytes, rows_sel,
};
use kiln_kernels_cuda::sources::{self, argmax_source};
use kiln_kernels_cuda::variant::ARGMAX_SYMBOL;
use kiln_kernels_cuda::weights::WeightLayout;
use kiln_kernels_cuda::{Entry, Kernel};

use crate::device::{Gpu, NAME, driver};
use crate::graphs::Graphs;
use crate::memory::{address, alloc, copy_in, copy_out, run};

/// The entry points of one variant's module, indexed by `Entry::index`.
pub(crate) type Functions = [Option<CudaFunction>; Entry::COUNT];

pub(crate) struct Loaded {
    /// The plan's calls, their arguments pointing at the buffers below.
    pub(crate) lowered: Lowered,
    /// Indexed like `lowered.variants`.
    pub(crate) functions: Vec<Functions>,
    argmax: CudaFunction,
    argmax_args: ArgmaxArgs,
    /// (arena_bytes) the f32 activations.
    arena: CudaSlice<u8>,
    /// (layout.total) every weight (kiln_kernels_cuda::weights).
    _weights: CudaSlice<u8>,
    /// (kv_page_count, page_bytes) the KV pages.
    kv: CudaSlice<u8>,
    /// (bytes) the decode attention splits' partial results (launch.rs: partial_floats).
    _partial: CudaSlice<u8>,
    /// (q8_1_bytes) the matvec's int8 activations (kiln_kernels_cuda::matvec).
    _q8_1: CudaSlice<u8>,
    /// (words) the step buffer, grown as steps need.
    step: CudaSlice<u8>,
    /// (max rows) argmax's token ids.
    ids: CudaSlice<u8>,
    limits: StepLimits,
    /// Each RoPE geometry of the plan (the step buffer's tables).
    rope: Vec<RopeTable>,
    kv_groups: usize,
    output: Output,
    page_bytes: u64,
    pub(crate) sm_count: u32,
    pub(crate) tensor_cores: bool,
    pub(crate) decode_attention: bool,
    /// Captured decode steps; None when graphs are off.
    pub(crate) graphs: Option<Graphs>,
    /// (launch) start and end events, once `launch_times` asked for them.
    pub(crate) timers: Option<Vec<(CudaEvent, CudaEvent)>>,
    pub(crate) last: Option<StepShape>,
    /// Whether the last step ran with the timers on.
    pub(crate) last_timed: bool,
    /// Print each launch.
    pub(crate) debug: bool,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("launches", &self.lowered.launches.len())
            .field("variants", &self.lowered.variants.len())
            .finish()
    }
}

impl Loaded {
    /// Load `plan`; `timed`: per-launch timers from the first step on (a backend whose
    /// caller asked for launch times keeps them across loads).
    pub fn new(
        (gpu, properties): (&Gpu, &DeviceProperties),
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
        timed: bool,
    ) -> Result<Loaded, BackendError> {
        let layout = WeightLayout::new(plan).map_err(|e| e.for_backend(NAME))?;
        let kv_bytes = (kv.page_bytes() as u64)
            .checked_mul(kv_page_count as u64)
            .filter(|&b| b <= u64::from(u32::MAX))
            .ok_or_else(|| BackendError::Unsupported {
                backend: NAME,
                what: format!(
                    "{kv_page_count} KV pages of {} bytes (page offsets are 32-bit)",
                    kv.page_bytes()
                ),
            })?;
        let arena_bytes = (plan.arena_bytes as u64).max(16);
        if arena_bytes / 4 > u64::from(u32::MAX) {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: format!("an arena of {arena_bytes} bytes (indices are 32-bit)"),
            });
        }
        // Checked and its variants known before anything is allocated or compiled.
        let variants = lower(plan, &layout, kv, Buffers::default())
            .map_err(|e| e.for_backend(NAME))?
            .variants;
        let output = Output::of(plan).ok_or_else(|| BackendError::Unsupported {
            backend: NAME,
            what: "a plan without an output".into(),
        })?;
        let rope = rope_geometries(plan)
            .into_iter()
            .map(|params| rope_table(plan, source, params).map_err(|e| e.for_backend(NAME)))
            .collect::<Result<Vec<_>, _>>()?;
        let (functions, argmax) = load_modules(gpu, &variants)?;

        let mut weights = alloc(gpu, layout.total, "weights")?;
        upload_each(
            plan,
            &layout.offsets,
            &layout.matrix,
            source,
            NAME,
            |offset, bytes| {
                // Packed types are repacked here: the packed copy is all the device holds.
                let bytes = layout
                    .device_bytes(plan, offset, bytes)
                    .map_err(|e| e.for_backend(NAME))?;
                copy_in(gpu, &mut weights, offset as usize, &bytes, "weights")
            },
        )?;
        let arena = alloc(gpu, arena_bytes, "the arena")?;
        let kv_buf = alloc(gpu, kv_bytes, "KV pages")?;
        let partial = alloc(gpu, partial_bytes(plan), "the attention splits")?;
        let q8_1 = alloc(gpu, q8_1_bytes(plan), "the quantized activations")?;
        let step = alloc(gpu, 4096, "the step")?;
        let max_rows = plan.max_tokens.max(plan.max_outputs) as u64;
        let ids = alloc(gpu, 4 * max_rows, "token ids")?;
        let buffers = Buffers {
            arena: address(gpu, &arena),
            weights: address(gpu, &weights),
            kv: address(gpu, &kv_buf),
            step: address(gpu, &step),
            partial: address(gpu, &partial),
            q8_1: address(gpu, &q8_1),
        };
        let lowered = lower(plan, &layout, kv, buffers).map_err(|e| e.for_backend(NAME))?;
        if gpu.decode_attention {
            raise_shared_memory(properties, &lowered, &functions)?;
        }
        let argmax_args = ArgmaxArgs {
            logits: ConstPtr::new(buffers.arena + output.offset),
            ids: Ptr::new(address(gpu, &ids)),
            step: ConstPtr::new(buffers.step),
            rows_sel: rows_sel(output.rows),
            cols: output.cols as u32,
        };
        let debug = gpu.debug;
        let mut loaded = Loaded {
            lowered,
            functions,
            argmax,
            argmax_args,
            arena,
            _weights: weights,
            kv: kv_buf,
            _partial: partial,
            _q8_1: q8_1,
            step,
            ids,
            limits: StepLimits::new(plan, kv, kv_page_count),
            rope,
            kv_groups: kv.n_groups().max(1),
            output,
            page_bytes: kv.page_bytes() as u64,
            // The attention splits fill the device's multiprocessors.
            sm_count: properties.compute_units as u32,
            tensor_cores: gpu.tensor_cores,
            decode_attention: gpu.decode_attention,
            graphs: (gpu.graphs && !debug).then(Graphs::default),
            timers: None,
            last: None,
            last_timed: false,
            debug,
        };
        if timed {
            loaded.start_timers(gpu)?;
        }
        gpu.stream
            .synchronize()
            .map_err(|e| driver("loading the plan", e))?;
        Ok(loaded)
    }

    /// Check and pack step `s` and upload it (growing the step buffer, and pointing every
    /// call at the new one, when it does not fit).
    pub(crate) fn upload_step(
        &mut self,
        gpu: &Gpu,
        s: &kiln_ir::backend::Step<'_>,
    ) -> Result<(), BackendError> {
        self.limits.check(s, NAME)?;
        let data = kiln_gpu_host::step::pack(s, &self.rope, self.kv_groups)
            .map_err(|e| e.for_backend(NAME))?;
        if data.len() > self.step.len() {
            self.step = alloc(gpu, (data.len() as u64).next_power_of_two(), "the step")?;
            let at = address(gpu, &self.step);
            self.lowered.set_step(at);
            self.argmax_args.step = ConstPtr::new(at);
            // The graphs hold the old step buffer's address.
            if let Some(g) = &mut self.graphs {
                g.clear();
            }
        }
        copy_in(gpu, &mut self.step, 0, &data, "the step")
    }

    /// (rows, cols) of the plan's output in the last step.
    pub fn output_shape(&self) -> Result<(usize, usize), BackendError> {
        let last = self.last.ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no step has run".into(),
        })?;
        Ok((self.output.rows_in(last), self.output.cols))
    }

    pub fn read_output(&self, gpu: &Gpu, out: &mut [f32]) -> Result<(), BackendError> {
        self.output.check_logits(self.last, out.len(), NAME)?;
        let mut bytes = vec![0u8; out.len() * 4];
        copy_out(
            gpu,
            &self.arena,
            self.output.offset as usize,
            &mut bytes,
            "the logits",
        )?;
        f32s_from_le(&bytes, out);
        Ok(())
    }

    /// The greedy token of each output row of the last step, chosen on the device.
    pub fn argmax(&self, gpu: &Gpu, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        self.output
            .check_argmax(self.last, out.len(), vocab, NAME)?;
        let Some(l) = argmax_launch(out.len() as u32) else {
            return Ok(());
        };
        gpu.ctx
            .bind_to_thread()
            .map_err(|e| driver("binding the CUDA context", e))?;
        run(gpu, &self.argmax, &l, self.argmax_args.as_bytes())
            .map_err(|e| driver("launching argmax", e))?;
        let mut bytes = vec![0u8; out.len() * 4];
        copy_out(gpu, &self.ids, 0, &mut bytes, "token ids")?;
        u32s_from_le(&bytes, out);
        Ok(())
    }

    pub fn copy_kv_page(&self, gpu: &Gpu, src: u32, dst: u32) -> Result<(), BackendError> {
        self.limits.check_page_copy(src, dst, NAME)?;
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
}

/// Compile (or read from the cache) the module of every variant and argmax's, on a few
/// threads, and look up their entry points.
fn load_modules(
    gpu: &Gpu,
    variants: &[kiln_kernels_cuda::Variant],
) -> Result<(Vec<Functions>, CudaFunction), BackendError> {
    let mut jobs = Vec::with_capacity(variants.len() + 1);
    for v in variants {
        let src = sources::source(v).ok_or_else(|| BackendError::Unsupported {
            backend: NAME,
            what: format!("kernel {}", v.name()),
        })?;
        jobs.push((v.name(), src));
    }
    jobs.push(("argmax".to_string(), argmax_source()));
    let mut cubins = crate::compile::compile_all(&gpu.compiler, &jobs)
        .map_err(|(name, e)| driver(&format!("building kernel {name}"), e))?
        .into_iter();
    let mut load = |name: &str| -> Result<_, BackendError> {
        let cubin = cubins.next().unwrap_or_default();
        gpu.ctx
            .load_module(Ptx::from_binary(cubin))
            .map_err(|e| driver(&format!("loading kernel {name}"), e))
    };
    let mut functions = Vec::with_capacity(variants.len());
    for v in variants {
        let module = load(&v.name())?;
        let mut f: Functions = Default::default();
        for &e in v.entries() {
            let symbol = v.symbol(e);
            f[e.index()] = Some(
                module
                    .load_function(&symbol)
                    .map_err(|err| driver(&format!("loading {symbol}"), err))?,
            );
        }
        functions.push(f);
    }
    let argmax = load("argmax")?
        .load_function(ARGMAX_SYMBOL)
        .map_err(|e| driver("loading argmax", e))?;
    Ok((functions, argmax))
}

/// Raise the decode and prefill attention kernels' dynamic shared memory limit where a
/// call needs more than the default 48 KiB (decode: F16 heads of more than 184 dims;
/// prefill: heads of more than 160), up to what the device lets a block have.
fn raise_shared_memory(
    properties: &DeviceProperties,
    lowered: &Lowered,
    functions: &[Functions],
) -> Result<(), BackendError> {
    let max_shared = properties.shared_memory_bytes.unwrap_or(0);
    // (variant, [decode, prefill]) the limit set so far.
    let mut raised = vec![[0u32; 2]; lowered.variants.len()];
    for call in lowered.launches.iter().flatten() {
        let v = &lowered.variants[call.variant];
        let Args::Kv(a) = &call.args else { continue };
        if v.kernel != Kernel::Attention {
            continue;
        }
        let shape =
            AttentionShape::of(a, value_bytes(v)).ok_or_else(|| BackendError::Unsupported {
                backend: NAME,
                what: format!("attention of {a:?}"),
            })?;
        let wants = [
            (Entry::Decode, decode_shared_bytes(&shape)),
            (Entry::Prefill, prefill_shared_bytes(&shape)),
        ];
        for (slot, (entry, shared)) in wants.into_iter().enumerate() {
            let Some(f) = &functions[call.variant][entry.index()] else {
                continue;
            };
            let done = &mut raised[call.variant][slot];
            if shared as usize > max_shared {
                return Err(BackendError::Unsupported {
                    backend: NAME,
                    what: format!(
                        "{} with {shared} bytes of shared memory a block (the device has {max_shared})",
                        v.symbol(entry)
                    ),
                });
            }
            if shared > DEFAULT_MAX_SHARED && shared > *done {
                f.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared as i32,
                )
                .map_err(|e| {
                    driver(
                        &format!("raising the shared memory of {}", v.symbol(entry)),
                        e,
                    )
                })?;
                *done = shared;
            }
        }
    }
    Ok(())
}
