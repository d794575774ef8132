//! The CUDA backend on the emulator: `kiln_kernels_cuda::host::Device` on host memory and
//! [`Module`] launches, so that [`EmuBackend`] is backends/cuda's own host logic (load,
//! step buffer, launches, graphs, timers: kiln_kernels_cuda::host) with the emulator in
//! place of the driver. Device memory is host memory (its address the device address),
//! filled at allocation with a pattern that shows reads of bytes nothing wrote; a graph
//! is the launches recorded during its capture, run again at each replay; a timer is the
//! host's clock (launches run when they are made).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kiln_ir::backend::{BackendError, DeviceProperties};
use kiln_kernels_cuda::Variant;
use kiln_kernels_cuda::host::{
    Contents, CudaBackendOn, Device, Modules, Paths, driver_error, entry_table,
};
use kiln_kernels_cuda::launch::Launch;
use kiln_kernels_cuda::variant::{ARGMAX_SYMBOL, TOP_K_SYMBOL};

use crate::memory::DeviceBuf;
use crate::{EmuError, Module, cache};

pub const NAME: &str = "cuda-emu";

/// The CUDA kernels on the CPU, run by backends/cuda's host logic.
pub type EmuBackend = CudaBackendOn<EmuDevice>;

/// Which of the kernels' paths the emulated device takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuOptions {
    /// The tensor-core matmul and prefill attention (mma.sync) for long steps.
    pub tensor_cores: bool,
    /// The split-K decode attention for short steps (off: one block per (head, token)).
    pub decode_attention: bool,
    /// Capture decode steps as graphs and replay them, as the CUDA backend does.
    pub graphs: bool,
    /// Multiprocessors the attention splits fill (132: an H100 SXM).
    pub sm_count: u32,
    /// `__CUDA_ARCH__` of the modules (900: every sm_89+ path).
    pub arch: u32,
    /// At arch 900 with tensor cores: the modules are sm_90a's and the prefill attention
    /// and the packed types' prefill matmul take the warpgroup-MMA kernels, as the CUDA
    /// backend does on an H100.
    pub wgmma: bool,
    /// Print each launch (default: the `KILN_CUDA_EMU_DEBUG` variable is set).
    pub debug: bool,
}

impl Default for EmuOptions {
    fn default() -> EmuOptions {
        EmuOptions {
            tensor_cores: true,
            decode_attention: true,
            graphs: true,
            sm_count: 132,
            arch: crate::source::ARCH,
            wgmma: true,
            debug: std::env::var_os("KILN_CUDA_EMU_DEBUG").is_some(),
        }
    }
}

impl EmuOptions {
    /// Whether the modules are sm_90a's (and the prefill attention the wgmma kernel).
    pub fn sm90a(&self) -> bool {
        self.wgmma && self.tensor_cores && self.arch == 900
    }
}

/// The emulated device: its options, and the launches of the graph being captured.
#[derive(Debug)]
pub struct EmuDevice {
    options: EmuOptions,
    /// Some while a graph is captured: its launches so far.
    capturing: Mutex<Option<Vec<Recorded>>>,
}

/// An entry point: its module and symbol.
#[derive(Clone, Debug)]
pub struct EmuFunction {
    module: Arc<Module>,
    symbol: String,
}

/// A launch as a graph holds it: the argument bytes copied when it was captured, as
/// the driver copies them.
#[derive(Debug)]
struct Recorded {
    function: EmuFunction,
    launch: Launch,
    args: Vec<u8>,
}

/// A captured step.
#[derive(Debug)]
pub struct EmuGraph(Vec<Recorded>);

