//! The weights buffer: every weight of the plan back to back, each at a 16-byte aligned
//! byte offset (a weight the graph names twice, as tied embeddings, once). Matrices keep
//! their stored blocks (dequantized inside the kernels); vectors (norms, RoPE factors: one
//! row) are decoded to f32 once. The buffer may be larger than one binding: each dispatch
//! binds a window of it (`program::Dispatch::weights_base`).

use std::borrow::Cow;

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_ir::graph::Weight;

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

/// Bytes a weight takes in the weights buffer.
pub fn stored_bytes(w: &Weight, matrix: bool) -> Option<u64> {
    if !matrix {
        (w.rows as u64 * w.cols as u64).checked_mul(4)
    } else {
        w.dtype
            .bytes_for((w.rows as u64).checked_mul(w.cols as u64)?)
    }
}

impl WeightLayout {
    /// The layout of `plan`'s weights in one buffer of at most `max_buffer` bytes.
    pub fn new(plan: &Plan, max_buffer: u64) -> Result<WeightLayout, KernelError> {
        let mut matrix = vec![false; plan.graph.weights.len()];
        for l in &plan.launches {
            for w in l.op.matrices() {
                matrix[w.0 as usize] = true;
            }
        }
        let mut offsets: Vec<u64> = Vec::with_capacity(plan.graph.weights.len());
        let mut total = 0u64;
        for (i, w) in plan.graph.weights.iter().enumerate() {
            let is_matrix = matrix[i];
            // The same weight stored the same way earlier (tied embeddings): one copy.
            let weights = &plan.graph.weights[..i];
            if let Some(j) = (0..i).find(|&j| weights[j] == *w && matrix[j] == is_matrix) {
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

/// The bytes to upload for weight `w` given its stored bytes: matrices as they are
/// (padded to 4 bytes), vectors decoded to f32.
pub fn upload_bytes<'a>(
    w: &Weight,
    matrix: bool,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, KernelError> {
    let bad = |reason: String| KernelError::Weight {
        name: w.name.clone(),
        reason,
    };
    let expected = w.dtype.bytes_for((w.rows * w.cols) as u64);
    if expected != Some(stored.len() as u64) {
        return Err(bad(format!(
            "{} bytes of {} for ({}, {}) values",
            stored.len(),
            w.dtype,
            w.rows,
            w.cols
        )));
    }
    if !matrix {
        let mut v = vec![0.0f32; w.rows * w.cols];
        kiln_ir::quant::dequantize_row(w.dtype, stored, &mut v).map_err(|e| bad(e.to_string()))?;
        return Ok(Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    if stored.len().is_multiple_of(4) {
        return Ok(Cow::Borrowed(stored));
    }
    let mut padded = stored.to_vec();
    padded.resize(stored.len().next_multiple_of(4), 0);
    Ok(Cow::Owned(padded))
}

/// Every weight of `plan` from `source` to its place in the weights buffer: `put` gets
/// each one's byte offset and the bytes to write there ([`upload_bytes`]), in order.
/// What each backend's `load_plan` runs, with its own copy as `put`.
pub fn upload_each(
    plan: &Plan,
    layout: &WeightLayout,
    source: &dyn WeightSource,
    backend: &'static str,
    mut put: impl FnMut(u64, &[u8]) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    for (i, w) in plan.graph.weights.iter().enumerate() {
        let earlier = plan.graph.weights[..i].iter().zip(&layout.matrix);
        if earlier
            .into_iter()
            .any(|(x, &m)| x == w && m == layout.matrix[i])
        {
            continue; // the same weight, uploaded under its first entry
        }
        let stored = source.weight(&w.name).ok_or_else(|| BackendError::Weight {
            backend,
            name: w.name.clone(),
            reason: "not in the model".into(),
        })?;
        let bytes = upload_bytes(w, layout.matrix[i], stored.as_slice())
            .map_err(|e| e.for_backend(backend))?;
        put(layout.offsets[i], &bytes)?;
    }
    Ok(())
}
