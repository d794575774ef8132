//! The Backend trait: small, object-safe, split by concern (device, buffers, execution).
//! Optional abilities default to `BackendError::Unsupported`. See ARCHITECTURE.md,
//! "Adding a backend", and `kiln-backend-null`, the template to copy.

use std::ops::Range;
use std::sync::Arc;

use crate::graph::Graph;
use crate::kv_layout::KvLayout;
use crate::op::Op;
use crate::plan::Plan;

/// What a backend says about its device. Kernels size themselves from this; nothing
/// hard-codes a warp size.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceProperties {
    pub name: String,
    /// Cores (CPU) or multiprocessors / compute units (GPU).
    pub compute_units: usize,
    /// Threads that execute in lockstep (warp, wavefront, subgroup); None on a CPU.
    pub subgroup_size: Option<usize>,
    /// Device memory, when the backend knows it.
    pub memory_bytes: Option<u64>,
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

/// A block-table entry for a page the sequence no longer holds: a sliding-window group's
/// page behind every query's window. Kernels never read it.
pub const NO_PAGE: u32 = u32::MAX;

/// Everything one step needs beyond the plan: the batch's tokens, where each belongs,
/// and the KV pages of each sequence. Several sequences of different lengths may share
/// a step (batched decode, chunked prefill).
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// (tokens) ids of the step's tokens, sequences one after another.
    pub token_ids: &'a [u32],
    /// (tokens) position of each token in its sequence.
    pub positions: &'a [u32],
    /// (tokens) index into `block_tables` of each token's sequence.
    pub token_seq: &'a [u32],
    /// (groups × seqs) pages of each sequence in each KV group, group-major: the table of
    /// sequence s in group g is `block_tables[g * n_seqs + s]`, with `n_groups` from the
    /// [`KvLayout`] (1 for most models, where this is one table per sequence). Entry i
    /// holds positions i·kv_page_size.. and every position up to this step's last is
    /// covered; a window group's entries behind every query's window may be [`NO_PAGE`].
    pub block_tables: &'a [&'a [u32]],
    /// (outputs) indices of the tokens whose logits are wanted.
    pub output_rows: &'a [u32],
}

/// Handle of a device buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(pub u32);

/// Time of one launch of the last step, for per-kernel reports.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTime {
    pub launch: usize,
    pub seconds: f64,
}

pub trait Backend {
    // ---- device ----
    fn name(&self) -> &'static str;
    fn properties(&self) -> &DeviceProperties;
    /// Whether the backend has a kernel for `op` with the weights it names in `graph`.
    fn supports(&self, op: &Op, graph: &Graph) -> bool;

    // ---- buffers ----
    fn alloc(&mut self, bytes: usize) -> Result<BufferId, BackendError>;
    fn upload(&mut self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError>;
    fn download(
        &mut self,
        buffer: BufferId,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError>;
    fn free(&mut self, buffer: BufferId);

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
    /// Run the loaded plan on one step.
    fn execute(&mut self, step: &Step<'_>) -> Result<(), BackendError>;
    /// Logits of the last step, (outputs, vocab).
    fn read_logits(&mut self, out: &mut [f32]) -> Result<(), BackendError>;
    /// Copy `n_tokens` leading token slots of KV page `src` into `dst` (copy-on-write).
    fn copy_kv_page(&mut self, src: u32, dst: u32, n_tokens: usize) -> Result<(), BackendError>;
    /// Wait for queued work.
    fn synchronize(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    // ---- optional ----
    /// Host or device bytes `load_plan` will allocate for `plan` besides the arena and the
    /// KV pages (decoded vectors, repacked or uploaded weights), so that a memory budget can
    /// be checked before anything is allocated. Weights used in place count nothing.
    fn load_bytes(&self, plan: &Plan) -> usize {
        let _ = plan;
        0
    }

    /// Per-launch times of the last step.
    fn launch_times(&mut self) -> Result<Vec<LaunchTime>, BackendError> {
        Err(BackendError::Unsupported {
            backend: self.name(),
            what: "per-launch timers".into(),
        })
    }
}
