//! `kiln_kernels_cuda::host::Device` on the driver API: zeroed allocations, copies on the
//! one stream, modules compiled by NVRTC and their entry points, the raw launch
//! (`cuLaunchKernel` with one parameter: the call's argument struct), events, CUDA graphs
//! (stream capture). Each is one cudarc call; what to do with them is
//! kiln_kernels_cuda::host's, the same code the CPU emulator runs in CI.

use cudarc::driver::sys::{
    CUevent_flags, CUfunction_attribute, CUgraphInstantiate_flags, CUresult, CUstreamCaptureMode,
};
use cudarc::driver::{CudaEvent, CudaFunction, CudaGraph, CudaSlice, DevicePtr, DriverError};
use cudarc::nvrtc::Ptx;
use kiln_ir::backend::{BackendError, Ceilings, DeviceProperties};
use kiln_kernels_cuda::Variant;
use kiln_kernels_cuda::host::{Contents, Device, Modules, Paths, entry_table};
use kiln_kernels_cuda::launch::Launch;
use kiln_kernels_cuda::sources::{self, argmax_source, top_k_source};
use kiln_kernels_cuda::variant::{ARGMAX_SYMBOL, TOP_K_SYMBOL};

use crate::backend::CudaOptions;
use crate::device::{Gpu, NAME, driver};

/// A captured step (kiln_kernels_cuda::host's graphs of decode steps).
pub struct Graph(CudaGraph);

// SAFETY: a CUgraph / CUgraphExec may be used from any thread as long as the calls are
// serialised (CUDA's graph thread-safety rules); every use goes through the backend's
// `&mut self`, which the borrow checker serialises, and the stream and context it refers
// to are themselves Send.
unsafe impl Send for Graph {}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Graph")
    }
}

impl Device for Gpu {
    const NAME: &'static str = NAME;
    type Options = CudaOptions;
    type Buffer = CudaSlice<u8>;
    type Function = CudaFunction;
    type Timer = CudaEvent;
    type Graph = Graph;
    type Error = DriverError;

    fn open(options: CudaOptions) -> Result<(Gpu, DeviceProperties), BackendError> {
        let gpu = Gpu::open(options)?;
        let properties = DeviceProperties {
            name: format!("{} (sm_{})", gpu.name, gpu.arch),
            compute_units: gpu.sm_count,
            subgroup_size: Some(gpu.warp_size),
            subgroup_sizes: Some((gpu.warp_size, gpu.warp_size)),
            memory_bytes: Some(gpu.memory_bytes),
            max_buffer_bytes: Some(gpu.memory_bytes),
            // Weights are 64-bit addresses; the arena's indices and the KV pages' byte
            // offsets are 32-bit in the kernels.
            max_binding_bytes: Some(u64::from(u32::MAX)),
            shared_memory_bytes: Some(gpu.max_shared_bytes),
            has_f16: gpu.arch >= 53,
        };
        Ok((gpu, properties))
    }

    fn paths(&self) -> Paths {
        self.paths
    }

    fn alloc(&self, bytes: usize, _contents: Contents) -> Result<CudaSlice<u8>, DriverError> {
        self.stream.alloc_zeros::<u8>(bytes)
    }

    fn is_out_of_memory(e: &DriverError) -> bool {
        e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY
    }

    fn address(&self, buffer: &CudaSlice<u8>) -> u64 {
        let (ptr, _sync) = buffer.device_ptr(&self.stream);
        ptr
    }

    fn write(
        &self,
        dst: &mut CudaSlice<u8>,
        offset: usize,
        data: &[u8],
    ) -> Result<(), DriverError> {
        let mut view = dst.slice_mut(offset..offset + data.len());
        self.stream.memcpy_htod(data, &mut view)
    }

    fn read(&self, src: &CudaSlice<u8>, offset: usize, out: &mut [u8]) -> Result<(), DriverError> {
        let view = src.slice(offset..offset + out.len());
        self.stream
            .memcpy_dtoh(&view, out)
            .and_then(|()| self.stream.synchronize())
    }

