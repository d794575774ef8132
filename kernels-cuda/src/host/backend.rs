//! The [`Backend`] of the CUDA kernels on any [`Device`]: options open the device,
//! `load_plan` lowers the plan onto its buffers ([`super::loaded`]), the step calls run
//! it ([`super::run`]). A device crate implements `Device` and names the type:
//! `pub type CudaBackend = CudaBackendOn<Gpu>` (backends/cuda),
//! `pub type EmuBackend = CudaBackendOn<EmuDevice>` (backends/cuda-emu).

use kiln_gpu_host::no_plan;
use kiln_ir::backend::{
    Backend, BackendError, Candidate, Ceilings, DeviceProperties, LaunchTime, Step, WeightSource,
    host_top_k,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

use super::device::{Device, driver_error};
use super::loaded::Loaded;
use crate::launch::TOP_K_MAX;

/// kiln's CUDA kernels on device `D`.
pub struct CudaBackendOn<D: Device> {
    properties: DeviceProperties,
    loaded: Option<Loaded<D>>,
    /// `launch_times` was asked for: plans loaded from then on are timed from their first
    /// step (a caller that reloads between steps still gets the times of the last one).
    timed: bool,
    // Last: the loaded plan's buffers go before the device that made them.
    device: D,
}

impl<D: Device + std::fmt::Debug> std::fmt::Debug for CudaBackendOn<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackendOn")
            .field("device", &self.device)
            .field("loaded", &self.loaded)
            .finish()
    }
}

impl<D: Device> CudaBackendOn<D> {
    /// The device with the default options. No device (no driver, no compiler) is
    /// `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<CudaBackendOn<D>, BackendError> {
        CudaBackendOn::with_options(D::Options::default())
    }

    pub fn with_options(options: D::Options) -> Result<CudaBackendOn<D>, BackendError> {
        let (device, properties) = D::open(options)?;
        Ok(CudaBackendOn {
            properties,
            loaded: None,
            timed: false,
            device,
        })
    }

    /// The device (what its crate reports beyond the Backend trait).
    pub fn device(&self) -> &D {
        &self.device
    }

    /// (rows, cols) of the plan's output (the logits) in the last step, so that a caller
    /// can size `read_logits`.
    pub fn last_output_shape(&self) -> Result<(usize, usize), BackendError> {
        self.loaded()?.output_shape()
    }

    fn loaded(&self) -> Result<&Loaded<D>, BackendError> {
        self.loaded.as_ref().ok_or_else(|| no_plan(D::NAME))
    }
}

impl<D: Device> Backend for CudaBackendOn<D> {
    fn name(&self) -> &'static str {
        D::NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        crate::lower::supports(op, graph)
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.loaded = None;
        let device = (&self.device, &self.properties);
        self.loaded = Some(Loaded::new(
            device,
            plan,
            weights,
            kv,
            kv_page_count,
            self.timed,
        )?);
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(D::NAME))?;
        loaded.execute(&self.device, step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_output(&self.device, out)
    }

    /// The greedy LM head on the device (argmax.cu): a greedy decode step reads back one
    /// id per row instead of the logits.
    fn read_argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        self.loaded()?.argmax(&self.device, vocab, out)
    }

    /// The sampler's candidates on the device (top_k.cu) for k up to `TOP_K_MAX`: a
    /// sampling step reads back k pairs a row instead of the logits; a larger k reads the
    /// logits back and chooses on the host.
    fn read_top_k(
        &mut self,
        vocab: usize,
        k: usize,
        out: &mut [Candidate],
    ) -> Result<(), BackendError> {
        if k > TOP_K_MAX {
            return host_top_k(self, vocab, k, out);
        }
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(D::NAME))?;
        loaded.top_k(&self.device, vocab, k, out)
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, _n_tokens: usize) -> Result<(), BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(D::NAME))?;
        loaded.copy_kv_page(&self.device, src, dst)
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.device
            .synchronize()
            .map_err(|e| driver_error::<D>("synchronizing", e))
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        // Weights are uploaded to the device (vectors as f32, packed types repacked), plus
        // the step buffer and the matvec's q8_1 scratch.
        let weights = crate::weights::WeightLayout::new(plan).map_or(0, |l| l.total);
        let scratch = crate::lower::q8_1_bytes(plan);
        (weights + scratch) as usize + 4096
    }

    fn ceilings(&mut self) -> Result<Option<Ceilings>, BackendError> {
        self.device.ceilings()
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(D::NAME))?;
        let times = loaded.launch_times(&self.device);
        self.timed = loaded.timed();
        times
    }
}
