//! Quantized weights repacked for the decode matvec (`cuda/mv/`): GGUF interleaves each
//! block's scale with its quants (Q4_0's 18-byte blocks are only 2-byte aligned), so a
//! lane could only read them 2 or 4 bytes at a time. The packed copy keeps the same
//! bytes in two planes, each row-major (weight rows in order, blocks of a row in order):
//!
//! ```text
//! quant plane  (rows, blocks, Q)  Q = 16 (Q4_0, Q4_1: 32 nibbles, GGUF order) or 32 (Q8_0)
//! scale plane  (rows, blocks, S)  S = 2 (f16 d) or 4 (Q4_1: half2 d, m)
//! ```
//!
//! Lane `l` of a warp reading block `b0 + l` of a row makes one coalesced 512-byte load
//! of 16-byte pieces. The quant plane starts at 0 and is a multiple of 16 bytes, so
//! the scale plane is 16-byte aligned; the total is rounded up to 16 bytes (at most 14
//! bytes more than the GGUF tensor). A chunk of rows is a pointer offset in each plane.
//! The packed copy replaces the GGUF bytes on the device: [`unpack`] gives them back.

use kiln_ir::DType;

/// A weight that cannot be repacked, or bytes of the wrong length.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepackError {
    #[error("{0} weights are not repacked (Q4_0, Q4_1 and Q8_0 are)")]
    Unsupported(DType),
    #[error("{dtype}: {cols} columns is not a whole number of 32-value blocks")]
    Cols { dtype: DType, cols: usize },
    #[error("{dtype} ({rows}, {cols}): expected {expected} bytes, got {got}")]
    Length {
        dtype: DType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("{dtype} ({rows}, {cols}): the size overflows")]
    Overflow {
        dtype: DType,
        rows: usize,
        cols: usize,
    },
}

/// Where a packed weight's planes lie, in bytes from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLayout {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// Blocks of 32 values per row.
    pub blocks: usize,
    /// Quant bytes of one block (16 or 32): one row is `blocks * quant_bytes`.
    pub quant_bytes: usize,
    /// Scale bytes of one block (2, or 4 for Q4_1).
    pub scale_bytes: usize,
    /// Start of the scale plane (the quant plane starts at 0); a multiple of 16.
    pub scale_offset: usize,
    /// Bytes of the whole packed weight, a multiple of 16.
    pub bytes: usize,
}

impl PackedLayout {
    /// Bytes of one row in the quant plane.
    pub fn quant_row_bytes(&self) -> usize {
        self.blocks * self.quant_bytes
    }

    /// Bytes of one row in the scale plane.
    pub fn scale_row_bytes(&self) -> usize {
        self.blocks * self.scale_bytes
    }
}

/// Whether weights of `dtype` are repacked (the matvec reads them).
pub fn is_packed(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0)
}

/// (scale bytes, quant bytes) of a GGUF block: the scale fields come first in each.
fn split(dtype: DType) -> Result<(usize, usize), RepackError> {
    match dtype {
        DType::Q4_0 => Ok((2, 16)),
        DType::Q4_1 => Ok((4, 16)),
        DType::Q8_0 => Ok((2, 32)),
        _ => Err(RepackError::Unsupported(dtype)),
    }
}

/// The planes of a packed (rows, cols) weight.
pub fn layout(dtype: DType, rows: usize, cols: usize) -> Result<PackedLayout, RepackError> {
    let (scale_bytes, quant_bytes) = split(dtype)?;
    if !cols.is_multiple_of(32) {
        return Err(RepackError::Cols { dtype, cols });
    }
    let blocks = cols / 32;
    let overflow = RepackError::Overflow { dtype, rows, cols };
    let n = rows.checked_mul(blocks).ok_or(overflow.clone())?;
    let quants = n.checked_mul(quant_bytes).ok_or(overflow.clone())?;
    let scales = n.checked_mul(scale_bytes).ok_or(overflow.clone())?;
    let bytes = quants
        .checked_add(scales)
        .and_then(|b| b.checked_next_multiple_of(16))
        .ok_or(overflow)?;
    Ok(PackedLayout {
        dtype,
        rows,
        cols,
        blocks,
        quant_bytes,
        scale_bytes,
        scale_offset: quants,
        bytes,
    })
}

/// Bytes of the packed (rows, cols) weight.
pub fn packed_bytes(dtype: DType, rows: usize, cols: usize) -> Result<usize, RepackError> {
    Ok(layout(dtype, rows, cols)?.bytes)
}

/// The GGUF bytes of a (rows, cols) weight, checked.
fn gguf_bytes(l: &PackedLayout, got: usize) -> Result<usize, RepackError> {
    let expected = l.rows * l.blocks * (l.quant_bytes + l.scale_bytes);
    if got != expected {
        return Err(RepackError::Length {
            dtype: l.dtype,
            rows: l.rows,
            cols: l.cols,
            expected,
            got,
        });
    }
    Ok(expected)
}

