//! The [`Backend`] of every device API that runs a [`Program`]: [`WgslOptions`] open the
//! device, whose [`Adapter`] report becomes the properties and the program's
//! capabilities; `load_plan` builds the program, checks that the device binds it and
//! hands it to the API's [`Device`]; the step calls go to [`Loaded`]. A WGSL backend
//! crate implements [`Api`] and names the type: `pub type WgpuBackend = WgslBackend<Wgpu>`.

use kiln_gpu_host::{Cache, Output, no_plan};
use kiln_ir::backend::{Backend, BackendError, DeviceProperties, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

use crate::program::WINDOW_ALIGN;
use crate::run::{Device, Loaded};
use crate::{Capabilities, Coop, Program};

/// Workgroup memory the cooperative-matrix GEMM (gemm_tiles_coop.wgsl) uses: its f16
/// tiles (2 × 64 × 40 halves), the staged sums (64 × 64 f32) and the scales (2 × 64).
pub const GEMM_COOP_SHARED_BYTES: u64 = 2 * 64 * 40 * 2 + 64 * 64 * 4 + 2 * 64 * 4;

/// Whether the tiled GEMM's f16 tiles are multiplied as cooperative matrices
/// ([`WgslOptions::coop_matrix`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CoopMatrix {
    /// Where the device has them (the adapter's `coop_matrix`) and f16 arithmetic is on.
    #[default]
    Auto,
    /// Never: the f16 tiles' own loop.
    Off,
    /// Their plain-WGSL twin (gemm_coop_twin.wgsl) on any device with f16 arithmetic:
    /// the tests' way to run everything of that kernel but the matrix operations.
    Twin,
}

/// How to open a WGSL backend (wgpu or Vulkan). `Default`: a GPU only, subgroups and f16
/// arithmetic where the device has them (the largest subgroup size it offers up to a
/// workgroup), no disk cache, quiet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgslOptions {
    /// Take a CPU implementation (lavapipe, WARP) when there is no GPU.
    pub allow_cpu: bool,
    /// Use subgroup operations where the device has them (off: the workgroup-memory
    /// reductions every device runs).
    pub subgroups: bool,
    /// The subgroup size to require where the device has subgroup size control (clamped
    /// to what it offers); None: the largest up to a workgroup. Vulkan only: wgpu has no
    /// size control and ignores it.
    pub subgroup_size: Option<u32>,
    /// Use f16 arithmetic where the device has it (shader-f16: the tiled GEMM's f16 tiles
    /// for quantized weights); off: f32 arithmetic everywhere, what every device runs.
    pub shader_f16: bool,
    /// Cooperative matrices for the tiled GEMM of quantized weights (with f16 arithmetic
    /// only).
    pub coop_matrix: CoopMatrix,
    /// Where compiled kernels (SPIR-V, the pipeline cache) are kept. Vulkan only: wgpu
    /// compiles its pipelines from WGSL at every load and ignores it.
    pub cache: Cache,
    /// Print each kernel built and, when a step shape is first prepared, each dispatch's
    /// workgroups to stderr.
    pub debug: bool,
    /// Make weights buffers of at most this many bytes, below the device's largest
    /// buffer (tests force the weights over several buffers with it).
    pub max_weights_buffer: Option<u64>,
}

impl Default for WgslOptions {
    fn default() -> WgslOptions {
        WgslOptions {
            allow_cpu: false,
            subgroups: true,
            subgroup_size: None,
            shader_f16: true,
            coop_matrix: CoopMatrix::Auto,
            cache: Cache::Off,
            debug: false,
            max_weights_buffer: None,
        }
    }
}

