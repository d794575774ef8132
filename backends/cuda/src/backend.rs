//! The Backend implementation: device, buffers, plan loading; the plan itself runs in
//! [`crate::loaded`].

use cudarc::driver::CudaSlice;
use kiln_ir::backend::{
    Backend, BackendError, BufferId, DeviceProperties, LaunchTime, Step, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};
use kiln_kernels_wgsl::weights::WeightLayout;

use crate::device::{Gpu, NAME, driver};
use crate::loaded::Loaded;
use crate::memory::{alloc, copy_in, copy_out};

/// The CUDA backend: kiln-kernels-cuda on the driver API (cudarc), kernels compiled by
/// NVRTC for the device and cached on disk.
#[derive(Debug)]
pub struct CudaBackend {
    gpu: Gpu,
    properties: DeviceProperties,
    /// Buffers of `alloc`, with the size asked for.
    buffers: Vec<Option<(CudaSlice<u8>, usize)>>,
    loaded: Option<Loaded>,
}

impl CudaBackend {
    /// Device 0 (`KILN_CUDA_DEVICE` picks another). No driver, no NVRTC or no device is
    /// `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<CudaBackend, BackendError> {
        let ordinal = std::env::var("KILN_CUDA_DEVICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        CudaBackend::with_device(ordinal)
    }

    pub fn with_device(ordinal: usize) -> Result<CudaBackend, BackendError> {
        let gpu = Gpu::open(ordinal)?;
        let properties = DeviceProperties {
            name: format!("{} (sm_{})", gpu.name, gpu.arch),
            compute_units: gpu.sm_count,
            subgroup_size: Some(gpu.warp_size),
            memory_bytes: Some(gpu.memory_bytes),
            has_f16: gpu.arch >= 53,
        };
        Ok(CudaBackend {
            gpu,
            properties,
            buffers: Vec::new(),
            loaded: None,
        })
    }

    /// The greedy LM head: the argmax of each logits row of the last step, computed on
    /// the device, so that a greedy decode step reads back one id per row instead of the
    /// logits.
    pub fn argmax_last_logits(&mut self) -> Result<Vec<u32>, BackendError> {
        self.loaded()?.argmax(&self.gpu)
    }

    /// (rows, cols) of the plan's output (the logits) in the last step, so that a caller
    /// can size `read_logits`.
    pub fn last_output_shape(&self) -> Result<(usize, usize), BackendError> {
        self.loaded().map(Loaded::output_shape)
    }

    fn loaded(&self) -> Result<&Loaded, BackendError> {
        self.loaded.as_ref().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })
    }

    fn buffer(&mut self, id: BufferId) -> Result<&mut (CudaSlice<u8>, usize), BackendError> {
        self.buffers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| BackendError::BadStep {
                backend: NAME,
                reason: format!("unknown buffer {}", id.0),
            })
    }
}

fn check_range(size: usize, offset: usize, len: usize) -> Result<(), BackendError> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(BackendError::BadStep {
            backend: NAME,
            reason: format!("{len} bytes at {offset} are outside a {size}-byte buffer"),
        });
    }
    Ok(())
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        kiln_kernels_wgsl::program::supports(op, graph)
    }

    fn alloc(&mut self, bytes: usize) -> Result<BufferId, BackendError> {
        let buffer = alloc(&self.gpu, bytes as u64, "a user buffer")?;
        self.buffers.push(Some((buffer, bytes)));
        Ok(BufferId(self.buffers.len() as u32 - 1))
    }

    fn upload(&mut self, id: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        let (_, size) = self.buffer(id)?;
        check_range(*size, offset, data.len())?;
        // Borrow the slot and the device apart.
        let CudaBackend { gpu, buffers, .. } = self;
        let (buffer, _) = buffers[id.0 as usize]
            .as_mut()
            .ok_or_else(|| driver("uploading", "the buffer vanished"))?;
        copy_in(gpu, buffer, offset, data, "a user buffer")
    }

    fn download(
        &mut self,
        id: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let (_, size) = self.buffer(id)?;
        check_range(*size, offset, out.len())?;
        let (buffer, _) = self.buffers[id.0 as usize]
            .as_ref()
            .ok_or_else(|| driver("downloading", "the buffer vanished"))?;
        copy_out(&self.gpu, buffer, offset, out, "a user buffer")
    }

    fn free(&mut self, id: BufferId) {
        if let Some(slot) = self.buffers.get_mut(id.0 as usize) {
            *slot = None;
        }
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.loaded = None;
        self.loaded = Some(Loaded::new(&self.gpu, plan, weights, kv, kv_page_count)?);
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })?;
        loaded.execute(&self.gpu, step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_output(&self.gpu, out)
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, _n_tokens: usize) -> Result<(), BackendError> {
        self.loaded()?.copy_kv_page(&self.gpu, src, dst)
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.gpu
            .stream
            .synchronize()
            .map_err(|e| driver("synchronizing", e))
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights are uploaded to the device (vectors as f32), plus the params blocks (at
        // most 64 bytes a dispatch, at most 3 dispatches a launch) and the step buffer.
        let weights = WeightLayout::new(plan, u64::MAX).map_or(0, |l| l.total as usize);
        weights + plan.launches.len() * 3 * 64 + 4096
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })?;
        loaded.launch_times(&self.gpu)
    }
}