/// A timestamp, taken when it is recorded.
#[derive(Debug, Default)]
pub struct EmuTimer(Mutex<Option<Instant>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EmuFunction {
    /// # Safety
    /// As `Module::launch`'s.
    unsafe fn run(&self, l: &Launch, args: &[u8]) -> Result<(), EmuError> {
        // SAFETY: the caller's promise.
        unsafe {
            self.module
                .launch(&self.symbol, l.grid, l.block, l.shared_bytes, args)
        }
    }
}

impl Device for EmuDevice {
    const NAME: &'static str = NAME;
    type Options = EmuOptions;
    type Buffer = DeviceBuf;
    type Function = EmuFunction;
    type Timer = EmuTimer;
    type Graph = EmuGraph;
    type Error = EmuError;

    /// No C++ compiler is `NoDevice` (what the conformance suite skips on).
    fn open(options: EmuOptions) -> Result<(EmuDevice, DeviceProperties), BackendError> {
        crate::compile::available().map_err(|e| BackendError::NoDevice {
            backend: NAME,
            reason: e.to_string(),
        })?;
        let properties = DeviceProperties {
            name: format!(
                "CUDA emulator (sm_{}{})",
                options.arch / 10,
                if options.sm90a() { "a" } else { "" }
            ),
            compute_units: options.sm_count as usize,
            subgroup_size: Some(32),
            subgroup_sizes: Some((32, 32)),
            memory_bytes: None,
            max_buffer_bytes: None,
            max_binding_bytes: Some(u64::from(u32::MAX)),
            shared_memory_bytes: Some(227 * 1024),
            has_f16: true,
        };
        let device = EmuDevice {
            options,
            capturing: Mutex::new(None),
        };
        Ok((device, properties))
    }

    fn paths(&self) -> Paths {
        let o = &self.options;
        Paths {
            tensor_cores: o.tensor_cores,
            wgmma: o.sm90a(),
            decode_attention: o.decode_attention,
            graphs: o.graphs,
            debug: o.debug,
        }
    }

    fn alloc(&self, bytes: usize, contents: Contents) -> Result<DeviceBuf, EmuError> {
        // NaN floats where a kernel reads what no kernel wrote; the step buffer zeroed.
        let poison = match contents {
            Contents::Weights => 0xA5,
            Contents::Kernels => 0xFF,
            Contents::Step => 0,
        };
        DeviceBuf::new(bytes, poison).ok_or(EmuError::OutOfMemory { bytes })
    }

    fn is_out_of_memory(e: &EmuError) -> bool {
        matches!(e, EmuError::OutOfMemory { .. })
    }

    fn address(&self, buffer: &DeviceBuf) -> u64 {
        buffer.addr()
    }

    fn write(&self, dst: &mut DeviceBuf, offset: usize, data: &[u8]) -> Result<(), EmuError> {
        dst.bytes_mut()[offset..][..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, src: &DeviceBuf, offset: usize, out: &mut [u8]) -> Result<(), EmuError> {
        out.copy_from_slice(&src.bytes()[offset..][..out.len()]);
        Ok(())
    }

    unsafe fn copy_within(
        &self,
        buffer: &mut DeviceBuf,
        src: usize,
        dst: usize,
        bytes: usize,
    ) -> Result<(), EmuError> {
        buffer.bytes_mut().copy_within(src..src + bytes, dst);
        Ok(())
    }

    fn load_modules(&self, variants: &[Variant]) -> Result<Modules<EmuFunction>, BackendError> {
        let (arch, specific) = (self.options.arch, self.options.sm90a());
        let building = |name: String| {
            move |e: EmuError| driver_error::<EmuDevice>(&format!("building kernel {name}"), e)
        };
        let mut functions = Vec::with_capacity(variants.len());
        for v in variants {
            let module = cache::variant(v, arch, specific).map_err(building(v.name()))?;
            functions.push(entry_table(v, |symbol| {
                Ok::<_, BackendError>(EmuFunction {
                    module: module.clone(),
                    symbol: symbol.to_string(),
                })
            })?);
        }
        let argmax = EmuFunction {
            module: cache::argmax().map_err(building("argmax".into()))?,
            symbol: ARGMAX_SYMBOL.to_string(),
        };
        let top_k = EmuFunction {
            module: cache::top_k().map_err(building("top_k".into()))?,
            symbol: TOP_K_SYMBOL.to_string(),
        };
        Ok(Modules {
            functions,
            argmax,
            top_k,
        })
    }

    unsafe fn launch(&self, f: &EmuFunction, l: &Launch, args: &[u8]) -> Result<(), EmuError> {
        if let Some(graph) = lock(&self.capturing).as_mut() {
            graph.push(Recorded {
                function: f.clone(),
                launch: *l,
                args: args.to_vec(),
            });
            return Ok(());
        }
        // SAFETY: every address in `args` points into live buffers of this device (the
        // caller's promise), and device addresses are host addresses here.
        unsafe { f.run(l, args) }
    }

    /// Launches run when they are made: nothing is ever queued.
    fn synchronize(&self) -> Result<(), EmuError> {
        Ok(())
    }

    fn timer(&self) -> Result<EmuTimer, EmuError> {
        Ok(EmuTimer::default())
    }

    fn record(&self, timer: &EmuTimer) -> Result<(), EmuError> {
        *lock(&timer.0) = Some(Instant::now());
        Ok(())
    }

    fn elapsed(&self, start: &EmuTimer, end: &EmuTimer) -> Result<f64, EmuError> {
        match (*lock(&start.0), *lock(&end.0)) {
            (Some(s), Some(e)) => Ok(e.saturating_duration_since(s).as_secs_f64()),
            _ => Err(EmuError::OutOfOrder("a timer read before it was recorded")),
        }
    }

    fn begin_capture(&self) -> Result<(), EmuError> {
        let mut capturing = lock(&self.capturing);
        if capturing.is_some() {
            return Err(EmuError::OutOfOrder("a capture begun during another"));
        }
        *capturing = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> Result<EmuGraph, EmuError> {
        lock(&self.capturing)
            .take()
            .map(EmuGraph)
            .ok_or(EmuError::OutOfOrder("a capture ended that was not begun"))
    }

    unsafe fn replay(&self, graph: &EmuGraph) -> Result<(), EmuError> {
        for r in &graph.0 {
            // SAFETY: the buffers the captured arguments point into are alive where they
            // were at the capture (the caller's promise).
            unsafe { r.function.run(&r.launch, &r.args) }?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The backend may move to another thread (a server's engine thread), as the CUDA
    /// backend does.
    #[test]
    fn the_backend_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<super::EmuBackend>();
    }
}
