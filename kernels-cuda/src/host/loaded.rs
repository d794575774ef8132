//! A plan on a device: its lowering ([`crate::lower`]: typed calls), the modules of its
//! variants built once at load, and the buffers (arena, weights, KV pages, step, the
//! decode attention's partial results, the matvec's q8_1 activations, argmax's ids,
//! top-k's candidates). A
//! step packs and uploads the step buffer, then runs every call's launches in order
//! ([`super::run`]); decode steps are captured as graphs and replayed
//! ([`super::graphs`]).
//!
//! Attention of steps of up to `DECODE_MAX_TOKENS` tokens takes the decode kernel (a
//! block per (KV head, token, split), GQA heads sharing each page load) and, when the
//! step splits its contexts, the combine kernel; both use the partial buffer, allocated
//! at load for the largest step and reused by every layer (the combine of one layer runs
//! before the next layer's decode, in the work's order). `Paths::decode_attention` off
//! keeps the one-block-per-(head, token) kernel.

use kiln_gpu_host::Output;
use kiln_gpu_host::output::{f32s_from_le, u32s_from_le};
use kiln_gpu_host::step::{RopeTable, rope_geometries, rope_table};
use kiln_gpu_host::weights::upload_each;
use kiln_ir::Plan;
use kiln_ir::backend::{
    BackendError, Candidate, DeviceProperties, StepLimits, StepShape, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;

use super::device::{Contents, Device, Functions, Modules, Paths, driver_error};
use super::graphs::Graphs;
use super::memory::{Allocation, alloc};
use crate::args::{ArgmaxArgs, ConstPtr, KernelArgs, Ptr, TopKArgs};
use crate::launch::{
    AttentionShape, DEFAULT_MAX_SHARED, TOP_K_MAX, argmax_launch, decode_shared_bytes,
    prefill_entry, prefill_shared_bytes, prefill_wgmma_entry, prefill_wgmma_shared_bytes,
    top_k_launch,
};
use crate::lower::geometry::value_bytes;
use crate::lower::{Args, Buffers, Lowered, lower, partial_bytes, q8_1_bytes, rows_sel};
use crate::weights::WeightLayout;
use crate::{Entry, Kernel};

pub(crate) struct Loaded<D: Device> {
    /// The plan's calls, their arguments pointing at the buffers below.
    pub(crate) lowered: Lowered,
    /// Indexed like `lowered.variants`.
    pub(crate) functions: Vec<Functions<D::Function>>,
    argmax: D::Function,
    argmax_args: ArgmaxArgs,
    top_k: D::Function,
    /// (arena_bytes) the f32 activations.
    arena: Allocation<D>,
    /// (layout.total) every weight (crate::weights).
    _weights: Allocation<D>,
    /// (kv_page_count, page_bytes) the KV pages.
    kv: Allocation<D>,
    /// (bytes) the decode attention splits' partial results (launch.rs: partial_floats).
    _partial: Allocation<D>,
    /// (q8_1_bytes) the matvec's int8 activations (crate::matvec).
    _q8_1: Allocation<D>,
    /// (words) the step buffer, grown as steps need.
    step: Allocation<D>,
    /// (max rows) argmax's token ids.
    ids: Allocation<D>,
    /// (rows, k, 2) top-k's candidates (id, logit bits), allocated at the first
    /// `top_k` and grown as a larger one needs.
    candidates: Option<Allocation<D>>,
    limits: StepLimits,
    /// Each RoPE geometry of the plan (the step buffer's tables).
    rope: Vec<RopeTable>,
    kv_groups: usize,
    output: Output,
    page_bytes: usize,
    pub(crate) sm_count: u32,
    pub(crate) paths: Paths,
    /// Captured decode steps (their launches hold the addresses of the buffers above);
    /// None when graphs are off.
    pub(crate) graphs: Option<Graphs<D::Graph>>,
    /// (launch) start and end timers, once `launch_times` asked for them.
    pub(crate) timers: Option<Vec<(D::Timer, D::Timer)>>,
    pub(crate) last: Option<StepShape>,
    /// Whether the last step ran with the timers on.
    pub(crate) last_timed: bool,
}

impl<D: Device> std::fmt::Debug for Loaded<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("launches", &self.lowered.launches.len())
            .field("variants", &self.lowered.variants.len())
            .finish()
    }
}

