//! The CUDA backend's plan execution on the emulator: the same lowering
//! (kiln_kernels_cuda::lower), launch geometry, step buffer (kiln_gpu_host::step), weight
//! upload (WeightLayout::device_bytes) and kernels as backends/cuda's `Loaded`, with host
//! buffers for device memory and [`Module`] launches for the driver's. What it does not
//! run is backends/cuda's own driver glue (cudarc calls, CUDA graphs, timers).

use std::sync::Arc;

use kiln_gpu_host::Output;
use kiln_gpu_host::no_plan;
use kiln_gpu_host::output::{f32s_from_le, u32s_from_le};
use kiln_gpu_host::step::{RopeTable, rope_geometries, rope_table};
use kiln_gpu_host::weights::upload_each;
use kiln_ir::backend::{
    Backend, BackendError, DeviceProperties, Step, StepLimits, StepShape, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};
use kiln_kernels_cuda::args::{ArgmaxArgs, ConstPtr, KernelArgs, Ptr};
use kiln_kernels_cuda::launch::{argmax_launch, length_class};
use kiln_kernels_cuda::lower::geometry::StepGeometry;
use kiln_kernels_cuda::lower::{Buffers, Lowered, lower, partial_bytes, q8_1_bytes, rows_sel};
use kiln_kernels_cuda::variant::ARGMAX_SYMBOL;
use kiln_kernels_cuda::weights::WeightLayout;

use crate::memory::DeviceBuf;
use crate::{EmuError, Module, cache};

pub const NAME: &str = "cuda-emu";

/// Which of the kernels' paths the emulated device takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuOptions {
    /// The tensor-core matmul and prefill attention (mma.sync) for long steps.
    pub tensor_cores: bool,
    /// The split-K decode attention for short steps (off: one block per (head, token)).
    pub decode_attention: bool,
    /// Multiprocessors the attention splits fill (132: an H100 SXM).
    pub sm_count: u32,
    /// `__CUDA_ARCH__` of the modules (900: every sm_89+ path).
    pub arch: u32,
    /// Print each launch (default: the `KILN_CUDA_EMU_DEBUG` variable is set).
    pub debug: bool,
}

impl Default for EmuOptions {
    fn default() -> EmuOptions {
        EmuOptions {
            tensor_cores: true,
            decode_attention: true,
            sm_count: 132,
            arch: crate::source::ARCH,
            debug: std::env::var_os("KILN_CUDA_EMU_DEBUG").is_some(),
        }
    }
}

/// A device buffer of `bytes` filled with `poison`, or out of (host) memory.
fn buffer(bytes: usize, poison: u8) -> Result<DeviceBuf, BackendError> {
    DeviceBuf::new(bytes, poison).ok_or(BackendError::OutOfMemory {
        backend: NAME,
        bytes: bytes as u64,
    })
}

fn emu(e: EmuError) -> BackendError {
    BackendError::Driver {
        backend: NAME,
        message: e.to_string(),
    }
}

/// The CUDA kernels on the CPU.
#[derive(Debug)]
pub struct EmuBackend {
    options: EmuOptions,
    properties: DeviceProperties,
    loaded: Option<Loaded>,
}

impl EmuBackend {
    /// No C++ compiler is `NoDevice` (what the conformance suite skips on).
    pub fn new(options: EmuOptions) -> Result<EmuBackend, BackendError> {
        crate::compile::available().map_err(|e| BackendError::NoDevice {
            backend: NAME,
            reason: e.to_string(),
        })?;
        let properties = DeviceProperties {
            name: format!("CUDA emulator (sm_{})", options.arch / 10),
            compute_units: options.sm_count as usize,
            subgroup_size: Some(32),
            subgroup_sizes: Some((32, 32)),
            memory_bytes: None,
            max_buffer_bytes: None,
            max_binding_bytes: Some(u64::from(u32::MAX)),
            shared_memory_bytes: Some(227 * 1024),
            has_f16: true,
        };
        Ok(EmuBackend {
            options,
            properties,
            loaded: None,
        })
    }

