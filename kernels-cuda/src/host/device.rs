//! What the CUDA backend's host logic asks of a device: memory, copies, modules,
//! launches, a wait, timers and graphs. Each call is one call of the device's API and
//! decides nothing: the errors it returns are the API's own, given their context
//! ("uploading the step", "launching matvec_q4_0_t8 (launch 12)") by the caller, so
//! that every device reports the same `BackendError`s for the same failures.

use kiln_ir::backend::{BackendError, Ceilings, DeviceProperties};

use crate::launch::Launch;
use crate::variant::{Entry, Variant};

/// What a new buffer will hold. A GPU zeroes every allocation; the emulator fills each
/// kind with its own pattern instead, so that a kernel reading bytes nothing wrote shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// The weights, uploaded once (padding between them is never written).
    Weights,
    /// What kernels write before any kernel reads it: arena, KV pages, the attention
    /// splits' partial results, the q8_1 activations, argmax's ids, top-k's candidates.
    Kernels,
    /// The step buffer, written by the host before every step.
    Step,
}

/// Which of the kernels' paths a device takes, and how its steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The tensor-core matmul and prefill attention (mma.sync, sm_80+).
    pub tensor_cores: bool,
    /// The prefill attention on Hopper's warpgroup MMA (the modules are sm_90a's).
    pub wgmma: bool,
    /// The split-K decode attention for short steps (off: one block per (head, token)).
    pub decode_attention: bool,
    /// Capture decode steps as graphs and replay them ([`super::run`]).
    pub graphs: bool,
    /// Print each launch (and run without graphs).
    pub debug: bool,
}

/// A module's entry points, indexed by [`Entry::index`].
pub type Functions<F> = [Option<F>; Entry::COUNT];

/// The modules of a plan: each variant's entry points (indexed like
/// `Lowered::variants`), argmax's (the greedy LM head) and top-k's (the sampler's
/// candidates).
pub struct Modules<F> {
    pub functions: Vec<Functions<F>>,
    pub argmax: F,
    pub top_k: F,
}

impl<F> std::fmt::Debug for Modules<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules")
            .field("variants", &self.functions.len())
            .finish()
    }
}

/// The entry table of variant `v`, each entry looked up by its symbol with `function`.
pub fn entry_table<F, E>(
    v: &Variant,
    mut function: impl FnMut(&str) -> Result<F, E>,
) -> Result<Functions<F>, E> {
    let mut table: Functions<F> = std::array::from_fn(|_| None);
    for &e in v.entries() {
        table[e.index()] = Some(function(&v.symbol(e))?);
    }
    Ok(table)
}

/// `BackendError::Driver` of device `D`: what was being done, and the API's error.
pub fn driver_error<D: Device>(doing: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Driver {
        backend: D::NAME,
        message: format!("{doing}: {e}"),
    }
}

/// A device that runs kiln's CUDA kernels: the driver API (backends/cuda) or the CPU
/// emulator (backends/cuda-emu). Calls are made from one thread at a time, in the order
/// of the work (one stream).
pub trait Device: Sized {
    /// The backend's name (`Backend::name`, and every error's).
    const NAME: &'static str;
    /// How to open it; `Default` reads nothing.
    type Options: Default;
    /// Device memory (freed when dropped).
    type Buffer;
    /// A kernel entry point of a loaded module.
    type Function;
    /// A timestamp recorded in the work's order.
    type Timer;
    /// A step's launches, captured once and replayed.
    type Graph;
    /// What a call of the API answers when it fails.
    type Error: std::fmt::Display;

    /// Open the device of `options`, and say what it is. No device (no driver, no
    /// compiler) is `BackendError::NoDevice`, never a panic.
    fn open(options: Self::Options) -> Result<(Self, DeviceProperties), BackendError>;

    /// The kernels' paths and the step options this device was opened with.
    fn paths(&self) -> Paths;

    /// `bytes` (at least 16) of device memory, which will hold `contents`.
    fn alloc(&self, bytes: usize, contents: Contents) -> Result<Self::Buffer, Self::Error>;

    /// Whether `e` says the device is out of memory (`BackendError::OutOfMemory`).
    fn is_out_of_memory(e: &Self::Error) -> bool;

    /// The device address of a buffer (what the kernels' argument structs hold).
    fn address(&self, buffer: &Self::Buffer) -> u64;

    /// Copy `data` into `dst` at byte `offset`, in the work's order. The range lies in
    /// the buffer (the caller checked it).
    fn write(&self, dst: &mut Self::Buffer, offset: usize, data: &[u8]) -> Result<(), Self::Error>;

    /// Copy `out.len()` bytes of `src` at byte `offset` to the host once the work queued
    /// before has run. The range lies in the buffer (the caller checked it).
    fn read(&self, src: &Self::Buffer, offset: usize, out: &mut [u8]) -> Result<(), Self::Error>;

    /// Copy `bytes` bytes of `buffer` from offset `src` to offset `dst`, in the work's
    /// order.
    ///
    /// # Safety
    /// Both ranges lie inside `buffer` and do not overlap.
    unsafe fn copy_within(
        &self,
        buffer: &mut Self::Buffer,
        src: usize,
        dst: usize,
        bytes: usize,
    ) -> Result<(), Self::Error>;

    /// Build (or take from a cache) the module of every variant, argmax's and top-k's, and look
    /// up their entry points ([`entry_table`]).
    fn load_modules(&self, variants: &[Variant]) -> Result<Modules<Self::Function>, BackendError>;

    /// Let `f` take `bytes` of dynamic shared memory a block (past the default 48 KiB;
    /// the caller checked the device's limit). A device without that limit does nothing.
    fn raise_shared_memory(&self, _f: &Self::Function, _bytes: u32) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Launch `f` over `launch`'s grid with `args`, the bytes of its one argument struct,
    /// in the work's order (recorded instead while a graph is being captured).
    ///
    /// # Safety
    /// `args` is the argument struct of `f`'s kernel, and every device address in it
    /// points into live buffers of this device, as large as what the kernel touches
    /// there, until the launch has run (or, captured, until its graph is dropped).
    unsafe fn launch(
        &self,
        f: &Self::Function,
        launch: &Launch,
        args: &[u8],
    ) -> Result<(), Self::Error>;

    /// Make the device current on the calling thread (a driver's context is per
    /// thread, and a server may step from any thread). Nothing to do by default.
    fn bind(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Wait for the work queued so far.
    fn synchronize(&self) -> Result<(), Self::Error>;

    /// A new timer.
    fn timer(&self) -> Result<Self::Timer, Self::Error>;

    /// Record `timer` at this point of the work.
    fn record(&self, timer: &Self::Timer) -> Result<(), Self::Error>;

    /// Seconds between two recorded timers (the work has been waited for).
    fn elapsed(&self, start: &Self::Timer, end: &Self::Timer) -> Result<f64, Self::Error>;

    /// Record the launches from now on into a graph instead of running them.
    fn begin_capture(&self) -> Result<(), Self::Error>;

    /// Stop recording: the graph of the launches since `begin_capture`.
    fn end_capture(&self) -> Result<Self::Graph, Self::Error>;

    /// Run a captured graph's launches, in the work's order.
    ///
    /// # Safety
    /// Every buffer its launches' arguments point into is alive, where it was when they
    /// were captured.
    unsafe fn replay(&self, graph: &Self::Graph) -> Result<(), Self::Error>;

    /// The device's copy bandwidth and matmul peak (`Backend::ceilings`); None where it
    /// does not measure them.
    fn ceilings(&self) -> Result<Option<Ceilings>, BackendError> {
        Ok(None)
    }
}