impl<D: Device> Loaded<D> {
    /// Load `plan`; `timed`: per-launch timers from the first step on (a backend whose
    /// caller asked for launch times keeps them across loads).
    pub fn new(
        (device, properties): (&D, &DeviceProperties),
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
        timed: bool,
    ) -> Result<Loaded<D>, BackendError> {
        let name = D::NAME;
        let layout = WeightLayout::new(plan).map_err(|e| e.for_backend(name))?;
        let kv_bytes = (kv.page_bytes() as u64)
            .checked_mul(kv_page_count as u64)
            .ok_or_else(|| BackendError::Unsupported {
                backend: name,
                what: format!("{kv_page_count} KV pages of {} bytes", kv.page_bytes()),
            })?;
        let arena_bytes = (plan.arena_bytes as u64).max(16);
        if arena_bytes / 4 > u64::from(u32::MAX) {
            return Err(BackendError::Unsupported {
                backend: name,
                what: format!("an arena of {arena_bytes} bytes (indices are 32-bit)"),
            });
        }
        // Checked and its variants known before anything is allocated or compiled.
        let variants = lower(plan, &layout, kv, Buffers::default())
            .map_err(|e| e.for_backend(name))?
            .variants;
        let output = Output::of(plan).ok_or_else(|| BackendError::Unsupported {
            backend: name,
            what: "a plan without an output".into(),
        })?;
        let rope = rope_geometries(plan)
            .into_iter()
            .map(|params| rope_table(plan, source, params).map_err(|e| e.for_backend(name)))
            .collect::<Result<Vec<_>, _>>()?;
        let Modules {
            functions,
            argmax,
            top_k,
        } = device.load_modules(&variants)?;

        let mut weights = alloc(device, layout.total, "weights", Contents::Weights)?;
        upload_each(
            plan,
            &layout.offsets,
            &layout.matrix,
            source,
            name,
            |offset, bytes| {
                // Packed types are repacked here: the packed copy is all the device holds.
                let bytes = layout
                    .device_bytes(plan, offset, bytes)
                    .map_err(|e| e.for_backend(name))?;
                weights.write(device, offset as usize, &bytes, "weights")
            },
        )?;
        let kernels = Contents::Kernels;
        let arena = alloc(device, arena_bytes, "the arena", kernels)?;
        let kv_buf = alloc(device, kv_bytes, "KV pages", kernels)?;
        let partial = alloc(device, partial_bytes(plan), "the attention splits", kernels)?;
        let q8_1 = alloc(
            device,
            q8_1_bytes(plan),
            "the quantized activations",
            kernels,
        )?;
        let step = alloc(device, 4096, "the step", Contents::Step)?;
        let max_rows = plan.max_tokens.max(plan.max_outputs) as u64;
        let ids = alloc(device, 4 * max_rows, "token ids", kernels)?;
        let buffers = Buffers {
            arena: arena.addr(),
            weights: weights.addr(),
            kv: kv_buf.addr(),
            step: step.addr(),
            partial: partial.addr(),
            q8_1: q8_1.addr(),
        };
        let lowered = lower(plan, &layout, kv, buffers).map_err(|e| e.for_backend(name))?;
        let paths = device.paths();
        if paths.decode_attention || paths.wgmma {
            raise_shared_memory(device, properties, &lowered, &functions, paths.wgmma)?;
        }
        let argmax_args = ArgmaxArgs {
            logits: ConstPtr::new(buffers.arena + output.offset),
            ids: Ptr::new(ids.addr()),
            step: ConstPtr::new(buffers.step),
            rows_sel: rows_sel(output.rows),
            cols: output.cols as u32,
        };
        let mut loaded = Loaded {
            lowered,
            functions,
            argmax,
            argmax_args,
            top_k,
            arena,
            _weights: weights,
            kv: kv_buf,
            _partial: partial,
            _q8_1: q8_1,
            step,
            ids,
            candidates: None,
            limits: StepLimits::new(plan, kv, kv_page_count),
            rope,
            kv_groups: kv.n_groups().max(1),
            output,
            page_bytes: kv.page_bytes(),
            // The attention splits fill the device's multiprocessors.
            sm_count: properties.compute_units as u32,
            paths,
            graphs: (paths.graphs && !paths.debug).then(Graphs::default),
            timers: None,
            last: None,
            last_timed: false,
        };
        if timed {
            loaded.start_timers(device)?;
        }
        device
            .synchronize()
            .map_err(|e| driver_error::<D>("loading the plan", e))?;
        Ok(loaded)
    }