    /// (rows, cols) of the plan's output (the logits) in the last step.
    pub fn last_output_shape(&self) -> Result<(usize, usize), BackendError> {
        let loaded = self.loaded()?;
        let last = loaded.last.ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no step has run".into(),
        })?;
        Ok((loaded.output.rows_in(last), loaded.output.cols))
    }

    fn loaded(&self) -> Result<&Loaded, BackendError> {
        self.loaded.as_ref().ok_or_else(|| no_plan(NAME))
    }
}

#[derive(Debug)]
struct Loaded {
    lowered: Lowered,
    /// Indexed like `lowered.variants`.
    modules: Vec<Arc<Module>>,
    argmax: Arc<Module>,
    argmax_args: ArgmaxArgs,
    arena: DeviceBuf,
    _weights: DeviceBuf,
    kv: DeviceBuf,
    _partial: DeviceBuf,
    _q8_1: DeviceBuf,
    step: DeviceBuf,
    ids: DeviceBuf,
    limits: StepLimits,
    rope: Vec<RopeTable>,
    kv_groups: usize,
    output: Output,
    page_bytes: usize,
    last: Option<StepShape>,
}

impl Loaded {
    fn new(
        options: &EmuOptions,
        plan: &Plan,
        source: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<Loaded, BackendError> {
        let layout = WeightLayout::new(plan).map_err(|e| e.for_backend(NAME))?;
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
        let modules = variants
            .iter()
            .map(|v| cache::variant(v, options.arch))
            .collect::<Result<Vec<_>, _>>()
            .map_err(emu)?;
        let argmax = cache::argmax().map_err(emu)?;
        let mut weights = buffer(layout.total as usize, 0xA5)?;
        upload_each(
            plan,
            &layout.offsets,
            &layout.matrix,
            source,
            NAME,
            |offset, bytes| {
                let bytes = layout
                    .device_bytes(plan, offset, bytes)
                    .map_err(|e| e.for_backend(NAME))?;
                weights.bytes_mut()[offset as usize..][..bytes.len()].copy_from_slice(&bytes);
                Ok(())
            },
        )?;
        // Poison: NaN floats where a kernel reads what no kernel wrote.
        let arena = buffer(plan.arena_bytes.max(16), 0xFF)?;
        let kv_buf = buffer(kv.page_bytes().saturating_mul(kv_page_count), 0xFF)?;
        let partial = buffer(partial_bytes(plan) as usize, 0xFF)?;
        let q8_1 = buffer(q8_1_bytes(plan) as usize, 0xFF)?;
        let step = buffer(4096, 0)?;
        let ids = buffer(4 * plan.max_tokens.max(plan.max_outputs), 0xFF)?;
        let buffers = Buffers {
            arena: arena.addr(),
            weights: weights.addr(),
            kv: kv_buf.addr(),
            step: step.addr(),
            partial: partial.addr(),
            q8_1: q8_1.addr(),
        };
        let lowered = lower(plan, &layout, kv, buffers).map_err(|e| e.for_backend(NAME))?;
        let argmax_args = ArgmaxArgs {
            logits: ConstPtr::new(buffers.arena + output.offset),
            ids: Ptr::new(ids.addr()),
            step: ConstPtr::new(buffers.step),
            rows_sel: rows_sel(output.rows),
            cols: output.cols as u32,
        };
        Ok(Loaded {
            lowered,
            modules,
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
            page_bytes: kv.page_bytes(),
            last: None,
        })
    }

    fn execute(&mut self, options: &EmuOptions, s: &Step<'_>) -> Result<(), BackendError> {
        self.limits.check(s, NAME)?;
        let data = kiln_gpu_host::step::pack(s, &self.rope, self.kv_groups)
            .map_err(|e| e.for_backend(NAME))?;
        if data.len() > self.step.len() {
            self.step = buffer(data.len().next_power_of_two(), 0)?;
            self.lowered.set_step(self.step.addr());
            self.argmax_args.step = ConstPtr::new(self.step.addr());
        }
        self.step.bytes_mut()[..data.len()].copy_from_slice(&data);
        let shape = s.shape();
        self.last = Some(shape);
        let max_context = s.positions.iter().max().map_or(0, |&p| p.saturating_add(1));
        let g = StepGeometry {
            n_tokens: shape.tokens as u32,
            n_outputs: shape.outputs as u32,
            class: length_class(max_context),
            sm_count: options.sm_count,
            tensor_cores: options.tensor_cores,
            decode_attention: options.decode_attention,
        };
        for (i, calls) in self.lowered.launches.iter().enumerate() {
            for call in calls {
                let v = &self.lowered.variants[call.variant];
                for p in call.launches(v, &g) {
                    let symbol = v.symbol(p.launch.entry);
                    let l = &p.launch;
                    if options.debug {
                        eprintln!(
                            "{NAME}: launch {i} {symbol} grid {:?} block {:?} shared {}",
                            l.grid, l.block, l.shared_bytes
                        );
                    }
                    // SAFETY: the lowering built every address in the args from this
                    // plan's buffers (alive in self) and its layout, the same arguments
                    // the CUDA backend gives the same kernels; the buffers are only
                    // touched by this launch meanwhile (&mut self).
                    unsafe {
                        self.modules[call.variant].launch(
                            &symbol,
                            l.grid,
                            l.block,
                            l.shared_bytes,
                            p.args.as_bytes(),
                        )
                    }
                    .map_err(|e| BackendError::Driver {
                        backend: NAME,
                        message: format!("launch {i}: {e}"),
                    })?;
                }
            }
        }
        Ok(())
    }

    fn read_output(&self, out: &mut [f32]) -> Result<(), BackendError> {
        self.output.check_logits(self.last, out.len(), NAME)?;
        let at = self.output.offset as usize;
        f32s_from_le(&self.arena.bytes()[at..at + 4 * out.len()], out);
        Ok(())
    }

    fn argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        self.output
            .check_argmax(self.last, out.len(), vocab, NAME)?;
        let Some(l) = argmax_launch(out.len() as u32) else {
            return Ok(());
        };
        // SAFETY: the args point at the arena's output, the step buffer and `ids`, all
        // alive in self and sized for the plan's rows.
        unsafe {
            self.argmax.launch(
                ARGMAX_SYMBOL,
                l.grid,
                l.block,
                l.shared_bytes,
                self.argmax_args.as_bytes(),
            )
        }
        .map_err(emu)?;
        u32s_from_le(&self.ids.bytes()[..4 * out.len()], out);
        Ok(())
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32) -> Result<(), BackendError> {
        self.limits.check_page_copy(src, dst, NAME)?;
        let pb = self.page_bytes;
        let (src, dst) = (src as usize * pb, dst as usize * pb);
        self.kv.bytes_mut().copy_within(src..src + pb, dst);
        Ok(())
    }
}

impl Backend for EmuBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        kiln_kernels_cuda::lower::supports(op, graph)
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.loaded = None;
        self.loaded = Some(Loaded::new(
            &self.options,
            plan,
            weights,
            kv,
            kv_page_count,
        )?);
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        let options = self.options;
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(NAME))?;
        loaded.execute(&options, step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_output(out)
    }

    fn read_argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(NAME))?;
        loaded.argmax(vocab, out)
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, _n_tokens: usize) -> Result<(), BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(NAME))?;
        loaded.copy_kv_page(src, dst)
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        let weights = WeightLayout::new(plan).map_or(0, |l| l.total);
        (weights + q8_1_bytes(plan)) as usize + 4096
    }
}
