//! The Backend implementation: device, buffers, plan loading.

use kiln_ir::backend::{
    Backend, BackendError, BufferId, DeviceProperties, LaunchTime, SharedBytes, Step, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{DType, Graph, Op, Plan};

use crate::exec::Loaded;

pub(crate) const NAME: &str = "cpu";

/// The CPU backend. Threads come from [`crate::pool`] (all cores, or `KILN_THREADS`).
#[derive(Debug)]
pub struct CpuBackend {
    properties: DeviceProperties,
    buffers: Vec<Option<Vec<u8>>>,
    loaded: Option<Loaded>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend {
            properties: DeviceProperties {
                name: format!("{} CPU", std::env::consts::ARCH),
                compute_units: crate::pool::n_threads(),
                subgroup_size: None,
                memory_bytes: None,
                has_f16: false,
            },
            buffers: Vec::new(),
            loaded: None,
        }
    }

    fn loaded(&mut self) -> Result<&mut Loaded, BackendError> {
        self.loaded.as_mut().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
        })
    }

    fn buffer(&mut self, id: BufferId) -> Result<&mut Vec<u8>, BackendError> {
        self.buffers
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| BackendError::BadStep {
                backend: NAME,
                reason: format!("unknown buffer {}", id.0),
            })
    }
}

/// Weight dtypes the CPU kernels take: the float types and Q8_K dequantized a row at a
/// time, every other block format with integer SIMD dots (`simd::Format`).
fn supported_weight(dtype: DType) -> bool {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::Q8_K => true,
        DType::F8E4M3 => false,
        _ => crate::simd::Format::for_weights(dtype).is_some(),
    }
}

fn range_error(what: &str, offset: usize, len: usize, size: usize) -> BackendError {
    BackendError::BadStep {
        backend: NAME,
        reason: format!("{what} of {len} bytes at {offset} is outside a {size}-byte buffer"),
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        // Every op of the IR has a CPU kernel; only the weight types can be missing.
        op.matrices()
            .iter()
            .all(|&w| graph.weight(w).is_some_and(|w| supported_weight(w.dtype)))
    }

    fn alloc(&mut self, bytes: usize) -> Result<BufferId, BackendError> {
        let mut buffer = Vec::new();
        buffer
            .try_reserve_exact(bytes)
            .map_err(|_| BackendError::OutOfMemory {
                backend: NAME,
                bytes: bytes as u64,
            })?;
        buffer.resize(bytes, 0);
        self.buffers.push(Some(buffer));
        Ok(BufferId(self.buffers.len() as u32 - 1))
    }

    fn upload(&mut self, id: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        let buffer = self.buffer(id)?;
        let size = buffer.len();
        let dst = offset
            .checked_add(data.len())
            .and_then(|end| buffer.get_mut(offset..end))
            .ok_or_else(|| range_error("upload", offset, data.len(), size))?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn download(
        &mut self,
        id: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let buffer = self.buffer(id)?;
        let size = buffer.len();
        let src = offset
            .checked_add(out.len())
            .and_then(|end| buffer.get(offset..end))
            .ok_or_else(|| range_error("download", offset, out.len(), size))?;
        out.copy_from_slice(src);
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
        let mut shared: Vec<SharedBytes> = Vec::with_capacity(plan.graph.weights.len());
        for w in &plan.graph.weights {
            let bytes = weights
                .weight(&w.name)
                .ok_or_else(|| BackendError::Weight {
                    backend: NAME,
                    name: w.name.clone(),
                    reason: "not in the model".into(),
                })?;
            let expected = w.dtype.bytes_for((w.rows * w.cols) as u64);
            if expected != Some(bytes.as_slice().len() as u64) || !supported_weight(w.dtype) {
                return Err(BackendError::Weight {
                    backend: NAME,
                    name: w.name.clone(),
                    reason: format!(
                        "{} bytes of {} for ({}, {}) values",
                        bytes.as_slice().len(),
                        w.dtype,
                        w.rows,
                        w.cols
                    ),
                });
            }
            shared.push(bytes);
        }
        self.loaded = Some(Loaded::new(plan.clone(), shared, *kv, kv_page_count)?);
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        self.loaded()?.execute(step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_output(out)
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, n_tokens: usize) -> Result<(), BackendError> {
        self.loaded()?
            .copy_kv_page(src as usize, dst as usize, n_tokens)
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights stay in the model's map; only vector weights are decoded to f32, and
        // each launch keeps its last time.
        let vectors: usize = plan
            .graph
            .weights
            .iter()
            .filter(|w| w.rows == 1)
            .map(|w| w.cols * 4)
            .sum();
        vectors + plan.launches.len() * 8
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        Ok(self.loaded()?.launch_times())
    }
}