    /// Check and pack step `s` and upload it (growing the step buffer, and pointing every
    /// call at the new one, when it does not fit).
    pub(crate) fn upload_step(
        &mut self,
        device: &D,
        s: &kiln_ir::backend::Step<'_>,
    ) -> Result<(), BackendError> {
        self.limits.check(s, D::NAME)?;
        let data = kiln_gpu_host::step::pack(s, &self.rope, self.kv_groups)
            .map_err(|e| e.for_backend(D::NAME))?;
        if data.len() > self.step.len() {
            let bytes = (data.len() as u64).next_power_of_two();
            self.step = alloc(device, bytes, "the step", Contents::Step)?;
            let at = self.step.addr();
            self.lowered.set_step(at);
            self.argmax_args.step = ConstPtr::new(at);
            // The graphs hold the old step buffer's address.
            if let Some(g) = &mut self.graphs {
                g.clear();
            }
        }
        self.step.write(device, 0, &data, "the step")
    }

    /// (rows, cols) of the plan's output in the last step.
    pub fn output_shape(&self) -> Result<(usize, usize), BackendError> {
        let last = self.last.ok_or_else(|| BackendError::BadStep {
            backend: D::NAME,
            reason: "no step has run".into(),
        })?;
        Ok((self.output.rows_in(last), self.output.cols))
    }

    pub fn read_output(&self, device: &D, out: &mut [f32]) -> Result<(), BackendError> {
        self.output.check_logits(self.last, out.len(), D::NAME)?;
        let mut bytes = vec![0u8; out.len() * 4];
        let at = self.output.offset as usize;
        self.arena.read(device, at, &mut bytes, "the logits")?;
        f32s_from_le(&bytes, out);
        Ok(())
    }

    /// The greedy token of each output row of the last step, chosen on the device.
    pub fn argmax(&self, device: &D, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        self.output
            .check_argmax(self.last, out.len(), vocab, D::NAME)?;
        let Some(l) = argmax_launch(out.len() as u32) else {
            return Ok(());
        };
        device
            .bind()
            .map_err(|e| driver_error::<D>("binding the CUDA context", e))?;
        // SAFETY: the args point at the arena's output, the step buffer and `ids`, all
        // alive in self and sized for the plan's rows (argmax_launch covers `out.len()`
        // rows, which check_argmax held to the last step's outputs).
        unsafe { device.launch(&self.argmax, &l, self.argmax_args.as_bytes()) }
            .map_err(|e| driver_error::<D>("launching argmax", e))?;
        let mut bytes = vec![0u8; out.len() * 4];
        self.ids.read(device, 0, &mut bytes, "token ids")?;
        u32s_from_le(&bytes, out);
        Ok(())
    }

    /// The `k` largest logits of each output row of the last step with their ids
    /// (kiln_ir::step::top_k's order and NON_FINITE rows), chosen on the device; k is at
    /// most `launch::TOP_K_MAX` (the caller takes a larger one to the host).
    pub fn top_k(
        &mut self,
        device: &D,
        vocab: usize,
        k: usize,
        out: &mut [Candidate],
    ) -> Result<(), BackendError> {
        let rows = self
            .output
            .check_top_k(self.last, out.len(), vocab, k, D::NAME)?;
        if k > TOP_K_MAX {
            return Err(BackendError::Unsupported {
                backend: D::NAME,
                what: format!("a device top-{k} (at most {TOP_K_MAX})"),
            });
        }
        let Some(l) = top_k_launch(rows as u32) else {
            return Ok(());
        };
        let bytes = out.len() as u64 * 8;
        let candidates = match self.candidates.take() {
            Some(c) if c.len() as u64 >= bytes => self.candidates.insert(c),
            old => {
                drop(old); // the smaller one goes first
                let grown = bytes.next_power_of_two();
                let c = alloc(device, grown, "top-k candidates", Contents::Kernels)?;
                self.candidates.insert(c)
            }
        };
        let args = TopKArgs {
            logits: self.argmax_args.logits,
            out: Ptr::new(candidates.addr()),
            step: self.argmax_args.step,
            rows_sel: self.argmax_args.rows_sel,
            cols: vocab as u32,
            k: k as u32,
        };
        device
            .bind()
            .map_err(|e| driver_error::<D>("binding the CUDA context", e))?;
        // SAFETY: the args point at the arena's output (`rows` rows of `vocab` columns,
        // which check_top_k held to the last step's), the step buffer, and `candidates`,
        // which holds `rows` × k pairs of words; all alive in self.
        unsafe { device.launch(&self.top_k, &l, args.as_bytes()) }
            .map_err(|e| driver_error::<D>("launching top_k", e))?;
        let mut bytes = vec![0u8; out.len() * 8];
        candidates.read(device, 0, &mut bytes, "top-k candidates")?;
        for (c, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *c = Candidate {
                id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                logit: f32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            };
        }
        Ok(())
    }

