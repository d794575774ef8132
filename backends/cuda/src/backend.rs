//! The Backend implementation: options, device, plan loading; the plan itself runs in
//! [`crate::loaded`].

use std::path::PathBuf;

use kiln_gpu_host::{Cache, no_plan};
use kiln_ir::backend::{
    Backend, BackendError, Ceilings, DeviceProperties, LaunchTime, Step, WeightSource,
};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

use crate::device::{Gpu, NAME, driver};
use crate::loaded::Loaded;

/// How to open the backend. `Default`: device 0, NVRTC from the loader's path, no disk
/// cache, CUDA graphs, the decode attention kernels and tensor cores where the device
/// has them, quiet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// The device ordinal.
    pub device: usize,
    /// An NVRTC library file to load before the usual names.
    pub nvrtc_path: Option<PathBuf>,
    /// Where compiled kernels (cubins) are kept.
    pub cache: Cache,
    /// Capture decode steps as CUDA graphs and replay them ([`crate::graphs`]).
    pub graphs: bool,
    /// The split-K decode attention kernels for short steps (off: one block per (head,
    /// token) everywhere).
    pub decode_attention: bool,
    /// The tensor-core matmul and prefill attention on sm_80+ (mma.sync).
    pub tensor_cores: bool,
    /// Print each compile and each launch (and run without graphs).
    pub debug: bool,
}

impl Default for CudaOptions {
    fn default() -> CudaOptions {
        CudaOptions {
            device: 0,
            nvrtc_path: None,
            cache: Cache::Off,
            graphs: true,
            decode_attention: true,
            tensor_cores: true,
            debug: false,
        }
    }
}

/// The CUDA backend: kiln-kernels-cuda on the driver API (cudarc), kernels compiled by
/// NVRTC for the device and cached on disk.
#[derive(Debug)]
pub struct CudaBackend {
    gpu: Gpu,
    properties: DeviceProperties,
    loaded: Option<Loaded>,
    /// `launch_times` was asked for: plans loaded from then on are timed from their first
    /// step (a caller that reloads between steps still gets the times of the last one).
    timed: bool,
}

impl CudaBackend {
    /// Device 0 with the default options. No driver, no NVRTC or no device is
    /// `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<CudaBackend, BackendError> {
        CudaBackend::with_options(CudaOptions::default())
    }

    /// Device `ordinal` with the default options.
    pub fn with_device(ordinal: usize) -> Result<CudaBackend, BackendError> {
        CudaBackend::with_options(CudaOptions {
            device: ordinal,
            ..CudaOptions::default()
        })
    }

    pub fn with_options(options: CudaOptions) -> Result<CudaBackend, BackendError> {
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
        Ok(CudaBackend {
            gpu,
            properties,
            loaded: None,
            timed: false,
        })
    }

    /// (rows, cols) of the plan's output (the logits) in the last step, so that a caller
    /// can size `read_logits`.
    pub fn last_output_shape(&self) -> Result<(usize, usize), BackendError> {
        self.loaded()?.output_shape()
    }

    fn loaded(&self) -> Result<&Loaded, BackendError> {
        self.loaded.as_ref().ok_or_else(|| no_plan(NAME))
    }
}

impl Backend for CudaBackend {
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
        let device = (&self.gpu, &self.properties);
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
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(NAME))?;
        loaded.execute(&self.gpu, step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_output(&self.gpu, out)
    }

    /// The greedy LM head on the device (argmax.cu): a greedy decode step reads back one
    /// id per row instead of the logits.
    fn read_argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        self.loaded()?.argmax(&self.gpu, vocab, out)
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
        // Weights are uploaded to the device (vectors as f32, packed types repacked), plus
        // the step buffer and the matvec's q8_1 scratch.
        let weights = kiln_kernels_cuda::weights::WeightLayout::new(plan).map_or(0, |l| l.total);
        let scratch = kiln_kernels_cuda::lower::q8_1_bytes(plan);
        (weights + scratch) as usize + 4096
    }

    /// Copy bandwidth and the mma.sync f16 peak of this device (crate::ceilings).
    fn ceilings(&mut self) -> Result<Option<Ceilings>, BackendError> {
        crate::ceilings::measure(&self.gpu)
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let loaded = self.loaded.as_mut().ok_or_else(|| no_plan(NAME))?;
        let times = loaded.launch_times(&self.gpu);
        self.timed = loaded.timed();
        times
    }
}
