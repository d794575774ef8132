//! Quantized matrices repacked at load for 16-byte loads: GGUF interleaves each block's
//! scales with its quants (Q4_0's 18-byte blocks are only 2-byte aligned), so a kernel
//! could read them only a word at a time with shifts. The packed rows keep the same
//! bytes, regrouped per row in groups of 8 blocks, the scales first:
//!
//! ```text
//! group = [scale area: each scale field of the 8 blocks side by side, padded to S]
//!         [quants of block 0][quants of block 1]...
//! Q4_0: S = 16 (8 × f16 d),                 quants 16 bytes (32 nibbles):  144 bytes
//! Q4_1: S = 32 (8 × f16 (d, m)),            quants 16 bytes:               160 bytes
//! Q8_0: S = 16 (8 × f16 d),                 quants 32 bytes (32 × i8):     272 bytes
//! Q5_0: S = 48 (8 × f16 d, then 8 × u32 qh), quants 16 bytes:              176 bytes
//! Q5_1: S = 64 (8 × f16 (d, m), 8 × u32 qh), quants 16 bytes:              192 bytes
//! Q6_K: S = 16 (8 × f16 d),                 "quants" 208 bytes (ql, qh and
//!       the 16 scales, in GGUF order) of a 256-value super-block:         1680 bytes
//! ```
//!
//! A row's last group may hold fewer than 8 blocks (its scale area keeps its size), so
//! where block `b` lies depends on `b` alone, never on the row's length: a kernel finds
//! it from the row's start. Every group is a multiple of 16 bytes, so every row and every
//! block's quants are 16-byte aligned; a row grows by at most S − (scale bytes of a
//! block) of padding (none when its blocks are a multiple of 8). The packed copy replaces
//! the GGUF bytes on the device (the weights buffer holds only it); [`unpack`] gives them
//! back. Q4_K (144-byte) and Q5_K (176-byte) super-blocks are whole 16-byte units
//! already, their quants 16-byte aligned in them: they stay as GGUF stores them.

use kiln_ir::DType;

/// Blocks of a group.
pub const GROUP_BLOCKS: usize = 8;
/// Values of a 32-value block (every packed type's but Q6_K's).
pub const BLOCK: usize = 32;

/// How a type is packed: the values of a block, the (offset, bytes) of each scale field
/// in a GGUF block and of its quants (together, the whole block).
struct Shape {
    values: usize,
    fields: &'static [(usize, usize)],
    quants: (usize, usize),
}

impl Shape {
    /// Bytes of a block's scale fields.
    fn scale_bytes(&self) -> usize {
        self.fields.iter().map(|f| f.1).sum()
    }

    /// Bytes of a group's scale area.
    fn area(&self) -> usize {
        (GROUP_BLOCKS * self.scale_bytes()).next_multiple_of(16)
    }

    /// Bytes of a GGUF block.
    fn block_bytes(&self) -> usize {
        self.scale_bytes() + self.quants.1
    }
}

fn shape(dtype: DType) -> Option<Shape> {
    let (values, fields, quants): (usize, &'static [(usize, usize)], (usize, usize)) = match dtype {
        DType::Q4_0 => (BLOCK, &[(0, 2)], (2, 16)),
        DType::Q4_1 => (BLOCK, &[(0, 4)], (4, 16)),
        DType::Q8_0 => (BLOCK, &[(0, 2)], (2, 32)),
        DType::Q5_0 => (BLOCK, &[(0, 2), (2, 4)], (6, 16)),
        DType::Q5_1 => (BLOCK, &[(0, 4), (4, 4)], (8, 16)),
        // ql[128], qh[64], scales[16] stay together; d (at the end) moves.
        DType::Q6_K => (256, &[(208, 2)], (0, 208)),
        _ => return None,
    };
    Some(Shape {
        values,
        fields,
        quants,
    })
}

/// Values of a block of a packed type (None for the others).
pub fn block_values(dtype: DType) -> Option<usize> {
    shape(dtype).map(|s| s.values)
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
    let sh = shape(dtype)?;
    if !cols.is_multiple_of(sh.values as u64) {
        return None;
    }
    let blocks = cols / sh.values as u64;
    let (full, tail) = (blocks / GROUP_BLOCKS as u64, blocks % GROUP_BLOCKS as u64);
    let (area, quants) = (sh.area() as u64, sh.quants.1 as u64);
    let group = area + GROUP_BLOCKS as u64 * quants;
    let last = if tail > 0 { area + tail * quants } else { 0 };
    full.checked_mul(group)?.checked_add(last)
}

/// A matrix that cannot be packed, or bytes of the wrong length.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepackError {
    #[error("{0} matrices are not packed (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1 and Q6_K are)")]
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

