//! The weights buffers: every weight of the plan at a 16-byte aligned byte offset of one
//! 64-bit address space (a weight the graph names twice, as tied embeddings, once), cut
//! into buffers of at most the device's largest buffer. Matrices keep their stored
//! blocks (dequantized inside the kernels), Q4_0/Q4_1/Q8_0/Q5_0/Q5_1/Q6_K regrouped per
//! row for 16-byte loads ([`crate::repack`]); vectors (norms, RoPE factors: one row) are
//! decoded to f32 once. A weight lies whole in one buffer, and so do the weights one
//! launch reads together (a fused op's norm and matrices); a buffer may be larger than
//! one binding: each dispatch binds a window of its buffer
//! (`program::Dispatch::weights_buffer`, `weights_base`).
//!
//! The WGSL backends make one buffer per [`WeightBuffer`].

use kiln_ir::backend::{BackendError, WeightSource};
use kiln_ir::graph::Graph;
use kiln_ir::{Op, Plan, WeightId};

use kiln_ir::graph::Weight;

use crate::repack;

use crate::KernelError;
use crate::program::WINDOW_ALIGN;
use crate::sources::WEIGHT_DTYPES;

const ALIGN: u64 = 16;
/// Bytes after each matrix that an embedding's last unit may read (7 f32 values).
const UNIT_SLACK: u64 = 32;

/// One weights buffer: `bytes` of the address space from `start` (both multiples of
/// [`WINDOW_ALIGN`], so a window aligned in one is aligned in the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightBuffer {
    pub start: u64,
    pub bytes: u64,
}

impl WeightBuffer {
    pub fn end(&self) -> u64 {
        self.start + self.bytes
    }
}

/// Where each weight of the plan's graph lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightLayout {
    /// Byte offset of each weight in the address space (indexed like
    /// `plan.graph.weights`).
    pub offsets: Vec<u64>,
    /// Whether each weight is a matrix (read by a matmul or the embedding) rather than
    /// a vector decoded to f32.
    pub matrix: Vec<bool>,
    /// The buffers, in address order, back to back from 0 (at least one).
    pub buffers: Vec<WeightBuffer>,
    /// Bytes of the whole address space (the end of the last buffer).
    pub total: u64,
}

/// The groups of weights that must share a buffer, per launch: every weight the op reads
/// (a fused op's norm and matrices are bound together), except that each matrix of a
/// plain matmul or embedding is a group of its own (their dispatches read one matrix,
/// in chunks of rows when it is larger than a binding).
pub fn launch_groups(op: &Op) -> Vec<Vec<WeightId>> {
    match op {
        Op::Embed { .. } | Op::MatMul { .. } | Op::MatMulAdd { .. } => {
            op.matrices().into_iter().map(|w| vec![w]).collect()
        }
        Op::RmsNorm { weight, .. }
        | Op::HeadRmsNorm { weight, .. }
        | Op::RmsNormAdd { weight, .. }
        | Op::AddBias { bias: weight } => vec![vec![*weight]],
        Op::RmsNormMatMul { norm, .. }
        | Op::RmsNormMatMulSwiGlu { norm, .. }
        | Op::RmsNormMatMulGeGlu { norm, .. } => {
            vec![std::iter::once(*norm).chain(op.matrices()).collect()]
        }
        Op::QkNormRopeKvWrite { q_norm, k_norm, .. } => vec![vec![*q_norm, *k_norm]],
        _ => vec![op.matrices()]
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect(),
    }
}

/// Bytes the weights `group` of `op` take together in a weights buffer (stored, with
/// their slack and alignment); None past u64.
pub fn group_bytes(graph: &Graph, op: &Op, group: &[WeightId]) -> Option<u64> {
    let matrices = op.matrices();
    group.iter().try_fold(0u64, |sum, id| {
        let w = graph.weight(*id)?;
        let matrix = matrices.contains(id);
        let bytes = device_bytes(w, matrix)? + if matrix { UNIT_SLACK } else { 0 };
        sum.checked_add(bytes.checked_next_multiple_of(ALIGN)?)
    })
}