/// What an opened device is and offers, as its API reports it: the backend's
/// [`DeviceProperties`] and the program's [`Capabilities`] are made from it here, the
/// same way for every API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adapter {
    /// The device's name (in launch-time errors).
    pub name: String,
    /// The API it runs on ("Vulkan 1.3"), after the name in the properties' name.
    pub api: String,
    /// The subgroup size the subgroup kernels run with; None without subgroup
    /// operations in compute shaders (whether they are used is the options' choice).
    pub subgroup_size: Option<u32>,
    /// The smallest and largest subgroup size the device can run.
    pub subgroup_sizes: Option<(u32, u32)>,
    /// f16 arithmetic in shaders, enabled on the device (wgpu's SHADER_F16; Vulkan's
    /// shaderFloat16 with 16-bit storage buffer access); false where the options turned
    /// it off.
    pub shader_f16: bool,
    /// Cooperative matrices that the GEMM's coop tiles run on, enabled on the device: 16
    /// × 16 × 16 with f16 A and B, f32 C, subgroup scope, in compute shaders, subgroups
    /// of at most 64 (4 to a workgroup of 256) and GEMM_COOP_SHARED_BYTES of workgroup
    /// memory (Vulkan's VK_KHR_cooperative_matrix); false where the options turned them
    /// off.
    pub coop_matrix: bool,
    /// Device-local memory, where the API says.
    pub memory_bytes: Option<u64>,
    /// The largest buffer (None: unknown).
    pub max_buffer_bytes: Option<u64>,
    /// The largest storage buffer binding.
    pub max_binding_bytes: u64,
    /// The largest uniform buffer binding: a params block's range.
    pub max_uniform_binding: u64,
    /// Workgroup memory a workgroup may use.
    pub shared_memory_bytes: u64,
    /// Alignment of uniform buffer offsets (the params blocks').
    pub uniform_align: u64,
    /// Alignment of storage buffer offsets (the weights windows').
    pub storage_align: u64,
}

impl Adapter {
    /// The properties of the backend opened with `options` on this device: subgroups and
    /// f16 arithmetic where they are used, weights buffers at most `max_weights_buffer`.
    fn properties(&self, options: &WgslOptions) -> DeviceProperties {
        let size = |s: u32| s as usize;
        DeviceProperties {
            name: format!("{} ({})", self.name, self.api),
            compute_units: 1,
            subgroup_size: self.subgroup_size.filter(|_| options.subgroups).map(size),
            subgroup_sizes: self.subgroup_sizes.map(|(min, max)| (size(min), size(max))),
            memory_bytes: self.memory_bytes,
            max_buffer_bytes: (self.max_buffer_bytes)
                .map(|b| options.max_weights_buffer.map_or(b, |m| m.min(b))),
            max_binding_bytes: Some(self.max_binding_bytes),
            shared_memory_bytes: Some(self.shared_memory_bytes as usize),
            has_f16: self.shader_f16 && options.shader_f16,
        }
    }

    /// How the f16 tiles of a backend opened with `options` are multiplied: as
    /// cooperative matrices where the device has them, or as their twin where asked
    /// (both need f16 arithmetic); None: their own loop.
    fn gemm_coop(&self, options: &WgslOptions) -> Option<Coop> {
        if !(self.shader_f16 && options.shader_f16) {
            return None;
        }
        match options.coop_matrix {
            CoopMatrix::Off => None,
            CoopMatrix::Twin => {
                (self.shared_memory_bytes >= GEMM_COOP_SHARED_BYTES).then_some(Coop::Twin)
            }
            CoopMatrix::Auto => self.coop_matrix.then_some(Coop::Native),
        }
    }

    /// What programs may use on this device of `properties`: what they say, the GEMM's
    /// `coop` tiles, and buffers of at most 4 GiB, since a weights window's base is a
    /// dynamic offset, a u32 ([`crate::Run::dynamic_offsets`]).
    fn capabilities(&self, properties: &DeviceProperties, coop: Option<Coop>) -> Capabilities {
        let caps = Capabilities::of(properties, self.uniform_align);
        Capabilities {
            max_buffer: caps.max_buffer.min(1 << 32),
            gemm_coop: coop,
            ..caps
        }
    }

    /// Whether the device binds `program`'s params blocks and weights windows.
    fn check_bindings(&self, program: &Program, backend: &'static str) -> Result<(), BackendError> {
        let params = program.max_params_block();
        let windows = WINDOW_ALIGN.is_multiple_of(self.storage_align.max(1));
        if params > self.max_uniform_binding || !windows {
            return Err(BackendError::Unsupported {
                backend,
                what: format!(
                    "params blocks of {params} bytes, or weights windows at {WINDOW_ALIGN}-byte offsets"
                ),
            });
        }
        Ok(())
    }
}

/// A device API that runs WGSL programs: how it opens and what it builds for a plan.
pub trait Api: Sized {
    /// A loaded plan's objects on the device.
    type Plan: Device;

    /// Open the best device (a CPU implementation only with `options.allow_cpu`) and
    /// say what it is; the kernels use subgroups where `options.subgroups` and the
    /// adapter's subgroup size say so.
    fn open(options: &WgslOptions) -> Result<(Self, Adapter), BackendError>;
    /// Build `program`'s objects and upload `plan`'s weights.
    fn load(
        &self,
        program: &Program,
        plan: &Plan,
        weights: &dyn WeightSource,
    ) -> Result<Self::Plan, BackendError>;
    /// Wait for the device while no plan is loaded.
    fn wait_idle(&self) -> Result<(), BackendError>;
}

