//! The Backend trait: small, object-safe, split by concern (device, execution, sampling).
//! Optional abilities default to `BackendError::Unsupported`. See ARCHITECTURE.md,
//! "Adding a backend", and `kiln-backend-null`, the template to copy.

use std::ops::Range;
use std::sync::Arc;

use crate::graph::Graph;
use crate::kv_layout::KvLayout;
use crate::op::Op;
use crate::plan::Plan;
pub use crate::step::{
    Candidate, NO_PAGE, NON_FINITE_ROW, Step, StepLimits, StepShape, argmax, top_k,
};

/// What a backend says about its device: its name for users, and the limits that size
/// what it runs (a plan too large for a binding is refused at load; the number of
/// attention splits follows the compute units). Nothing hard-codes a warp size: a
/// backend reads it here. `Default` is a device that reports nothing (the null backend).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceProperties {
    pub name: String,
    /// Cores (CPU) or multiprocessors / compute units (GPU).
    pub compute_units: usize,
    /// Threads that execute in lockstep (warp, wavefront, subgroup) as the kernels run
    /// them; None on a CPU, or where the kernels do not use subgroup operations.
    pub subgroup_size: Option<usize>,
    /// The smallest and largest subgroup size the device can run (equal where it is
    /// fixed, as a warp); None when unknown.
    pub subgroup_sizes: Option<(usize, usize)>,
    /// Device memory, when the backend knows it.
    pub memory_bytes: Option<u64>,
    /// The largest single buffer the device allocates; None: no limit but memory.
    pub max_buffer_bytes: Option<u64>,
    /// The largest range of a buffer one kernel binding (or 32-bit index) may reach;
    /// None: no limit but memory.
    pub max_binding_bytes: Option<u64>,
    /// Shared memory (workgroup memory, CUDA shared memory) one workgroup or block may
    /// use at the most; None on a CPU.
    pub shared_memory_bytes: Option<usize>,
    /// Native f16 arithmetic.
    pub has_f16: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("no {backend} device: {reason}")]
    NoDevice {
        backend: &'static str,
        reason: String,
    },
    #[error("{backend} does not support {what}")]
    Unsupported { backend: &'static str, what: String },
    #[error("{backend}: out of device memory allocating {bytes} bytes")]
    OutOfMemory { backend: &'static str, bytes: u64 },
    #[error("{backend}: bad step: {reason}")]
    BadStep {
        backend: &'static str,
        reason: String,
    },
    #[error("{backend}: weight {name:?}: {reason}")]
    Weight {
        backend: &'static str,
        name: String,
        reason: String,
    },
    #[error("{backend}: {message}")]
    Driver {
        backend: &'static str,
        message: String,
    },
}

/// Bytes shared with their owner (the model's memory map), so that a host backend can
/// use weights in place and a device backend can upload them without a copy.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// `owner[range]`, or None when the range is outside the owner's bytes.
    pub fn new(
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        range: Range<usize>,
    ) -> Option<SharedBytes> {
        let len = (*owner).as_ref().len();
        (range.start <= range.end && range.end <= len).then_some(SharedBytes { owner, range })
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({:?})", self.range)
    }
}

/// Where a backend gets weights from, by GGUF tensor name.
pub trait WeightSource {
    fn weight(&self, name: &str) -> Option<SharedBytes>;
}

/// Time of one launch of the last step, for per-kernel reports.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTime {
    pub launch: usize,
    pub seconds: f64,
}

/// What a device does at best, measured on it: what `kiln bench --kernels` reports each
/// kernel against.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceilings {
    /// Bytes a copy within the device's memory moves per second, read and write counted.
    pub copy_bytes_per_s: f64,
    /// Multiply-add throughput of the device's fastest matmul arithmetic (FLOP/s, a
    /// multiply-add counted as two).
    pub matmul_flop_per_s: f64,
    /// What `matmul_flop_per_s` was measured with (`f32 FMA`, `mma.sync f16`).
    pub matmul_what: String,
}

/// What a backend does: describe its device, take a plan, run steps, hand back what a
/// step computed. Seven required methods; the rest have defaults that work everywhere.
///
/// There are no buffer methods (alloc, upload, download): a backend owns its memory
/// (arena, KV pages, weights) from `load_plan` on, and nothing outside it addresses
/// device memory, so they would exist for tests alone. Sampling enters where the engine
/// needs it: [`Backend::read_argmax`], the greedy token of each output row, which a
/// device may compute without sending the logits back.
pub trait Backend {
    // ---- device ----
    fn name(&self) -> &'static str;
    fn properties(&self) -> &DeviceProperties;
    /// Whether the backend has a kernel for `op` with the weights it names in `graph`.
    fn supports(&self, op: &Op, graph: &Graph) -> bool;

