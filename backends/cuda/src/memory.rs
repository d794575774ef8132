//! Device memory and launches: zeroed allocations (out of memory is a typed error),
//! checked copies in and out, device addresses, and the raw kernel launch (every kernel
//! of kiln-kernels-cuda takes one argument: its struct, by value).

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DriverError};
use kiln_ir::backend::BackendError;
use kiln_kernels_cuda::launch::Launch;

use crate::device::{Gpu, NAME, driver};

/// A device buffer of `bytes` (at least 16) zeroed; out of memory is OutOfMemory.
pub(crate) fn alloc(gpu: &Gpu, bytes: u64, what: &str) -> Result<CudaSlice<u8>, BackendError> {
    let len = usize::try_from(bytes.max(16)).map_err(|_| BackendError::OutOfMemory {
        backend: NAME,
        bytes,
    })?;
    gpu.stream.alloc_zeros::<u8>(len).map_err(|e| match e {
        DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY) => BackendError::OutOfMemory {
            backend: NAME,
            bytes,
        },
        e => driver(&format!("allocating {what} ({bytes} bytes)"), e),
    })
}

/// The device address of a buffer (what the kernels' argument structs hold).
pub(crate) fn address(gpu: &Gpu, buffer: &CudaSlice<u8>) -> u64 {
    let (ptr, _sync) = buffer.device_ptr(&gpu.stream);
    ptr
}

/// Launch `f` with `args`, the bytes of its one argument struct, on the stream (the
/// context must be current on this thread).
pub(crate) fn run(gpu: &Gpu, f: &CudaFunction, l: &Launch, args: &[u8]) -> Result<(), DriverError> {
    // cuLaunchKernel reads each parameter through its pointer, as many bytes as the
    // kernel's parameter has: the struct's.
    let mut params = [args.as_ptr().cast_mut().cast::<std::ffi::c_void>()];
    // SAFETY: `f` takes exactly one parameter, the struct whose bytes `args` holds (the
    // lowering pairs each call's variant and entry with its struct; the C declaration's
    // static_assert checked its size against the host's); `args` lives until the call
    // returns, and the driver copies it then. Its pointers are the backend's live
    // buffers, and the lowering's checks keep every index the kernels form inside them.
    unsafe {
        cudarc::driver::result::launch_kernel(
            f.cu_function(),
            (l.grid[0], l.grid[1], l.grid[2]),
            (l.block[0], l.block[1], l.block[2]),
            l.shared_bytes,
            gpu.stream.cu_stream(),
            &mut params,
        )
    }
}

/// Copy host bytes into `dst` at `offset`, checking the range (cudarc asserts).
pub(crate) fn copy_in(
    gpu: &Gpu,
    dst: &mut CudaSlice<u8>,
    offset: usize,
    data: &[u8],
    what: &str,
) -> Result<(), BackendError> {
    if data.is_empty() {
        return Ok(());
    }
    let end = offset
        .checked_add(data.len())
        .filter(|&e| e <= dst.len())
        .ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: format!("{} bytes at {offset} outside {what}", data.len()),
        })?;
    let mut view = dst.slice_mut(offset..end);
    gpu.stream
        .memcpy_htod(data, &mut view)
        .map_err(|e| driver(&format!("uploading {what}"), e))
}

/// Copy `out.len()` bytes of `src` at `offset` to the host, after the queued work.
pub(crate) fn copy_out(
    gpu: &Gpu,
    src: &CudaSlice<u8>,
    offset: usize,
    out: &mut [u8],
    what: &str,
) -> Result<(), BackendError> {
    if out.is_empty() {
        return Ok(());
    }
    let end = offset
        .checked_add(out.len())
        .filter(|&e| e <= src.len())
        .ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: format!("{} bytes at {offset} outside {what}", out.len()),
        })?;
    let view = src.slice(offset..end);
    gpu.stream
        .memcpy_dtoh(&view, out)
        .and_then(|()| gpu.stream.synchronize())
        .map_err(|e| driver(&format!("reading {what}"), e))
}
