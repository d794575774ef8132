//! The weights buffer: every weight of the plan back to back, each at a 16-byte aligned
//! byte offset (a weight the graph names twice, as tied embeddings, once). Matrices keep
//! their stored blocks (dequantized inside the kernels); vectors (norms, RoPE factors: one
//! row) are decoded to f32 once. The buffer may be larger than one binding: each dispatch
//! binds a window of it (`program::Dispatch::weights_base`).

use std::borrow::Cow;

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_ir::graph::Weight;

pub use kiln_gpu_host::weights::stored_bytes;

use crate::KernelError;
use crate::sources::WEIGHT_DTYPES;

const ALIGN: u64 = 16;
/// Bytes after each matrix that an embedding's last unit may read (7 f32 values).
const UNIT_SLACK: u64 = 32;

/// Where each weight of the plan's graph lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightLayout {
    /// Byte offset of each weight (indexed like `plan.graph.weights`).
    pub offsets: Vec<u64>,
    /// Whether each weight is a matrix (read by a matmul or the embedding) rather than
    /// a vector decoded to f32.
    pub matrix: Vec<bool>,
    /// Bytes of the whole buffer (a multiple of 16, at least 16).
    pub total: u64,
}

impl WeightLayout {
    /// The layout of `plan`'s weights in one buffer of at most `max_buffer` bytes.
    pub fn new(plan: &Plan, max_buffer: u64) -> Result<WeightLayout, KernelError> {
        let matrix = kiln_gpu_host::weights::matrices(plan);
        let mut offsets: Vec<u64> = Vec::with_capacity(plan.graph.weights.len());
        let mut total = 0u64;
        for (i, w) in plan.graph.weights.iter().enumerate() {
            let is_matrix = matrix[i];
            // The same weight stored the same way earlier (tied embeddings): one copy.
            if let Some(j) = kiln_gpu_host::weights::same_as_earlier(plan, &matrix, i) {
                offsets.push(offsets[j]);
                continue;
            }
            let bad = |reason: String| KernelError::Weight {
                name: w.name.clone(),
                reason,
            };
            if is_matrix && !WEIGHT_DTYPES.contains(&w.dtype) {
                return Err(bad(format!("no WGSL kernel reads {} matrices", w.dtype)));
            }
            if is_matrix && w.cols % 8 != 0 && w.dtype.is_quantized() {
                return Err(bad(format!(
                    "{} columns of a quantized type (the kernels take multiples of 8)",
                    w.cols
                )));
            }
            let bytes = stored_bytes(w, is_matrix).ok_or_else(|| bad("size overflows".into()))?;
            // A unit of 8 plain floats read past the end of a row that ends inside one.
            let bytes = bytes + if is_matrix { UNIT_SLACK } else { 0 };
            offsets.push(total);
            total = total
                .checked_add(bytes.next_multiple_of(ALIGN))
                .ok_or_else(|| bad("size overflows".into()))?;
        }
        // Whole windows (program::WINDOW_ALIGN) end where the buffer does.
        let total = total
            .max(ALIGN)
            .next_multiple_of(crate::program::WINDOW_ALIGN);
        if total > max_buffer.min(u64::from(u32::MAX)) {
            return Err(KernelError::Unsupported(format!(
                "{total} bytes of weights in one buffer (the device allows at most {max_buffer})"
            )));
        }
        Ok(WeightLayout {
            offsets,
            matrix,
            total,
        })
    }
}

/// The bytes to upload for weight `w` given its stored bytes (kiln-gpu-host's).
pub fn upload_bytes<'a>(
    w: &Weight,
    matrix: bool,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, KernelError> {
    Ok(kiln_gpu_host::weights::upload_bytes(w, matrix, stored)?)
}

/// Every weight of `plan` from `source` to its place in the weights buffer: `put` gets
/// each one's byte offset and the bytes to write there ([`upload_bytes`]), in order.
/// What each backend's `load_plan` runs, with its own copy as `put`.
pub fn upload_each(
    plan: &Plan,
    layout: &WeightLayout,
    source: &dyn WeightSource,
    backend: &'static str,
    put: impl FnMut(u64, &[u8]) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    kiln_gpu_host::weights::upload_each(plan, &layout.offsets, &layout.matrix, source, backend, put)
}