    // ---- execution ----
    /// Take a plan: load (or map) its weights, build kernels, allocate the arena and a
    /// KV pool of `kv_page_count` pages of `kv` geometry.
    fn load_plan(
        &mut self,
        plan: &Plan,
        weights: &dyn WeightSource,
        kv: &KvLayout,
        kv_page_count: usize,
    ) -> Result<(), BackendError>;
    /// Run the loaded plan on one step, checked first with [`StepLimits::check`].
    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError>;
    /// Logits of the last step, (outputs, vocab).
    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError>;
    /// Copy `n_tokens` leading token slots of KV page `src` into `dst` (copy-on-write).
    fn copy_kv_page(&mut self, src: u32, dst: u32, n_tokens: usize) -> Result<(), BackendError>;
    /// Wait for queued work.
    fn synchronize(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    // ---- sampling ----
    /// The greedy token of each output row of the last step (`out`: one per row, the
    /// logits being (rows, `vocab`)): the largest logit, the lowest id on ties, and
    /// [`NON_FINITE_ROW`] for a row holding a NaN or +∞ ([`argmax`]). By default the logits are read back and chosen on the host; a
    /// backend with a device argmax overrides it, so that greedy decoding reads back one
    /// id per row instead of a row of logits.
    fn read_argmax(&mut self, vocab: usize, out: &mut [u32]) -> Result<(), BackendError> {
        host_argmax(self, vocab, out)
    }

    /// The `k` most likely tokens of each output row of the last step (`out`: (rows, k),
    /// the logits being (rows, `vocab`)), ordered as [`top_k`] orders them: what a
    /// sampler with a top-k filter draws from. By default the logits are read back and
    /// chosen on the host ([`host_top_k`]); a backend with a device top-k overrides it, so
    /// that sampling reads back k candidates a row instead of a row of logits.
    fn read_top_k(
        &mut self,
        vocab: usize,
        k: usize,
        out: &mut [Candidate],
    ) -> Result<(), BackendError> {
        host_top_k(self, vocab, k, out)
    }

    // ---- optional ----
    /// Host or device bytes `load_plan` will allocate for `plan` besides the arena and the
    /// KV pages (decoded vectors, repacked or uploaded weights), so that a memory budget can
    /// be checked before anything is allocated. Weights used in place count nothing.
    fn load_bytes(&self, plan: &Plan) -> usize {
        let _ = plan;
        0
    }

    /// The device's ceilings, measured now (a second or so of work); None where the
    /// backend does not measure them (a report then gives times without percentages,
    /// never the host's figures for a device).
    fn ceilings(&mut self) -> Result<Option<Ceilings>, BackendError> {
        Ok(None)
    }

    /// Per-launch times of the last step.
    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        Err(BackendError::Unsupported {
            backend: self.name(),
            what: "per-launch timers".into(),
        })
    }
}

/// [`Backend::read_argmax`] on the host: the logits read back, each row's [`argmax`]
/// taken. What a device argmax falls back to where it has none.
pub fn host_argmax<B: Backend + ?Sized>(
    backend: &mut B,
    vocab: usize,
    out: &mut [u32],
) -> Result<(), BackendError> {
    let rows = out.len();
    if vocab == 0 && rows > 0 {
        return Err(BackendError::BadStep {
            backend: backend.name(),
            reason: "argmax over rows of 0 logits".into(),
        });
    }
    let mut logits = vec![0.0f32; rows * vocab]; // (rows, vocab)
    backend.read_logits(&mut logits)?;
    for (id, row) in out.iter_mut().zip(logits.chunks_exact(vocab.max(1))) {
        *id = argmax(row);
    }
    Ok(())
}

/// [`Backend::read_top_k`] on the host: the logits read back, each row's top k chosen by
/// [`top_k`]. What a device top-k falls back to for a k past its kernel's.
pub fn host_top_k<B: Backend + ?Sized>(
    backend: &mut B,
    vocab: usize,
    k: usize,
    out: &mut [Candidate],
) -> Result<(), BackendError> {
    if k == 0 || k > vocab || !out.len().is_multiple_of(k) {
        return Err(BackendError::BadStep {
            backend: backend.name(),
            reason: format!(
                "top-{k} of rows of {vocab} logits into {} candidates",
                out.len()
            ),
        });
    }
    let rows = out.len() / k;
    let mut logits = vec![0.0f32; rows * vocab]; // (rows, vocab)
    backend.read_logits(&mut logits)?;
    for (cands, row) in out.chunks_exact_mut(k).zip(logits.chunks_exact(vocab)) {
        top_k(row, cands);
    }
    Ok(())
}
