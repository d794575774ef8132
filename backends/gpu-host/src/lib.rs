//! kiln-gpu-host: the host logic of kiln's GPU backends that does not depend on a GPU
//! API, written once (it depends on kiln-ir only). What is specific to the WGSL program
//! (dispatches, params, the weights layout) is in kiln-kernels-wgsl, what is specific to
//! the CUDA kernels in kiln-kernels-cuda; what a
//! backend keeps is what its API makes it write (buffers, pipelines, recording, timers'
//! queries).
//!
//! - [`cache`]: the on-disk kernel cache and its one set of rules for `KILN_CACHE_DIR`.
//! - [`device`]: which adapter a backend opens.
//! - [`output`]: where the logits lie, the checks of reading them, byte conversions.
//! - [`timers`]: timestamp ticks to per-launch times.
//! - [`kv`]: the byte ranges a partial KV page copy moves.
//! - [`lru`]: recorded work kept per step shape.
//! - [`step`]: the step buffer every GPU kernel set reads (ids, positions, block tables,
//!   RoPE cos/sin), and the RoPE tables of a plan.
//! - [`upload`]: the upload plan (a staging area filled piece by piece, flushed when
//!   full) and the [`upload::Uploader`] that drives a backend's staged copies.
//! - Here: the errors every GPU backend builds alike, and [`check_range`].
//! - [`weights`]: the bytes of each weight as a GPU weights buffer holds them.

pub mod cache;
pub mod device;
pub mod kv;
pub mod lru;
pub mod output;
pub mod step;
pub mod timers;
pub mod upload;
pub mod weights;

pub use cache::{Cache, CacheStats, DiskCache};
pub use lru::Lru;
pub use output::Output;

use kiln_ir::backend::BackendError;

/// Why host data for the kernels (a step buffer, a weight's bytes) cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("bad step: {0}")]
    BadStep(String),
    #[error("weight {name:?}: {reason}")]
    Weight { name: String, reason: String },
}

impl HostError {
    /// The same error as a backend's.
    pub fn for_backend(self, backend: &'static str) -> BackendError {
        match self {
            HostError::BadStep(reason) => BackendError::BadStep { backend, reason },
            HostError::Weight { name, reason } => BackendError::Weight {
                backend,
                name,
                reason,
            },
        }
    }
}

/// The error of a step, a read or a copy before any plan was loaded.
pub fn no_plan(backend: &'static str) -> BackendError {
    BackendError::BadStep {
        backend,
        reason: "no plan is loaded".into(),
    }
}

/// A driver's error as a backend's: what it said, or what went wrong in talking to it.
pub fn driver(backend: &'static str, message: impl Into<String>) -> BackendError {
    BackendError::Driver {
        backend,
        message: message.into(),
    }
}

/// The error of a backend that finds no device it can open (no driver, none usable).
pub fn no_device(backend: &'static str, reason: impl Into<String>) -> BackendError {
    BackendError::NoDevice {
        backend,
        reason: reason.into(),
    }
}

/// The error of an allocation of `bytes` that the device cannot hold.
pub fn out_of_memory(backend: &'static str, bytes: u64) -> BackendError {
    BackendError::OutOfMemory { backend, bytes }
}

/// That `len` bytes at `offset` lie within a buffer of `size` bytes (`what`: which
/// buffer, in the error), before a backend reads, writes or copies them.
pub fn check_range(
    backend: &'static str,
    what: &str,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<(), BackendError> {
    if offset.checked_add(len).is_some_and(|end| end <= size) {
        return Ok(());
    }
    Err(BackendError::BadStep {
        backend,
        reason: format!("{len} bytes at {offset} of a {size}-byte {what}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_past_a_buffer_are_refused() {
        assert!(super::check_range("t", "buffer", 16, 48, 64).is_ok());
        assert!(super::check_range("t", "buffer", 64, 0, 64).is_ok());
        let err = super::check_range("t", "host buffer", 17, 48, 64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: bad step: 48 bytes at 17 of a 64-byte host buffer"
        );
        assert!(super::check_range("t", "buffer", u64::MAX, 1, 64).is_err());
    }
}