/// The shape of `dtype` and a matrix's row bytes in both layouts (GGUF, packed),
/// checked against `got` bytes of the input's layout (`packed_in`).
fn sizes(
    dtype: DType,
    rows: usize,
    cols: usize,
    got: usize,
    packed_in: bool,
) -> Result<(Shape, usize, usize), RepackError> {
    let sh = shape(dtype).ok_or(RepackError::Unsupported(dtype))?;
    let gguf_row = dtype.bytes_for(cols as u64).map(|b| b as usize);
    let packed_row = packed_row_bytes(dtype, cols as u64).map(|b| b as usize);
    let expected = match (gguf_row, packed_row) {
        (Some(g), Some(p)) => (if packed_in { p } else { g }).checked_mul(rows),
        _ => None,
    };
    match (expected, gguf_row, packed_row) {
        (Some(e), Some(g), Some(p)) if e == got => Ok((sh, g, p)),
        _ => Err(RepackError::Length {
            dtype,
            rows,
            cols,
            expected: expected.unwrap_or(usize::MAX),
            got,
        }),
    }
}

/// Each (GGUF block offset, packed row offset, bytes) that block `b` of a row moves.
fn moves(sh: &Shape, b: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let group = b / GROUP_BLOCKS * (sh.area() + GROUP_BLOCKS * sh.quants.1);
    let j = b % GROUP_BLOCKS;
    let mut field_area = 0;
    let fields = sh.fields.iter().map(move |&(at, n)| {
        let m = (at, group + field_area + j * n, n);
        field_area += GROUP_BLOCKS * n;
        m
    });
    let (at, n) = sh.quants;
    fields.chain(std::iter::once((at, group + sh.area() + j * n, n)))
}

/// The packed copy of a (rows, cols) matrix of `dtype` stored as GGUF blocks.
pub fn pack(dtype: DType, rows: usize, cols: usize, gguf: &[u8]) -> Result<Vec<u8>, RepackError> {
    let (sh, g_row, p_row) = sizes(dtype, rows, cols, gguf.len(), false)?;
    let block = sh.block_bytes();
    let mut out = vec![0u8; rows * p_row];
    for r in 0..rows {
        let (src, dst) = (&gguf[r * g_row..][..g_row], &mut out[r * p_row..][..p_row]);
        for b in 0..cols / sh.values {
            let blk = &src[b * block..][..block];
            for (from, to, n) in moves(&sh, b) {
                dst[to..to + n].copy_from_slice(&blk[from..from + n]);
            }
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
    let (sh, g_row, p_row) = sizes(dtype, rows, cols, packed.len(), true)?;
    let block = sh.block_bytes();
    let mut out = vec![0u8; rows * g_row];
    for r in 0..rows {
        let (src, dst) = (
            &packed[r * p_row..][..p_row],
            &mut out[r * g_row..][..g_row],
        );
        for b in 0..cols / sh.values {
            let blk = &mut dst[b * block..][..block];
            for (to, from, n) in moves(&sh, b) {
                blk[to..to + n].copy_from_slice(&src[from..from + n]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [DType; 6] = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q6_K,
    ];

    proptest! {
        // Odd shapes: any row count, blocks not a multiple of the group (a short last
        // group), random bytes (every bit pattern of scales and quants).
        #[test]
        fn unpack_undoes_pack(t in 0usize..TYPES.len(), rows in 1usize..7, blocks in 1usize..27, seed in any::<u64>()) {
            let dtype = TYPES[t];
            let cols = blocks * block_values(dtype).unwrap();
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
    fn shapes_cover_whole_blocks_and_align_what_kernels_load() {
        for dtype in TYPES {
            let sh = shape(dtype).unwrap();
            let block = dtype.bytes_for(sh.values as u64).unwrap() as usize;
            assert_eq!(sh.block_bytes(), block, "{dtype}");
            // The fields and the quants tile the GGUF block.
            let mut parts: Vec<_> = sh.fields.iter().copied().chain([sh.quants]).collect();
            parts.sort();
            assert_eq!(parts[0].0, 0, "{dtype}");
            for w in parts.windows(2) {
                assert_eq!(w[0].0 + w[0].1, w[1].0, "{dtype}");
            }
            assert_eq!(sh.quants.1 % 16, 0, "{dtype}");
        }
    }

    #[test]
    fn rows_grow_only_by_the_last_groups_padding() {
        for dtype in TYPES {
            let sh = shape(dtype).unwrap();
            for blocks in 1..40u64 {
                let cols = blocks * sh.values as u64;
                let gguf = dtype.bytes_for(cols).unwrap();
                let packed = packed_row_bytes(dtype, cols).unwrap();
                assert!(packed >= gguf && packed - gguf <= (sh.area() - sh.scale_bytes()) as u64);
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