/// Places groups of items (an index and its bytes) back to back in buffers of at most
/// `limit` bytes: a group together in one buffer where it fits one, item by item where it
/// does not, each item 16-byte aligned and whole in one buffer; a new buffer starts where
/// the next group does not fit the current one. Returns each item's offset (indexed like
/// the items, `n` of them; items in no group get 0) and the buffers, or the index of an
/// item larger than a buffer. Sizes alone: what a >4 GiB model's layout is tested with.
pub fn assign(
    groups: &[Vec<(usize, u64)>],
    n: usize,
    limit: u64,
) -> Result<(Vec<u64>, Vec<WeightBuffer>), usize> {
    // Buffers end on window boundaries, so they hold whole windows.
    let limit = (limit / WINDOW_ALIGN * WINDOW_ALIGN).max(WINDOW_ALIGN);
    let mut offsets = vec![0u64; n];
    let mut buffers = Vec::new();
    let (mut start, mut end) = (0u64, 0u64);
    let close = |buffers: &mut Vec<WeightBuffer>, start: &mut u64, end: &mut u64| {
        let bytes = (*end - *start).max(ALIGN).next_multiple_of(WINDOW_ALIGN);
        buffers.push(WeightBuffer {
            start: *start,
            bytes,
        });
        *start += bytes;
        *end = *start;
    };
    for group in groups {
        let aligned = |bytes: u64| bytes.checked_next_multiple_of(ALIGN);
        let sizes: Option<Vec<u64>> = group.iter().map(|&(_, b)| aligned(b)).collect();
        let Some(sizes) = sizes else {
            return Err(group[0].0);
        };
        let together = sizes.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        // One unit: the whole group, else each item.
        let units: Vec<(usize, usize)> = match together {
            Some(b) if b <= limit => vec![(0, group.len())],
            _ => (0..group.len()).map(|i| (i, i + 1)).collect(),
        };
        for (a, b) in units {
            let bytes: u64 = sizes[a..b].iter().sum();
            if bytes > limit {
                return Err(group[a].0);
            }
            if end - start + bytes > limit {
                close(&mut buffers, &mut start, &mut end);
            }
            for (&(i, _), &size) in group[a..b].iter().zip(&sizes[a..b]) {
                offsets[i] = end;
                end += size;
            }
        }
    }
    close(&mut buffers, &mut start, &mut end);
    Ok((offsets, buffers))
}

impl WeightLayout {
    /// The layout of `plan`'s weights in buffers of at most `max_buffer` bytes.
    pub fn new(plan: &Plan, max_buffer: u64) -> Result<WeightLayout, KernelError> {
        let weights = &plan.graph.weights;
        let matrix = kiln_gpu_host::weights::matrices(plan);
        // Each weight's first entry (the same weight stored the same way earlier, as tied
        // embeddings: one copy), and its bytes.
        let mut first = Vec::with_capacity(weights.len());
        let mut bytes = vec![0u64; weights.len()];
        for (i, w) in weights.iter().enumerate() {
            let j = kiln_gpu_host::weights::same_as_earlier(plan, &matrix, i).unwrap_or(i);
            first.push(j);
            if j < i {
                continue;
            }
            let bad = |reason: String| KernelError::Weight {
                name: w.name.clone(),
                reason,
            };
            let is_matrix = matrix[i];
            if is_matrix && !WEIGHT_DTYPES.contains(&w.dtype) {
                return Err(bad(format!("no WGSL kernel reads {} matrices", w.dtype)));
            }
            if is_matrix && w.cols % 8 != 0 && w.dtype.is_quantized() {
                return Err(bad(format!(
                    "{} columns of a quantized type (the kernels take multiples of 8)",
                    w.cols
                )));
            }
            let stored = device_bytes(w, is_matrix).ok_or_else(|| bad("size overflows".into()))?;
            // A unit of 8 plain floats read past the end of a row that ends inside one.
            bytes[i] = stored + if is_matrix { UNIT_SLACK } else { 0 };
        }
        // The weights that share a buffer: the launches' groups, joined where they share
        // a weight (tied embeddings: the table is the embedding's and the fused LM head's,
        // with the final norm). Placed in launch order (a layer's weights near each
        // other), each group where its first weight comes; then the weights no kernel
        // reads (RoPE factors: the step buffer's tables hold them).
        let mut root: Vec<usize> = (0..weights.len()).collect();
        fn find(root: &mut [usize], mut i: usize) -> usize {
            while root[i] != i {
                root[i] = root[root[i]];
                i = root[i];
            }
            i
        }
        let mut order = Vec::with_capacity(weights.len());
        for l in &plan.launches {
            for g in launch_groups(&l.op) {
                let ids: Vec<usize> = g.iter().map(|w| first[w.0 as usize]).collect();
                for pair in ids.windows(2) {
                    let (a, b) = (find(&mut root, pair[0]), find(&mut root, pair[1]));
                    root[b] = a;
                }
                order.extend(ids);
            }
        }
        order.extend((0..weights.len()).filter(|&i| first[i] == i));
        let mut group_of = vec![usize::MAX; weights.len()];
        let mut groups: Vec<Vec<(usize, u64)>> = Vec::new();
        let mut placed = vec![false; weights.len()];
        for i in order {
            if std::mem::replace(&mut placed[i], true) {
                continue;
            }
            let r = find(&mut root, i);
            if group_of[r] == usize::MAX {
                group_of[r] = groups.len();
                groups.push(Vec::new());
            }
            groups[group_of[r]].push((i, bytes[i]));
        }
        let (mut offsets, buffers) =
            assign(&groups, weights.len(), max_buffer).map_err(|i| KernelError::Weight {
                name: weights[i].name.clone(),
                reason: format!(
                    "{} bytes, more than a weights buffer holds on this device ({max_buffer})",
                    bytes[i]
                ),
            })?;
        for i in 0..weights.len() {
            offsets[i] = offsets[first[i]];
        }
        let total = buffers.last().map_or(0, WeightBuffer::end);
        Ok(WeightLayout {
            offsets,
            matrix,
            buffers,
            total,
        })
    }