/// The packed copy of a (rows, cols) GGUF weight `gguf` (padding bytes zero).
pub fn pack(dtype: DType, rows: usize, cols: usize, gguf: &[u8]) -> Result<Vec<u8>, RepackError> {
    let l = layout(dtype, rows, cols)?;
    gguf_bytes(&l, gguf.len())?;
    let mut out = vec![0u8; l.bytes];
    let (quants, scales) = out.split_at_mut(l.scale_offset);
    let block = l.scale_bytes + l.quant_bytes;
    for ((b, q), s) in gguf
        .chunks_exact(block)
        .zip(quants.chunks_exact_mut(l.quant_bytes))
        .zip(scales.chunks_exact_mut(l.scale_bytes))
    {
        s.copy_from_slice(&b[..l.scale_bytes]);
        q.copy_from_slice(&b[l.scale_bytes..]);
    }
    Ok(out)
}

/// The GGUF bytes of a packed (rows, cols) weight: the inverse of [`pack`].
pub fn unpack(
    dtype: DType,
    rows: usize,
    cols: usize,
    packed: &[u8],
) -> Result<Vec<u8>, RepackError> {
    let l = layout(dtype, rows, cols)?;
    if packed.len() != l.bytes {
        return Err(RepackError::Length {
            dtype,
            rows,
            cols,
            expected: l.bytes,
            got: packed.len(),
        });
    }
    let block = l.scale_bytes + l.quant_bytes;
    let mut out = vec![0u8; rows * l.blocks * block];
    let (quants, rest) = packed.split_at(l.scale_offset);
    for ((b, q), s) in out
        .chunks_exact_mut(block)
        .zip(quants.chunks_exact(l.quant_bytes))
        .zip(rest.chunks_exact(l.scale_bytes))
    {
        b[..l.scale_bytes].copy_from_slice(s);
        b[l.scale_bytes..].copy_from_slice(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [DType; 3] = [DType::Q4_0, DType::Q4_1, DType::Q8_0];

    fn shapes() -> impl Strategy<Value = (usize, usize)> {
        (
            prop::sample::select(vec![1usize, 3, 17, 4097]),
            prop::sample::select(vec![32usize, 96, 4128, 576]),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random bytes: every f16 scale pattern (NaN, infinities, subnormals) included.
        #[test]
        fn unpack_of_pack_is_the_identity(t in 0usize..3, (rows, cols) in shapes(), seed in any::<u64>()) {
            let dtype = TYPES[t];
            let gguf_len = rows * cols / 32 * dtype.block_bytes();
            let mut x = seed | 1;
            let gguf: Vec<u8> = (0..gguf_len).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                (x >> 24) as u8
            }).collect();
            let packed = pack(dtype, rows, cols, &gguf).unwrap();
            let l = layout(dtype, rows, cols).unwrap();
            prop_assert_eq!(packed.len(), l.bytes);
            prop_assert!(l.bytes.is_multiple_of(16) && l.scale_offset.is_multiple_of(16));
            prop_assert!(l.bytes - gguf_len < 16, "packed is the GGUF size, padded to 16");
            prop_assert_eq!(unpack(dtype, rows, cols, &packed).unwrap(), gguf);
        }
    }

    #[test]
    fn planes_hold_the_blocks_fields() {
        // Two Q4_1 rows of one block each: d, m, then 16 quant bytes.
        let gguf: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(7) ^ 0x5A).collect();
        let p = pack(DType::Q4_1, 2, 32, &gguf).unwrap();
        let l = layout(DType::Q4_1, 2, 32).unwrap();
        assert_eq!((l.scale_offset, l.bytes), (32, 48));
        assert_eq!(p[..16], gguf[4..20]);
        assert_eq!(p[16..32], gguf[24..40]);
        assert_eq!(p[32..36], gguf[0..4]);
        assert_eq!(p[36..40], gguf[20..24]);
        assert!(p[40..].iter().all(|&b| b == 0), "padding is zero");
    }

    #[test]
    fn bad_shapes_and_lengths_are_errors() {
        for dtype in TYPES {
            let good = 3 * 2 * dtype.block_bytes();
            assert!(matches!(
                pack(dtype, 3, 64, &vec![1; good - 1]),
                Err(RepackError::Length { .. })
            ));
            assert!(matches!(
                pack(dtype, 3, 48, &vec![1; good]),
                Err(RepackError::Cols { .. })
            ));
            let n = packed_bytes(dtype, 3, 64).unwrap();
            assert!(matches!(
                unpack(dtype, 3, 64, &vec![1; n + 16]),
                Err(RepackError::Length { .. })
            ));
            assert!(matches!(
                layout(dtype, usize::MAX / 2, 64),
                Err(RepackError::Overflow { .. })
            ));
        }
        assert_eq!(
            pack(DType::Q4_K, 1, 256, &[0; 144]),
            Err(RepackError::Unsupported(DType::Q4_K))
        );
    }
}
