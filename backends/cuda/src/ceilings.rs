//! The device's ceilings (`Backend::ceilings`, what `kiln bench --kernels` prints
//! against): copy bandwidth from a device-to-device copy of 1 GiB, and the tensor-core
//! peak from kiln_kernels_cuda::peak's kernel, both timed with CUDA events, best of a
//! few runs.

use cudarc::driver::CudaEvent;
use cudarc::driver::sys::CUevent_flags;
use cudarc::nvrtc::Ptx;
use kiln_ir::backend::{BackendError, Ceilings};
use kiln_kernels_cuda::args::{KernelArgs, Ptr};
use kiln_kernels_cuda::host::{Contents, Device, alloc};
use kiln_kernels_cuda::peak::{
    PEAK_SYMBOL, PEAK_WHAT, PeakArgs, peak_flop, peak_launch, peak_out_bytes, peak_source,
};

use crate::device::{Gpu, driver};

/// Bytes copied: far past any L2 (the H200's is 60 MiB).
const COPY_BYTES: u64 = 1 << 30;
/// Timed runs of each measurement (the best counts).
const RUNS: usize = 5;
/// Iterations of the peak kernel: about 0.1 s a run on an H200 (7·10¹³ FLOP).
const PEAK_ITERS: u32 = 1024;

/// None below sm_80 (no mma.sync m16n8k16, whose peak the report divides by).
pub(crate) fn measure(gpu: &Gpu) -> Result<Option<Ceilings>, BackendError> {
    if gpu.arch < 80 {
        return Ok(None);
    }
    Ok(Some(Ceilings {
        copy_bytes_per_s: copy_bandwidth(gpu)?,
        matmul_flop_per_s: mma_peak(gpu)?,
        matmul_what: PEAK_WHAT.into(),
    }))
}

fn event(gpu: &Gpu) -> Result<CudaEvent, BackendError> {
    gpu.ctx
        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| driver("creating a timer", e))
}

/// The best seconds of `RUNS` runs of `work` between two events (one warm-up first).
fn best_seconds(
    gpu: &Gpu,
    mut work: impl FnMut() -> Result<(), BackendError>,
) -> Result<f64, BackendError> {
    let (start, end) = (event(gpu)?, event(gpu)?);
    work()?;
    let mut best = f64::MAX;
    for _ in 0..RUNS {
        start.record(&gpu.stream).map_err(|e| driver("timing", e))?;
        work()?;
        end.record(&gpu.stream).map_err(|e| driver("timing", e))?;
        gpu.stream.synchronize().map_err(|e| driver("timing", e))?;
        let ms = start.elapsed_ms(&end).map_err(|e| driver("timing", e))?;
        best = best.min(f64::from(ms) * 1e-3);
    }
    Ok(best.max(1e-9))
}

/// Read + write bytes per second of a device-to-device copy.
fn copy_bandwidth(gpu: &Gpu) -> Result<f64, BackendError> {
    let src = alloc(
        gpu,
        COPY_BYTES,
        "the copy ceiling's source",
        Contents::Kernels,
    )?;
    let mut dst = alloc(
        gpu,
        COPY_BYTES,
        "the copy ceiling's destination",
        Contents::Kernels,
    )?;
    let s = best_seconds(gpu, || {
        gpu.stream
            .memcpy_dtod(&src.raw, &mut dst.raw)
            .map_err(|e| driver("copying on the device", e))
    })?;
    Ok(2.0 * COPY_BYTES as f64 / s)
}

/// FLOP per second of the peak kernel on every SM.
fn mma_peak(gpu: &Gpu) -> Result<f64, BackendError> {
    let jobs = [("peak_mma".to_string(), peak_source())];
    let cubin = crate::compile::compile_all(&gpu.compiler, &jobs)
        .map_err(|(name, e)| driver(&format!("building kernel {name}"), e))?
        .pop()
        .unwrap_or_default();
    let f = gpu
        .ctx
        .load_module(Ptx::from_binary(cubin))
        .and_then(|m| m.load_function(PEAK_SYMBOL))
        .map_err(|e| driver("loading the peak kernel", e))?;
    let l = peak_launch(gpu.sm_count as u32);
    let out = alloc(
        gpu,
        peak_out_bytes(&l),
        "the peak kernel's sums",
        Contents::Kernels,
    )?;
    let args = PeakArgs {
        out: Ptr::new(out.addr()),
        iters: PEAK_ITERS,
        pad: 0,
    };
    let s = best_seconds(gpu, || {
        // SAFETY: `f` is the peak kernel, which takes PeakArgs; `out` holds its sums
        // (peak_out_bytes of this launch) and lives until the timed runs were waited for.
        unsafe { gpu.launch(&f, &l, args.as_bytes()) }
            .map_err(|e| driver("launching the peak kernel", e))
    })?;
    Ok(peak_flop(&l, PEAK_ITERS) / s)
}