    /// The buffer that holds byte `offset` of the address space.
    pub fn buffer_of(&self, offset: u64) -> usize {
        self.buffers
            .partition_point(|b| b.end() <= offset)
            .min(self.buffers.len() - 1)
    }
}

/// Bytes of a weight in a weights buffer: a matrix's rows as the device stores them
/// ([`repack::row_bytes`]), a vector as f32; None past u64.
pub fn device_bytes(w: &Weight, matrix: bool) -> Option<u64> {
    if matrix {
        (w.rows as u64).checked_mul(repack::row_bytes(w.dtype, w.cols as u64)?)
    } else {
        kiln_gpu_host::weights::stored_bytes(w, false)
    }
}

/// Every weight of `plan` from `source` to its place in the weights buffers: `put` gets
/// each one's buffer (an index into `layout.buffers`), its byte offset in that buffer and
/// the bytes to write there (kiln-gpu-host's `upload_bytes`, a packed type's matrix
/// [`repack::pack`]ed), in order. What each backend's `load_plan` runs, with its own copy
/// as `put`.
pub fn upload_each(
    plan: &Plan,
    layout: &WeightLayout,
    source: &dyn WeightSource,
    backend: &'static str,
    mut put: impl FnMut(usize, u64, &[u8]) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let (offsets, matrix) = (&layout.offsets, &layout.matrix);
    let weights = &plan.graph.weights;
    kiln_gpu_host::weights::upload_each(plan, offsets, matrix, source, backend, |at, bytes| {
        let b = layout.buffer_of(at);
        // The weight uploaded at `at` (its first entry: a weight named twice is one).
        let i = (0..weights.len()).find(|&i| offsets[i] == at && matrix[i]);
        match i.map(|i| &weights[i]) {
            Some(w) if repack::is_packed(w.dtype) => {
                // The stored blocks, without the padding to whole words.
                let stored = w.dtype.bytes_for((w.rows * w.cols) as u64).unwrap_or(0);
                let stored = &bytes[..(stored as usize).min(bytes.len())];
                let packed = repack::pack(w.dtype, w.rows, w.cols, stored).map_err(|e| {
                    BackendError::Weight {
                        backend,
                        name: w.name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                put(b, at - layout.buffers[b].start, &packed)
            }
            _ => put(b, at - layout.buffers[b].start, bytes),
        }
    })
}

#[cfg(test)]
mod tests;
