//! Quantized matrices repacked at load for 16-byte loads: GGUF interleaves each 32-value
//! block's scale with its quants (Q4_0's 18-byte blocks are only 2-byte aligned), so a
//! kernel could read them only a word at a time with shifts. The packed rows keep the
//! same bytes, regrouped per row in groups of 8 blocks, the scales first:
//!
//! ```text
//! group  = [scales of its blocks, padded to S][quants of block 0][quants of block 1]...
//! Q4_0: S = 16 (8 × f16 d),       quants 16 bytes (32 nibbles, GGUF order): 144 bytes
//! Q4_1: S = 32 (8 × f16 d, f16 m), quants 16 bytes:                         160 bytes
//! Q8_0: S = 16 (8 × f16 d),       quants 32 bytes (32 × i8):                272 bytes
//! ```
//!
//! A row's last group may hold fewer than 8 blocks (its scale area keeps its size), so
//! where block `b` lies depends on `b` alone, never on the row's length: a kernel finds
//! it from the row's start. Every group is a multiple of 16 bytes, so every row and every
//! block's quants are 16-byte aligned; a row grows by at most S − 2 bytes of padding
//! (none when its blocks are a multiple of 8). The packed copy replaces the GGUF bytes
//! on the device (the weights buffer holds only it); [`unpack`] gives them back.

use kiln_ir::DType;

/// Blocks of a group.
pub const GROUP_BLOCKS: usize = 8;
/// Values of a block.
pub const BLOCK: usize = 32;

/// The packed shape of a type: (bytes of its scale fields in a GGUF block, bytes of the
/// scale area of a group, bytes of a block's quants).
fn shape(dtype: DType) -> Option<(usize, usize, usize)> {
    match dtype {
        DType::Q4_0 => Some((2, 16, 16)),
        DType::Q4_1 => Some((4, 32, 16)),
        DType::Q8_0 => Some((2, 16, 32)),
        _ => None,
    }
}

/// Whether matrices of `dtype` are stored packed on the device.
pub fn is_packed(dtype: DType) -> bool {
    shape(dtype).is_some()
}

/// Bytes of one row of `cols` values of a matrix of `dtype` as the device stores it:
/// packed ([`packed_row_bytes`]) or as GGUF stores it; None past u64.
pub fn row_bytes(dtype: DType, cols: u64) -> Option<u64> {
    match shape(dtype) {
        Some(_) => packed_row_bytes(dtype, cols),
        None => dtype.bytes_for(cols),
    }
}

/// Bytes of a packed row of `cols` values (None for a type that is not packed, or
/// columns that are not whole blocks).
pub fn packed_row_bytes(dtype: DType, cols: u64) -> Option<u64> {
    let (_, area, quants) = shape(dtype)?;
    if !cols.is_multiple_of(BLOCK as u64) {
        return None;
    }
    let blocks = cols / BLOCK as u64;
    let (full, tail) = (blocks / GROUP_BLOCKS as u64, blocks % GROUP_BLOCKS as u64);
    let group = (area + GROUP_BLOCKS * quants) as u64;
    let last = if tail > 0 {
        area as u64 + tail * quants as u64
    } else {
        0
    };
    full.checked_mul(group)?.checked_add(last)
}

/// A matrix that cannot be packed, or bytes of the wrong length.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepackError {
    #[error("{0} matrices are not packed (Q4_0, Q4_1 and Q8_0 are)")]
    Unsupported(DType),
    #[error("{dtype} ({rows}, {cols}): expected {expected} bytes, got {got}")]
    Length {
        dtype: DType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
}

/// Sizes of a matrix in both layouts: (GGUF row bytes, packed row bytes, scale field
/// bytes, scale area bytes, quant bytes), checked against `got` bytes of `layout`.
fn sizes(
    dtype: DType,
    rows: usize,
    cols: usize,
    got: usize,
    packed_in: bool,
) -> Result<(usize, usize, usize, usize, usize), RepackError> {
    let (scale, area, quants) = shape(dtype).ok_or(RepackError::Unsupported(dtype))?;
    let gguf_row = dtype.bytes_for(cols as u64).map(|b| b as usize);
    let packed_row = packed_row_bytes(dtype, cols as u64).map(|b| b as usize);
    let expected = match (gguf_row, packed_row) {
        (Some(g), Some(p)) => (if packed_in { p } else { g }).checked_mul(rows),
        _ => None,
    };
    match (expected, gguf_row, packed_row) {
        (Some(e), Some(g), Some(p)) if e == got => Ok((g, p, scale, area, quants)),
        _ => Err(RepackError::Length {
            dtype,
            rows,
            cols,
            expected: expected.unwrap_or(usize::MAX),
            got,
        }),
    }
}

