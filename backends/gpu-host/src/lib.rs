//! kiln-gpu-host: the host logic of kiln's GPU backends that does not depend on a GPU
//! API, written once (it depends on kiln-ir only). What is specific to the WGSL program
//! (dispatches, params, the step and weights buffers) is in kiln-kernels-wgsl; what a
//! backend keeps is what its API makes it write (buffers, pipelines, recording, timers'
//! queries).
//!
//! - [`cache`]: the on-disk kernel cache and its one set of rules for `KILN_CACHE_DIR`.
//! - [`device`]: which adapter a backend opens.
//! - [`output`]: where the logits lie, the checks of reading them, byte conversions.
//! - [`timers`]: timestamp ticks to per-launch times.
//! - [`kv`]: the byte ranges a partial KV page copy moves.
//! - [`lru`]: recorded work kept per step shape.

pub mod cache;
pub mod device;
pub mod kv;
pub mod lru;
pub mod output;
pub mod timers;

pub use cache::{Cache, CacheStats, DiskCache};
pub use lru::Lru;
pub use output::Output;

use kiln_ir::backend::BackendError;

/// The error of a step, a read or a copy before any plan was loaded.
pub fn no_plan(backend: &'static str) -> BackendError {
    BackendError::BadStep {
        backend,
        reason: "no plan is loaded".into(),
    }
}