    unsafe fn copy_within(
        &self,
        buffer: &mut CudaSlice<u8>,
        src: usize,
        dst: usize,
        bytes: usize,
    ) -> Result<(), DriverError> {
        let base = self.address(buffer);
        // SAFETY: both ranges lie inside the buffer and do not overlap (the caller's
        // promise); the copy is ordered on the stream with the launches that use them.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                base + dst as u64,
                base + src as u64,
                bytes,
                self.stream.cu_stream(),
            )
        }
    }

    fn load_modules(&self, variants: &[Variant]) -> Result<Modules<CudaFunction>, BackendError> {
        load_modules(self, variants)
    }

    fn raise_shared_memory(&self, f: &CudaFunction, bytes: u32) -> Result<(), DriverError> {
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    }

    unsafe fn launch(&self, f: &CudaFunction, l: &Launch, args: &[u8]) -> Result<(), DriverError> {
        // cuLaunchKernel reads each parameter through its pointer, as many bytes as the
        // kernel's parameter has: the struct's.
        let mut params = [args.as_ptr().cast_mut().cast::<std::ffi::c_void>()];
        // SAFETY: `f` takes exactly one parameter, the struct whose bytes `args` holds
        // (the caller's promise: the lowering pairs each call's variant and entry with
        // its struct, and the C declaration's static_assert checked its size against the
        // host's); `args` lives until the call returns, and the driver copies it then.
        // Its pointers are live buffers of this device (the caller's promise).
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                (l.grid[0], l.grid[1], l.grid[2]),
                (l.block[0], l.block[1], l.block[2]),
                l.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
    }

    fn bind(&self) -> Result<(), DriverError> {
        self.ctx.bind_to_thread()
    }

    fn synchronize(&self) -> Result<(), DriverError> {
        self.stream.synchronize()
    }

    fn timer(&self) -> Result<CudaEvent, DriverError> {
        self.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
    }

    fn record(&self, timer: &CudaEvent) -> Result<(), DriverError> {
        timer.record(&self.stream)
    }

    fn elapsed(&self, start: &CudaEvent, end: &CudaEvent) -> Result<f64, DriverError> {
        start.elapsed_ms(end).map(|ms| f64::from(ms) * 1e-3)
    }

    fn begin_capture(&self) -> Result<(), DriverError> {
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
    }

    fn end_capture(&self) -> Result<Graph, DriverError> {
        self.stream
            .end_capture(CUgraphInstantiate_flags(0))?
            .map(Graph)
            .ok_or(DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED))
    }

    unsafe fn replay(&self, graph: &Graph) -> Result<(), DriverError> {
        graph.0.launch()
    }

    /// Copy bandwidth and the mma.sync f16 peak of this device (crate::ceilings).
    fn ceilings(&self) -> Result<Option<Ceilings>, BackendError> {
        crate::ceilings::measure(self)
    }
}

/// Compile (or read from the cache) the module of every variant, argmax's and top-k's, on a few
/// threads, and look up their entry points.
fn load_modules(gpu: &Gpu, variants: &[Variant]) -> Result<Modules<CudaFunction>, BackendError> {
    let mut jobs = Vec::with_capacity(variants.len() + 2);
    for v in variants {
        let src = sources::source(v).ok_or_else(|| BackendError::Unsupported {
            backend: NAME,
            what: format!("kernel {}", v.name()),
        })?;
        jobs.push((v.name(), src));
    }
    jobs.push(("argmax".to_string(), argmax_source()));
    jobs.push(("top_k".to_string(), top_k_source()));
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
        functions.push(entry_table(v, |symbol| {
            module
                .load_function(symbol)
                .map_err(|err| driver(&format!("loading {symbol}"), err))
        })?);
    }
    let argmax = load("argmax")?
        .load_function(ARGMAX_SYMBOL)
        .map_err(|e| driver("loading argmax", e))?;
    let top_k = load("top_k")?
        .load_function(TOP_K_SYMBOL)
        .map_err(|e| driver("loading top_k", e))?;
    Ok(Modules {
        functions,
        argmax,
        top_k,
    })
}

#[cfg(test)]
mod tests {
    /// The backend may move to another thread (a server's engine thread).
    #[test]
    fn the_backend_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<super::Graph>();
        is_send::<crate::CudaBackend>();
    }
}