/// (offset of block `b`'s scale fields, offset of its quants) in a packed row.
fn packed_at(b: usize, area: usize, quants: usize, scale: usize) -> (usize, usize) {
    let group = b / GROUP_BLOCKS * (area + GROUP_BLOCKS * quants);
    let j = b % GROUP_BLOCKS;
    (group + j * scale, group + area + j * quants)
}

/// The packed copy of a (rows, cols) matrix of `dtype` stored as GGUF blocks.
pub fn pack(dtype: DType, rows: usize, cols: usize, gguf: &[u8]) -> Result<Vec<u8>, RepackError> {
    let (g_row, p_row, scale, area, quants) = sizes(dtype, rows, cols, gguf.len(), false)?;
    let block = scale + quants;
    let mut out = vec![0u8; rows * p_row];
    for r in 0..rows {
        let (src, dst) = (&gguf[r * g_row..][..g_row], &mut out[r * p_row..][..p_row]);
        for b in 0..cols / BLOCK {
            let (s, q) = packed_at(b, area, quants, scale);
            let blk = &src[b * block..][..block];
            dst[s..s + scale].copy_from_slice(&blk[..scale]);
            dst[q..q + quants].copy_from_slice(&blk[scale..]);
        }
    }
    Ok(out)
}

/// The GGUF blocks of a packed (rows, cols) matrix of `dtype`: [`pack`] undone.
pub fn unpack(
    dtype: DType,
    rows: usize,
    cols: usize,
    packed: &[u8],
) -> Result<Vec<u8>, RepackError> {
    let (g_row, p_row, scale, area, quants) = sizes(dtype, rows, cols, packed.len(), true)?;
    let block = scale + quants;
    let mut out = vec![0u8; rows * g_row];
    for r in 0..rows {
        let (src, dst) = (
            &packed[r * p_row..][..p_row],
            &mut out[r * g_row..][..g_row],
        );
        for b in 0..cols / BLOCK {
            let (s, q) = packed_at(b, area, quants, scale);
            let blk = &mut dst[b * block..][..block];
            blk[..scale].copy_from_slice(&src[s..s + scale]);
            blk[scale..].copy_from_slice(&src[q..q + quants]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [DType; 3] = [DType::Q4_0, DType::Q4_1, DType::Q8_0];

    proptest! {
        // Odd shapes: any row count, blocks not a multiple of the group (a short last
        // group), random bytes (every bit pattern of scales and quants).
        #[test]
        fn unpack_undoes_pack(t in 0usize..3, rows in 1usize..7, blocks in 1usize..27, seed in any::<u64>()) {
            let dtype = TYPES[t];
            let cols = blocks * BLOCK;
            let n = dtype.bytes_for((rows * cols) as u64).unwrap() as usize;
            let mut x = seed | 1;
            let gguf: Vec<u8> = (0..n).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                (x >> 24) as u8
            }).collect();
            let packed = pack(dtype, rows, cols, &gguf).unwrap();
            let row = packed_row_bytes(dtype, cols as u64).unwrap() as usize;
            prop_assert_eq!(packed.len(), rows * row);
            prop_assert_eq!(row % 16, 0);
            prop_assert_eq!(unpack(dtype, rows, cols, &packed).unwrap(), gguf);
        }
    }

    #[test]
    fn rows_grow_only_by_the_last_groups_padding() {
        for dtype in TYPES {
            let (scale, area, _) = shape(dtype).unwrap();
            for blocks in 1..40u64 {
                let gguf = dtype.bytes_for(blocks * 32).unwrap();
                let packed = packed_row_bytes(dtype, blocks * 32).unwrap();
                assert!(packed >= gguf && packed - gguf <= (area - scale) as u64);
                if blocks % 8 == 0 {
                    assert_eq!(packed, gguf, "{dtype} {blocks} blocks");
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_and_types_are_errors() {
        assert!(matches!(
            pack(DType::Q4_0, 2, 64, &[0; 71]),
            Err(RepackError::Length { expected: 72, .. })
        ));
        assert_eq!(
            pack(DType::Q4_K, 1, 256, &[0; 144]),
            Err(RepackError::Unsupported(DType::Q4_K))
        );
    }
}
