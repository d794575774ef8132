//! The [`Backend`] of every device API that runs a [`Program`]: options open the device,
//! `load_plan` builds the program and hands it to the API's [`Device`], and the step calls
//! go to [`Loaded`]. A WGSL backend crate implements [`Api`] and names the type:
//! `pub type WgpuBackend = WgslBackend<Wgpu>`.

use kiln_gpu_host::no_plan;
use kiln_ir::backend::{Backend, BackendError, DeviceProperties, LaunchTime, Step, WeightSource};
use kiln_ir::kv_layout::KvLayout;
use kiln_ir::{Graph, Op, Plan};

use crate::run::{Device, Loaded};
use crate::{Capabilities, Program};

/// A device API that runs WGSL programs: how it opens and what it builds for a plan.
pub trait Api: Sized {
    /// How to open it; `Default`: a GPU only, never a CPU implementation.
    type Options: Default;
    /// A loaded plan's objects on the device.
    type Plan: Device;

    /// Open the best device and say what it is (the properties the kernels are built
    /// for: subgroups where they are used, the buffer limits in force).
    fn open(options: Self::Options) -> Result<(Self, DeviceProperties), BackendError>;
    /// `options` with CPU implementations (lavapipe) allowed.
    fn allowing_cpu(options: Self::Options) -> Self::Options;
    /// What programs may use on this device of `properties`.
    fn capabilities(&self, properties: &DeviceProperties) -> Capabilities;
    /// Build `program`'s objects and upload `plan`'s weights.
    fn load(
        &self,
        program: &Program,
        plan: &Plan,
        weights: &dyn WeightSource,
    ) -> Result<Self::Plan, BackendError>;
    /// Device bytes `plan` takes when loaded.
    fn load_bytes(&self, plan: &Plan) -> usize;
    /// The device's name, in launch-time errors.
    fn device_name(&self) -> String;
    /// Print each step shape's dispatches when it is first run.
    fn debug(&self) -> bool;
    /// Wait for the device while no plan is loaded.
    fn wait_idle(&self) -> Result<(), BackendError>;
}

/// A WGSL backend on device API `A`.
pub struct WgslBackend<A: Api> {
    properties: DeviceProperties,
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
        WgslBackend::with_options(A::Options::default())
    }

    /// Open the best device, a CPU implementation (lavapipe) included: the tests' and
    /// benchmarks' constructor.
    pub fn any_device() -> Result<WgslBackend<A>, BackendError> {
        WgslBackend::with_options(A::allowing_cpu(A::Options::default()))
    }

    pub fn with_options(options: A::Options) -> Result<WgslBackend<A>, BackendError> {
        let (api, properties) = A::open(options)?;
        Ok(WgslBackend {
            properties,
            loaded: None,
            api,
        })
    }

    /// The device API's own state (what its crate reports beyond the Backend trait).
    pub fn api(&self) -> &A {
        &self.api
    }

    /// The loaded plan's objects, if a plan is loaded.
    pub fn plan(&self) -> Option<&A::Plan> {
        self.loaded.as_ref().map(|l| &l.device)
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
        let caps = self.api.capabilities(&self.properties);
        let program = Program::new(plan, weights, kv, kv_page_count, &caps)
            .map_err(|e| e.for_backend(A::Plan::NAME))?;
        let device = self.api.load(&program, plan, weights)?;
        self.loaded = Some(Loaded::new(program, device, kv, self.api.debug()));
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

    fn synchronize(&mut self) -> Result<(), BackendError> {
        match &mut self.loaded {
            Some(l) => l.synchronize(),
            None => self.api.wait_idle(),
        }
    }

    fn load_bytes(&self, plan: &Plan) -> usize {
        self.api.load_bytes(plan)
    }

    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        let device = self.api.device_name();
        self.loaded()?.launch_times(&device)
    }
}
