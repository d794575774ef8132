//! The Backend implementation: device, buffers, plan loading.

use kiln_ir::backend::{
    Backend, BackendError, Ceilings, DeviceProperties, LaunchTime, SharedBytes, Step, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{DType, Graph, Op, Plan};

use crate::exec::Loaded;

pub(crate) const NAME: &str = "cpu";

/// How to open the CPU backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuOptions {
    /// Threads of the worker pool, the caller included; None: one per core. The pool is
    /// process-wide ([`crate::pool::configure`]): the first backend's count holds.
    pub threads: Option<usize>,
}

/// The CPU backend. Threads come from [`crate::pool`].
#[derive(Debug)]
pub struct CpuBackend {
    properties: DeviceProperties,
    loaded: Option<Loaded>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    /// One thread per core.
    pub fn new() -> CpuBackend {
        CpuBackend::with_options(CpuOptions::default())
    }

    pub fn with_options(options: CpuOptions) -> CpuBackend {
        CpuBackend {
            properties: DeviceProperties {
                name: format!("{} CPU", std::env::consts::ARCH),
                compute_units: crate::pool::configure(options.threads),
                ..DeviceProperties::default()
            },
            loaded: None,
        }
    }

    fn loaded(&mut self) -> Result<&mut Loaded, BackendError> {
        self.loaded.as_mut().ok_or_else(|| BackendError::BadStep {
            backend: NAME,
            reason: "no plan is loaded".into(),
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

    fn copy_kv_page(&mut self, src: u32, dst: u32, _n_tokens: usize) -> Result<(), BackendError> {
        self.loaded()?.copy_kv_page(src, dst)
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

    fn ceilings(&mut self) -> Result<Option<Ceilings>, BackendError> {
        Ok(Some(crate::ceilings::measure()))
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        Ok(self.loaded()?.launch_times())
    }
}