/// A WGSL backend on device API `A`.
pub struct WgslBackend<A: Api> {
    properties: DeviceProperties,
    adapter: Adapter,
    /// How the GEMM's f16 tiles are multiplied (Adapter::gemm_coop).
    coop: Option<Coop>,
    debug: bool,
    /// Launch times were asked for: plans loaded from then on are timed from the start.
    timed: bool,
    loaded: Option<Loaded<A::Plan>>,
    // Last: the loaded plan's objects go before the device that made them.
    api: A,
}

impl<A: Api> std::fmt::Debug for WgslBackend<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgslBackend")
            .field("device", &self.properties.name)
            .field("loaded", &self.loaded)
            .finish()
    }
}

impl<A: Api> WgslBackend<A> {
    /// Open the best GPU with the default options: never a CPU implementation, so that
    /// the engine's choice of the best backend never lands on a software rasterizer. No
    /// driver or no device is `BackendError::NoDevice`, never a panic.
    pub fn new() -> Result<WgslBackend<A>, BackendError> {
        WgslBackend::with_options(WgslOptions::default())
    }

    /// Open the best device, a CPU implementation (lavapipe) included: the tests' and
    /// benchmarks' constructor.
    pub fn any_device() -> Result<WgslBackend<A>, BackendError> {
        WgslBackend::with_options(WgslOptions {
            allow_cpu: true,
            ..WgslOptions::default()
        })
    }

    pub fn with_options(options: WgslOptions) -> Result<WgslBackend<A>, BackendError> {
        let (api, adapter) = A::open(&options)?;
        Ok(WgslBackend {
            properties: adapter.properties(&options),
            coop: adapter.gemm_coop(&options),
            adapter,
            debug: options.debug,
            timed: false,
            loaded: None,
            api,
        })
    }

    /// How the tiled GEMM's f16 tiles are multiplied on this backend: as cooperative
    /// matrices (or their twin), or None: by their own loop (or there are no f16 tiles).
    pub fn gemm_coop(&self) -> Option<Coop> {
        self.coop
    }

    /// The device API's own state (what its crate reports beyond the Backend trait).
    pub fn api(&self) -> &A {
        &self.api
    }

    /// The loaded plan's objects, if a plan is loaded.
    pub fn plan(&self) -> Option<&A::Plan> {
        self.loaded.as_ref().map(|l| &l.device)
    }

    /// (rows, columns) of the last step's output (tests size `read_logits` with it).
    pub fn last_output_shape(&self) -> Result<(usize, usize), BackendError> {
        let loaded = self.loaded.as_ref().ok_or_else(|| no_plan(A::Plan::NAME))?;
        loaded.last_output_shape()
    }

    fn loaded(&mut self) -> Result<&mut Loaded<A::Plan>, BackendError> {
        self.loaded.as_mut().ok_or_else(|| no_plan(A::Plan::NAME))
    }
}