    pub fn copy_kv_page(&mut self, device: &D, src: u32, dst: u32) -> Result<(), BackendError> {
        self.limits.check_page_copy(src, dst, D::NAME)?;
        if src == dst {
            return Ok(());
        }
        let pb = self.page_bytes;
        let (src, dst) = (src as usize * pb, dst as usize * pb);
        let copying = |e| driver_error::<D>("copying a KV page", e);
        device.bind().map_err(copying)?;
        // SAFETY: both pages lie inside the KV buffer (checked above: page < n_pages and
        // the buffer holds n_pages pages) and do not overlap (src != dst).
        unsafe { device.copy_within(&mut self.kv.raw, src, dst, pb) }.map_err(copying)
    }
}

/// Raise the decode and prefill attention kernels' dynamic shared memory limit where a
/// call needs more than the default 48 KiB (decode: F16 heads of more than 184 dims;
/// prefill: heads of more than 64), and the warpgroup-MMA matmul's always, up to what the
/// device lets a block have.
fn raise_shared_memory<D: Device>(
    device: &D,
    properties: &DeviceProperties,
    lowered: &Lowered,
    functions: &[Functions<D::Function>],
    wgmma: bool,
) -> Result<(), BackendError> {
    let max_shared = properties.shared_memory_bytes.unwrap_or(0);
    // (variant, entry index) the limit set so far.
    let mut raised = vec![[0u32; Entry::COUNT]; lowered.variants.len()];
    for call in lowered.launches.iter().flatten() {
        let v = &lowered.variants[call.variant];
        // The warpgroup-MMA matmul: its dynamic f16 buffers beside static cp.async stages
        // pass the default 48 KiB (static and dynamic together): raised always (`0` below).
        let wants = match &call.args {
            Args::Matvec(a) if wgmma && v.kernel == Kernel::Mmq => {
                let e = crate::lower::geometry::epilogue(a);
                [
                    Some((Entry::mmq_wgmma(e), crate::mmq::wgmma_shared_bytes(e))),
                    None,
                ]
            }
            Args::Kv(a) if v.kernel == Kernel::Attention => {
                let shape = AttentionShape::of(a, value_bytes(v)).ok_or_else(|| {
                    BackendError::Unsupported {
                        backend: D::NAME,
                        what: format!("attention of {a:?}"),
                    }
                })?;
                let prefill = if wgmma {
                    prefill_wgmma_entry(&shape).map(|e| (e, prefill_wgmma_shared_bytes(&shape)))
                } else {
                    prefill_entry(&shape).map(|e| (e, prefill_shared_bytes(&shape)))
                };
                [Some((Entry::Decode, decode_shared_bytes(&shape))), prefill]
            }
            _ => continue,
        };
        let floor = if v.kernel == Kernel::Mmq {
            0
        } else {
            DEFAULT_MAX_SHARED
        };
        for (entry, shared) in wants.into_iter().flatten() {
            let Some(f) = &functions[call.variant][entry.index()] else {
                continue;
            };
            let done = &mut raised[call.variant][entry.index()];
            if shared as usize > max_shared {
                return Err(BackendError::Unsupported {
                    backend: D::NAME,
                    what: format!(
                        "{} with {shared} bytes of shared memory a block (the device has {max_shared})",
                        v.symbol(entry)
                    ),
                });
            }
            if shared > floor && shared > *done {
                device.raise_shared_memory(f, shared).map_err(|e| {
                    driver_error::<D>(
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
