//! The Backend implementation: device, buffers, plan loading; the plan itself runs in
//! [`crate::loaded`].

use kiln_ir::backend::{
    Backend, BackendError, BufferId, DeviceProperties, LaunchTime, Step, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};
use kiln_kernels_wgsl::weights::WeightLayout;

use crate::device::{Gpu, NAME};
use crate::loaded::Loaded;

/// The WebGPU backend: wgpu on Vulkan, Metal or DX12, running kiln-kernels-wgsl.
#[derive(Debug)]
pub struct WgpuBackend {
    gpu: Gpu,
    properties: DeviceProperties,
    /// Buffers of `alloc`, with the size asked for.
    buffers: Vec<Option<(wgpu::Buffer, usize)>>,
    loaded: Option<Loaded>,
}

impl WgpuBackend {
    /// Open the best GPU adapter. A CPU implementation (lavapipe, WARP) is taken only
    /// with `KILN_WGPU_ADAPTER=any`, so that the engine's choice of the best backend never
    /// lands on a software rasterizer. No adapter is `BackendError::NoDevice`, never a
    /// panic.
    pub fn new() -> Result<WgpuBackend, BackendError> {
        let any = std::env::var("KILN_WGPU_ADAPTER").is_ok_and(|v| v == "any");
        WgpuBackend::open(any)
    }

    /// Open the best adapter, a CPU implementation (lavapipe) included: the tests' and
    /// benchmarks' constructor.
    pub fn any_adapter() -> Result<WgpuBackend, BackendError> {
        WgpuBackend::open(true)
    }

    fn open(allow_cpu: bool) -> Result<WgpuBackend, BackendError> {
        let gpu = Gpu::open(allow_cpu)?;
        let properties = DeviceProperties {
            name: format!("{} ({:?})", gpu.info.name, gpu.info.backend),
            compute_units: 1,
            subgroup_size: gpu
                .features
                .contains(wgpu::Features::SUBGROUP)
                .then_some(gpu.info.subgroup_min_size as usize),
            memory_bytes: None,
            has_f16: false,
        };
        Ok(WgpuBackend {
            gpu,
            properties,
            buffers: Vec::new(),
            loaded: None,
        })
    }

    fn loaded(&self) -> Result<&Loaded, BackendError> {
        self.loaded.as_ref().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })
    }

    fn buffer(&self, id: BufferId) -> Result<&(wgpu::Buffer, usize), BackendError> {
        self.buffers
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| BackendError::BadStep {
                backend: NAME,
                reason: format!("unknown buffer {}", id.0),
            })
    }

    fn range(
        &self,
        id: BufferId,
        offset: usize,
        len: usize,
    ) -> Result<&wgpu::Buffer, BackendError> {
        let (buffer, size) = self.buffer(id)?;
        if offset.checked_add(len).is_none_or(|end| end > *size) {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("{len} bytes at {offset} are outside a {size}-byte buffer"),
            });
        }
        Ok(buffer)
    }
}

impl Backend for WgpuBackend {
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
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let buffer = self.gpu.buffer("user buffer", bytes as u64, usage)?;
        self.buffers.push(Some((buffer, bytes)));
        Ok(BufferId(self.buffers.len() as u32 - 1))
    }

    fn upload(&mut self, id: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        let buffer = self.range(id, offset, data.len())?;
        // Copies move whole words: patch the words at the edges of an unaligned range.
        let start = offset & !3;
        let end = (offset + data.len()).next_multiple_of(4);
        let mut words = if start == offset && end == offset + data.len() {
            Vec::new()
        } else {
            self.gpu.read(buffer, start as u64, (end - start) as u64)?
        };
        if words.is_empty() {
            self.gpu.queue.write_buffer(buffer, offset as u64, data);
        } else {
            words[offset - start..offset - start + data.len()].copy_from_slice(data);
            self.gpu.queue.write_buffer(buffer, start as u64, &words);
        }
        self.gpu.queue.submit([]);
        self.gpu.check("uploading")
    }

    fn download(
        &mut self,
        id: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let buffer = self.range(id, offset, out.len())?;
        let start = offset & !3;
        let end = (offset + out.len()).next_multiple_of(4);
        let words = self.gpu.read(buffer, start as u64, (end - start) as u64)?;
        out.copy_from_slice(&words[offset - start..offset - start + out.len()]);
        Ok(())
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
        self.gpu.wait()?;
        self.gpu.check("synchronizing")
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights are uploaded to the device (vectors as f32), plus the params blocks.
        let weights = WeightLayout::new(plan, u64::MAX).map_or(0, |l| l.total as usize);
        weights
            + plan.launches.len() * 3 * self.gpu.limits.min_uniform_buffer_offset_alignment as usize
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        self.loaded()?.launch_times(&self.gpu)
    }
}
