//! The CUDA backend's weights buffer: every weight of the plan back to back in one
//! device allocation, each at a 16-byte aligned 64-bit offset (a weight the graph names
//! twice, as tied embeddings, once). Matrices of the packed types (Q4_0, Q4_1, Q8_0, Q5_0,
//! Q5_1, Q4_K, Q5_K, Q6_K: [`crate::repack::PACKED`]) are stored packed
//! ([`crate::repack`], [`WeightLayout::device_bytes`]) and read so by the matvec, the
//! int8 tensor-core matmul and the embedding; other matrices keep their GGUF blocks, read in
//! place by the dequantizers of `cuda/weights/`; vectors (norms) are decoded to f32 once
//! (kiln-gpu-host's upload bytes). One allocation rather than one per weight: one upload
//! loop, no per-weight allocation granularity, and a kernel's pointers are base + offset.
//! The buffer may exceed 4 GiB; a single matrix may not (kernels address its rows with
//! 32-bit offsets from its start).

use kiln_gpu_host::weights::{matrices, same_as_earlier, stored_bytes};
use kiln_ir::Plan;

use crate::lower::LowerError;
use crate::repack;
use crate::sources::WEIGHT_DTYPES;

/// Alignment of each weight: the 16-byte loads of f16/bf16/f32 rows.
const ALIGN: u64 = 16;
/// Bytes after each matrix that an embedding's last unit or a row's last word load may
/// read (7 f32 values).
const UNIT_SLACK: u64 = 32;

/// The largest matrix (its rows are 32-bit byte offsets from its start, slack included).
pub const MAX_MATRIX_BYTES: u64 = u32::MAX as u64 - UNIT_SLACK;

/// Where each weight of the plan's graph lives in the weights buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightLayout {
    /// Byte offset of each weight (indexed like `plan.graph.weights`).
    pub offsets: Vec<u64>,
    /// Whether each weight is a matrix rather than a vector decoded to f32.
    pub matrix: Vec<bool>,
    /// Bytes of the whole buffer (a multiple of 16, at least 16).
    pub total: u64,
}

impl WeightLayout {
    pub fn new(plan: &Plan) -> Result<WeightLayout, LowerError> {
        let matrix = matrices(plan);
        let mut offsets: Vec<u64> = Vec::with_capacity(plan.graph.weights.len());
        let mut total = 0u64;
        for (i, w) in plan.graph.weights.iter().enumerate() {
            if let Some(j) = same_as_earlier(plan, &matrix, i) {
                offsets.push(offsets[j]);
                continue;
            }
            let bad = |reason: String| LowerError::Weight {
                name: w.name.clone(),
                reason,
            };
            if matrix[i] && !WEIGHT_DTYPES.contains(&w.dtype) {
                return Err(bad(format!("no CUDA kernel reads {} matrices", w.dtype)));
            }
            let bytes = if matrix[i] && repack::is_packed(w.dtype) {
                repack::packed_bytes(w.dtype, w.rows, w.cols).map_err(|e| bad(e.to_string()))?
                    as u64
            } else {
                stored_bytes(w, matrix[i]).ok_or_else(|| bad("size overflows".into()))?
            };
            if matrix[i] && bytes > MAX_MATRIX_BYTES {
                return Err(bad(format!(
                    "{bytes} bytes in one matrix (its rows are 32-bit offsets)"
                )));
            }
            let bytes = bytes + if matrix[i] { UNIT_SLACK } else { 0 };
            offsets.push(total);
            total = total
                .checked_add(bytes.next_multiple_of(ALIGN))
                .ok_or_else(|| bad("size overflows".into()))?;
        }
        Ok(WeightLayout {
            offsets,
            matrix,
            total: total.max(ALIGN),
        })
    }
}

impl WeightLayout {
    /// The bytes the device holds for the upload `bytes` at `offset` (kiln-gpu-host's
    /// upload_each): the packed copy of a packed matrix, else `bytes` as they are.
    pub fn device_bytes<'b>(
        &self,
        plan: &Plan,
        offset: u64,
        bytes: &'b [u8],
    ) -> Result<std::borrow::Cow<'b, [u8]>, LowerError> {
        let packed = plan.graph.weights.iter().enumerate().find(|(i, w)| {
            self.offsets[*i] == offset && self.matrix[*i] && repack::is_packed(w.dtype)
        });
        match packed {
            Some((_, w)) => {
                // upload_each pads every upload to whole words (the WGSL backends bind
                // words): a matrix of an odd byte count arrives with up to 3 bytes more
                // than its GGUF blocks, which the packer must not see.
                let gguf = (w.cols / w.dtype.block_len())
                    .checked_mul(w.dtype.block_bytes())
                    .and_then(|row| row.checked_mul(w.rows));
                let bytes = match gguf {
                    Some(n) if n <= bytes.len() && bytes.len() < n + 4 => &bytes[..n],
                    _ => bytes,
                };
                repack::pack(w.dtype, w.rows, w.cols, bytes)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|e| LowerError::Weight {
                        name: w.name.clone(),
                        reason: e.to_string(),
                    })
            }
            None => Ok(std::borrow::Cow::Borrowed(bytes)),
        }
    }
}
