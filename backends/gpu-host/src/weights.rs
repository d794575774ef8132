//! The bytes of each weight as a GPU weights buffer holds them: matrices keep their stored
//! blocks (dequantized inside the kernels), vectors (norms, RoPE factors: one row) are
//! decoded to f32 once. Where each weight lies is the kernel set's layout (kernels-wgsl's
//! 32-bit windows, kernels-cuda's 64-bit offsets); this is what both upload.

use std::borrow::Cow;

use kiln_ir::Plan;
use kiln_ir::backend::{BackendError, WeightSource};
use kiln_ir::graph::Weight;

use crate::HostError;

/// Which weights of `plan`'s graph are matrices (read by a matmul or the embedding)
/// rather than vectors decoded to f32 (indexed like `plan.graph.weights`).
pub fn matrices(plan: &Plan) -> Vec<bool> {
    let mut matrix = vec![false; plan.graph.weights.len()];
    for l in &plan.launches {
        for w in l.op.matrices() {
            matrix[w.0 as usize] = true;
        }
    }
    matrix
}

/// The index of an earlier weight stored the same way as weight `i` (tied embeddings),
/// whose copy weight `i` shares.
pub fn same_as_earlier(plan: &Plan, matrix: &[bool], i: usize) -> Option<usize> {
    let w = &plan.graph.weights[i];
    (0..i).find(|&j| plan.graph.weights[j] == *w && matrix[j] == matrix[i])
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

/// The bytes to upload for weight `w` given its stored bytes: matrices as they are
/// (padded to 4 bytes), vectors decoded to f32.
pub fn upload_bytes<'a>(
    w: &Weight,
    matrix: bool,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, HostError> {
    let bad = |reason: String| HostError::Weight {
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

/// Every weight of `plan` from `source` to its place in the weights buffer (`offsets`,
/// `matrix`: indexed like `plan.graph.weights`): `put` gets each one's byte offset and
/// the bytes to write there ([`upload_bytes`]), in order; a weight stored the same way
/// earlier is not uploaded twice.
pub fn upload_each(
    plan: &Plan,
    offsets: &[u64],
    matrix: &[bool],
    source: &dyn WeightSource,
    backend: &'static str,
    mut put: impl FnMut(u64, &[u8]) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    for (i, w) in plan.graph.weights.iter().enumerate() {
        if same_as_earlier(plan, matrix, i).is_some() {
            continue; // the same weight, uploaded under its first entry
        }
        let stored = source.weight(&w.name).ok_or_else(|| BackendError::Weight {
            backend,
            name: w.name.clone(),
            reason: "not in the model".into(),
        })?;
        let bytes =
            upload_bytes(w, matrix[i], stored.as_slice()).map_err(|e| e.for_backend(backend))?;
        put(offsets[i], &bytes)?;
    }
    Ok(())
}