impl<A: Api> Backend for WgslBackend<A> {
    fn name(&self) -> &'static str {
        A::Plan::NAME
    }

    fn properties(&self) -> &DeviceProperties {
        &self.properties
    }

    fn supports(&self, op: &Op, graph: &Graph) -> bool {
        crate::program::supports_device(op, graph, &self.properties)
    }

    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError> {
        self.loaded = None;
        let caps = self.adapter.capabilities(&self.properties, self.coop);
        let program = Program::new(plan, weights, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(A::Plan::NAME))?;
        self.adapter.check_bindings(&program, A::Plan::NAME)?;
        let device = self.api.load(&program, plan, weights)?;
        let mut loaded = Loaded::new(program, device, kv, self.debug);
        loaded.timed = self.timed;
        self.loaded = Some(loaded);
        Ok(())
    }

    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError> {
        self.loaded()?.execute(step)
    }

    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError> {
        self.loaded()?.read_logits(out)
    }

    fn copy_kv_page(&mut self, src: u32, dst: u32, n_tokens: usize) -> Result<(), BackendError> {
        self.loaded()?.copy_kv_page(src, dst, n_tokens)
    }

    /// The greedy LM head on the device (argmax.wgsl, after every step with output
    /// rows): a greedy decode step reads back one word a row, not its logits.
    fn read_argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        match self.loaded()?.read_argmax(vocab, out) {
            Some(read) => read,
            None => kiln_ir::backend::host_argmax(self, vocab, out),
        }
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        match &mut self.loaded {
            Some(l) => l.synchronize(),
            None => self.api.wait_idle(),
        }
    }

    /// Weights in device memory (vectors as f32), the params blocks, a readback buffer
    /// of the logits and the greedy ids.
    fn load_bytes(&self, plan: &Plan) -> usize {
        let align = self.adapter.uniform_align.max(16);
        let readback = Output::of(plan).map_or(0, |o| o.max_bytes() + 4 * o.max_rows as u64);
        (crate::program::load_bytes(plan, align) + readback) as usize
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let device = self.adapter.name.clone();
        let loaded = self.loaded()?;
        let times = loaded.launch_times(&device);
        self.timed = loaded.timed;
        times
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device with subgroups of 16 to 64 and 8 GiB buffers.
    fn adapter() -> Adapter {
        Adapter {
            name: "gpu".into(),
            api: "Vulkan 1.3".into(),
            subgroup_size: Some(32),
            subgroup_sizes: Some((16, 64)),
            shader_f16: true,
            coop_matrix: false,
            memory_bytes: Some(3 << 30),
            max_buffer_bytes: Some(8 << 30),
            max_binding_bytes: 1 << 27,
            max_uniform_binding: 1 << 16,
            shared_memory_bytes: 32768,
            uniform_align: 64,
            storage_align: 32,
        }
    }

    #[test]
    fn the_properties_and_capabilities_follow_the_options() {
        let a = adapter();
        let p = a.properties(&WgslOptions::default());
        assert_eq!(p.name, "gpu (Vulkan 1.3)");
        assert_eq!(
            (p.subgroup_size, p.subgroup_sizes),
            (Some(32), Some((16, 64)))
        );
        assert_eq!(p.max_buffer_bytes, Some(8 << 30));
        let caps = a.capabilities(&p, None);
        assert!(caps.subgroups && caps.shader_f16);
        assert_eq!(caps.max_buffer, 1 << 32, "dynamic offsets are u32s");
        assert_eq!(
            (caps.max_storage_binding, caps.uniform_align),
            (1 << 27, 64)
        );
        let options = WgslOptions {
            subgroups: false,
            shader_f16: false,
            max_weights_buffer: Some(1000),
            ..WgslOptions::default()
        };
        let off = a.properties(&options);
        assert_eq!(
            (off.subgroup_size, off.max_buffer_bytes),
            (None, Some(1000))
        );
        assert_eq!(
            off.subgroup_sizes,
            Some((16, 64)),
            "what the device can run"
        );
        let caps = a.capabilities(&off, None);
        assert!(!caps.subgroups && !caps.shader_f16);
        let without = Adapter {
            shader_f16: false,
            ..adapter()
        };
        let p = without.properties(&WgslOptions::default());
        assert!(!p.has_f16 && !without.capabilities(&p, None).shader_f16);
        assert_eq!(caps.max_buffer, 1000);
    }

    /// Cooperative matrices where the device has them and f16 arithmetic is on, never
    /// when turned off; the twin wherever f16 arithmetic is (and its workgroup memory).
    #[test]
    fn the_gemm_coop_tiles_follow_the_device_and_the_options() {
        let with = |coop_matrix| WgslOptions {
            coop_matrix,
            ..WgslOptions::default()
        };
        let coop = Adapter {
            coop_matrix: true,
            ..adapter()
        };
        assert_eq!(coop.gemm_coop(&with(CoopMatrix::Auto)), Some(Coop::Native));
        assert_eq!(coop.gemm_coop(&with(CoopMatrix::Off)), None);
        assert_eq!(coop.gemm_coop(&with(CoopMatrix::Twin)), Some(Coop::Twin));
        let no_f16 = WgslOptions {
            shader_f16: false,
            ..WgslOptions::default()
        };
        assert_eq!(coop.gemm_coop(&no_f16), None);
        let plain = adapter();
        assert_eq!(plain.gemm_coop(&with(CoopMatrix::Auto)), None);
        assert_eq!(plain.gemm_coop(&with(CoopMatrix::Twin)), Some(Coop::Twin));
        let small = Adapter {
            shared_memory_bytes: 16384,
            ..adapter()
        };
        assert_eq!(small.gemm_coop(&with(CoopMatrix::Twin)), None);
        let p = coop.properties(&WgslOptions::default());
        let caps = coop.capabilities(&p, Some(Coop::Native));
        assert_eq!(caps.gemm_coop, Some(Coop::Native));
    }
}
