//! Quantized weights repacked for the decode matvec (`cuda/mv/`): GGUF interleaves each
//! block's scales with its quants (Q4_0's 18-byte blocks are only 2-byte aligned; a
//! K-quant's sub-block of 32 values is spread over a 64-value chunk), so a lane could
//! only read them a few bytes at a time. The packed copy keeps the same bits in up to
//! three planes, a unit being 32 consecutive values of a row; the quant plane row-major
//! (weight rows in order, units of a row in order), the high and scale planes of the
//! 32-value types in groups of 4 rows (a group's records of one unit side by side), the
//! K-quants' row-major:
//!
//! ```text
//! quant plane  (rows, units, Q)   Q = 16: the low 4 bits of the unit's 32 values, value
//!                                 e in the low nibble of byte e, value e + 16 in the
//!                                 high one (Q4_0's GGUF order); Q = 32 for Q8_0 (bytes)
//! high plane   (ceil(rows / 4), units, 4, H)    Q5_0, Q5_1
//!              (rows, units, H)                 Q5_K, Q6_K
//!                                 H = 4 (Q5_0, Q5_1, Q5_K: the fifth bits) or 8 (Q6_K:
//!                                 the top 2 bits); none for the other types
//! scale plane  (ceil(rows / 4), blocks, 4, S)   Q4_0, Q4_1, Q8_0, Q5_0, Q5_1
//!              (rows, blocks, S)                Q4_K, Q5_K, Q6_K
//!                                 per GGUF block (32 or 256 values) its scale fields as
//!                                 stored: f16 d (Q4_0, Q8_0, Q5_0), half2 (d, m) (Q4_1,
//!                                 Q5_1), (d, dmin, 12 bytes of 6-bit scales) (Q4_K, Q5_K:
//!                                 16 bytes), (16 int8 scales, f16 d) (Q6_K: 18 bytes)
//! ```
//!
//! A decode matvec block computes 1, 2 or 4 rows from a multiple of that count
//! (`matvec::rows_per_block`), and its lane s reads unit s (s + 128, ...) of each: with
//! the records of 4 rows' unit side by side, the lane takes its rows' scales in one load
//! (8 or 16 bytes at 4 rows), and Q5's high words in another (16 bytes), beside their
//! 16-byte quant loads, not a 2- or 4-byte load of each a row. The last group's rows past
//! `rows` are zero records, so a block reads its group's records without clamping its
//! rows. The K-quants keep one scale record a row and super-block: a lane's unit shares
//! it with 7 others, and 16 or 18 bytes a row already fill a load.
//!
//! The high bits of a unit are ordered for the kernel's 4-value words: word i of the
//! quant plane holds values 4i .. 4i+3 (low nibbles) and 16+4i .. 16+4i+3 (high ones);
//! Q5's bit of value 4i + c is bit 8c + i of the high word, of value 16 + 4i + c bit
//! 8c + 4 + i, so `(h >> i) & 0x01010101` puts a word's four bits in its four bytes;
//! Q6_K's 2 bits of value 4i + c are bits 2i, 2i+1 of byte c, of value 16 + 4i + c of
//! byte 4 + c (`(h.x >> 2i) & 0x03030303`).
//!
//! Lane `l` of a warp reading unit `b0 + l` of a row makes one coalesced 512-byte load
//! of 16-byte pieces. The quant plane starts at 0 and is a multiple of 16 bytes, the high
//! plane follows it, the scale plane starts at the next multiple of 16; the total is
//! rounded up to 16 bytes (under 32 bytes more than the GGUF tensor, plus the scale
//! plane's padding rows: at most 3 rows' scales). The packed copy replaces the GGUF
//! bytes on the device: [`unpack`] gives them back.

use kiln_ir::DType;

/// A weight that cannot be repacked, or bytes of the wrong length.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepackError {
    #[error("{0} weights are not repacked (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K are)")]
    Unsupported(DType),
    #[error("{dtype}: {cols} columns is not a whole number of {block}-value blocks")]
    Cols {
        dtype: DType,
        cols: usize,
        block: usize,
    },
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
    /// Units of 32 values per row.
    pub blocks: usize,
    /// Quant bytes of one unit (16 or 32): one row is `blocks * quant_bytes`.
    pub quant_bytes: usize,
    /// High-bit bytes of one unit (0, 4 or 8).
    pub high_bytes: usize,
    /// Start of the high plane (the end of the quant plane).
    pub high_offset: usize,
    /// Values of a GGUF block, which has one scale record (32 or 256).
    pub group: usize,
    /// Scale bytes of one GGUF block (2, 4, 16 or 18).
    pub scale_bytes: usize,
    /// Rows of a group of the high and scale planes, whose records of one unit (block)
    /// lie side by side (4 for the 32-value types, 1 for the K-quants: [`ROW_GROUP`]).
    pub row_group: usize,
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

    /// Bytes of the high plane (rows padded to a whole group).
    pub fn high_plane_bytes(&self) -> usize {
        self.rows.next_multiple_of(self.row_group) * self.blocks * self.high_bytes
    }

    /// Where the high bits of unit `unit` of row `row` start, in bytes from the packed
    /// weight's start.
    pub fn high_at(&self, row: usize, unit: usize) -> usize {
        let g = self.row_group;
        self.high_offset + ((row / g * self.blocks + unit) * g + row % g) * self.high_bytes
    }

    /// Bytes of the scale plane (rows padded to a whole group).
    pub fn scale_plane_bytes(&self) -> usize {
        self.rows.next_multiple_of(self.row_group) * (self.cols / self.group) * self.scale_bytes
    }

    /// Where the scale record of GGUF block `block` of row `row` starts, in bytes from
    /// the packed weight's start.
    pub fn scale_at(&self, row: usize, block: usize) -> usize {
        let (g, blocks) = (self.row_group, self.cols / self.group);
        self.scale_offset + ((row / g * blocks + block) * g + row % g) * self.scale_bytes
    }
}

/// Rows of a group of the 32-value types' high and scale planes (`mv/groups.cuh`'s
/// MV_SG): the most rows a decode matvec block computes.
pub const ROW_GROUP: usize = 4;

/// The weight types the repacker (and so the matvec) handles.
pub const PACKED: [DType; 8] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Whether weights of `dtype` are repacked (the matvec reads them).
pub fn is_packed(dtype: DType) -> bool {
    PACKED.contains(&dtype)
}

/// How a GGUF block maps onto the planes: values, then bytes per unit (quant, high)
/// and per block (scale).
struct Format {
    group: usize,
    quant: usize,
    high: usize,
    scale: usize,
}

fn format(dtype: DType) -> Result<Format, RepackError> {
    let f = |group, quant, high, scale| Format {
        group,
        quant,
        high,
        scale,
    };
    match dtype {
        DType::Q4_0 => Ok(f(32, 16, 0, 2)),
        DType::Q4_1 => Ok(f(32, 16, 0, 4)),
        DType::Q8_0 => Ok(f(32, 32, 0, 2)),
        DType::Q5_0 => Ok(f(32, 16, 4, 2)),
        DType::Q5_1 => Ok(f(32, 16, 4, 4)),
        DType::Q4_K => Ok(f(256, 16, 0, 16)),
        DType::Q5_K => Ok(f(256, 16, 4, 16)),
        DType::Q6_K => Ok(f(256, 16, 8, 18)),
        _ => Err(RepackError::Unsupported(dtype)),
    }
}

/// The planes of a packed (rows, cols) weight.
pub fn layout(dtype: DType, rows: usize, cols: usize) -> Result<PackedLayout, RepackError> {
    let f = format(dtype)?;
    if !cols.is_multiple_of(f.group) {
        return Err(RepackError::Cols {
            dtype,
            cols,
            block: f.group,
        });
    }
    let blocks = cols / 32;
    let overflow = RepackError::Overflow { dtype, rows, cols };
    let n = rows.checked_mul(blocks).ok_or(overflow.clone())?;
    let quants = n.checked_mul(f.quant).ok_or(overflow.clone())?;
    let row_group = if f.group == 32 { ROW_GROUP } else { 1 };
    let highs = rows
        .checked_next_multiple_of(row_group)
        .and_then(|r| r.checked_mul(blocks))
        .and_then(|r| r.checked_mul(f.high))
        .ok_or(overflow.clone())?;
    let scales = rows
        .checked_next_multiple_of(row_group)
        .and_then(|r| r.checked_mul(cols / f.group))
        .and_then(|r| r.checked_mul(f.scale))
        .ok_or(overflow.clone())?;
    let scale_offset = quants
        .checked_add(highs)
        .and_then(|b| b.checked_next_multiple_of(16))
        .ok_or(overflow.clone())?;
    let bytes = scale_offset
        .checked_add(scales)
        .and_then(|b| b.checked_next_multiple_of(16))
        .ok_or(overflow)?;
    Ok(PackedLayout {
        dtype,
        rows,
        cols,
        blocks,
        quant_bytes: f.quant,
        high_bytes: f.high,
        high_offset: quants,
        group: f.group,
        scale_bytes: f.scale,
        row_group,
        scale_offset,
        bytes,
    })
}

/// Bytes of the packed (rows, cols) weight.
pub fn packed_bytes(dtype: DType, rows: usize, cols: usize) -> Result<usize, RepackError> {
    Ok(layout(dtype, rows, cols)?.bytes)
}

/// The GGUF bytes of a (rows, cols) weight, checked.
fn gguf_bytes(l: &PackedLayout, got: usize) -> Result<usize, RepackError> {
    let expected = l.rows * (l.cols / l.group) * l.dtype.block_bytes();
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

/// One unit's 32 values as codes: the low 4 bits and the high bits.
pub type Codes = [u8; 32];

/// The byte of the high word/bytes that holds value `e`'s high bits, and its shift.
fn high_at(high_bytes: usize, e: usize) -> (usize, usize) {
    let (half, i, c) = (e / 16, e % 16 / 4, e % 4);
    match high_bytes {
        // Bit 8c + 4·half + i of a little-endian word.
        4 => (c, 4 * half + i),
        // Bits 2i, 2i + 1 of byte 4·half + c.
        _ => (4 * half + c, 2 * i),
    }
}

/// A unit's planes from its codes: nibbles (value e low, e + 16 high) and high bits.
fn put_unit(low: &Codes, high: &Codes, q: &mut [u8], h: &mut [u8]) {
    for e in 0..16 {
        q[e] = low[e] | (low[e + 16] << 4);
    }
    h.fill(0);
    let mask = if h.len() == 4 { 1 } else { 3 };
    for (e, &bits) in high.iter().enumerate() {
        if !h.is_empty() {
            let (byte, shift) = high_at(h.len(), e);
            h[byte] |= (bits & mask) << shift;
        }
    }
}

/// The codes of a unit from its planes (`q` its 16 quant bytes, `h` its high bytes, none
/// for 4-bit types): the low 4 bits and the high bits of each of its 32 values. The
/// inverse of [`put_unit`].
pub fn get_unit(q: &[u8], h: &[u8]) -> (Codes, Codes) {
    let (mut low, mut high) = ([0u8; 32], [0u8; 32]);
    let mask = if h.len() == 4 { 1 } else { 3 };
    for e in 0..16 {
        low[e] = q[e] & 15;
        low[e + 16] = q[e] >> 4;
    }
    for (e, v) in high.iter_mut().enumerate() {
        if !h.is_empty() {
            let (byte, shift) = high_at(h.len(), e);
            *v = (h[byte] >> shift) & mask;
        }
    }
    (low, high)
}

/// Unit `u`'s codes from a GGUF block's quant fields (Q5_0/Q5_1: qh then qs; Q4_K: qs;
/// Q5_K: qh then qs; Q6_K: ql then qh), and [`put_codes`] its inverse. Value l of a
/// K-quant unit u: Q4_K/Q5_K's nibble of qs[32·(u/2) + l] (high when u is odd) and bit
/// u of qh[l]; Q6_K's (u = 4h + s) nibble of ql[64h + 32·(s%2) + l] (high when s ≥ 2)
/// and bits 2s of qh[32h + l] (ggml's dequantize_row_q*_K).
fn get_codes(dtype: DType, fields: &[u8], u: usize) -> (Codes, Codes) {
    let (mut low, mut high) = ([0u8; 32], [0u8; 32]);
    for l in 0..32 {
        (low[l], high[l]) = match dtype {
            DType::Q5_0 | DType::Q5_1 => {
                let qh = u32::from_le_bytes([fields[0], fields[1], fields[2], fields[3]]);
                let nib = if l < 16 {
                    fields[4 + l] & 15
                } else {
                    fields[4 + l - 16] >> 4
                };
                (nib, ((qh >> l) & 1) as u8)
            }
            DType::Q4_K => ((fields[32 * (u / 2) + l] >> (4 * (u % 2))) & 15, 0),
            DType::Q5_K => (
                (fields[32 + 32 * (u / 2) + l] >> (4 * (u % 2))) & 15,
                (fields[l] >> u) & 1,
            ),
            _ => {
                let (h, s) = (u / 4, u % 4);
                let ql = fields[64 * h + 32 * (s % 2) + l];
                (
                    (ql >> (4 * (s / 2))) & 15,
                    (fields[128 + 32 * h + l] >> (2 * s)) & 3,
                )
            }
        };
    }
    (low, high)
}

/// Write unit `u`'s codes into a GGUF block's quant fields (every unit of the block
/// adds its bits; the fields start zeroed).
fn put_codes(dtype: DType, fields: &mut [u8], u: usize, low: &Codes, high: &Codes) {
    for l in 0..32 {
        match dtype {
            DType::Q5_0 | DType::Q5_1 => {
                fields[l / 8] |= high[l] << (l % 8);
                fields[4 + l % 16] |= low[l] << (4 * (l / 16));
            }
            DType::Q4_K => fields[32 * (u / 2) + l] |= low[l] << (4 * (u % 2)),
            DType::Q5_K => {
                fields[32 + 32 * (u / 2) + l] |= low[l] << (4 * (u % 2));
                fields[l] |= high[l] << u;
            }
            _ => {
                let (h, s) = (u / 4, u % 4);
                fields[64 * h + 32 * (s % 2) + l] |= low[l] << (4 * (s / 2));
                fields[128 + 32 * h + l] |= high[l] << (2 * s);
            }
        }
    }
}

/// A GGUF block's (scale fields, quant fields) ranges.
fn fields(dtype: DType) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let b = dtype.block_bytes();
    match dtype {
        DType::Q4_0 | DType::Q8_0 | DType::Q5_0 => (0..2, 2..b),
        DType::Q4_1 | DType::Q5_1 => (0..4, 4..b),
        DType::Q4_K | DType::Q5_K => (0..16, 16..b),
        _ => (192..b, 0..192), // Q6_K: ql, qh, then the scales and d
    }
}

/// Whether a type's quant fields are the quant plane's bytes as they are.
fn copied(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0)
}

/// The packed copy of a (rows, cols) GGUF weight `gguf` (padding bytes zero).
pub fn pack(dtype: DType, rows: usize, cols: usize, gguf: &[u8]) -> Result<Vec<u8>, RepackError> {
    let l = layout(dtype, rows, cols)?;
    gguf_bytes(&l, gguf.len())?;
    let mut out = vec![0u8; l.bytes];
    let (quants, rest) = out.split_at_mut(l.high_offset);
    let (highs, scales) = rest.split_at_mut(l.scale_offset - l.high_offset);
    let units = l.group / 32;
    let per_row = l.cols / l.group;
    let (sf, qf) = fields(dtype);
    for (i, b) in gguf.chunks_exact(dtype.block_bytes()).enumerate() {
        let at = l.scale_at(i / per_row, i % per_row) - l.scale_offset;
        scales[at..][..l.scale_bytes].copy_from_slice(&b[sf.clone()]);
        let q = &mut quants[i * units * l.quant_bytes..][..units * l.quant_bytes];
        if copied(dtype) {
            q.copy_from_slice(&b[qf.clone()]);
            continue;
        }
        for u in 0..units {
            let (low, high) = get_codes(dtype, &b[qf.clone()], u);
            let (row, unit) = (i / per_row, i % per_row * units + u);
            let h = &mut highs[l.high_at(row, unit) - l.high_offset..][..l.high_bytes];
            put_unit(&low, &high, &mut q[u * 16..][..16], h);
        }
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
    let mut out = vec![0u8; rows * (cols / l.group) * dtype.block_bytes()];
    let quants = &packed[..l.high_offset];
    let highs = &packed[l.high_offset..l.scale_offset];
    let units = l.group / 32;
    let per_row = l.cols / l.group;
    let (sf, qf) = fields(dtype);
    for (i, b) in out.chunks_exact_mut(dtype.block_bytes()).enumerate() {
        let at = l.scale_at(i / per_row, i % per_row);
        b[sf.clone()].copy_from_slice(&packed[at..][..l.scale_bytes]);
        let q = &quants[i * units * l.quant_bytes..][..units * l.quant_bytes];
        if copied(dtype) {
            b[qf.clone()].copy_from_slice(q);
            continue;
        }
        for u in 0..units {
            let (row, unit) = (i / per_row, i % per_row * units + u);
            let h = &highs[l.high_at(row, unit) - l.high_offset..][..l.high_bytes];
            let (low, high) = get_unit(&q[u * 16..][..16], h);
            put_codes(dtype, &mut b[qf.clone()], u, &low, &high);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [DType; 8] = PACKED;

    /// Odd row counts; widths of 1, 3, 129 and 18 blocks (K-quants: super-blocks).
    fn shapes() -> impl Strategy<Value = (usize, usize, usize)> {
        (
            prop::sample::select(vec![1usize, 3, 17, 4097]),
            prop::sample::select(vec![1usize, 3, 129, 18]),
            0usize..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random bytes: every f16 scale pattern (NaN, infinities, subnormals) included.
        #[test]
        fn unpack_of_pack_is_the_identity((rows, width, t) in shapes(), seed in any::<u64>()) {
            let dtype = TYPES[t];
            let cols = width * dtype.block_len();
            let rows = if dtype.block_len() == 256 { rows.min(257) } else { rows };
            let gguf_len = rows * width * dtype.block_bytes();
            let mut x = seed | 1;
            let gguf: Vec<u8> = (0..gguf_len).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                (x >> 24) as u8
            }).collect();
            let packed = pack(dtype, rows, cols, &gguf).unwrap();
            let l = layout(dtype, rows, cols).unwrap();
            prop_assert_eq!(packed.len(), l.bytes);
            prop_assert!(l.bytes.is_multiple_of(16) && l.scale_offset.is_multiple_of(16));
            prop_assert!(l.high_offset.is_multiple_of(16));
            let pad_rows = rows.next_multiple_of(l.row_group) - rows;
            let pad = pad_rows * ((cols / l.group) * l.scale_bytes + l.blocks * l.high_bytes);
            prop_assert!(l.bytes - gguf_len - pad < 32, "the GGUF size and the group padding, padded twice to 16");
            prop_assert_eq!(unpack(dtype, rows, cols, &packed).unwrap(), gguf);
        }

        /// The scale record of (row, block) is the GGUF block's scale fields, and the high
        /// bits of (row, unit) the unit's; the records of a group's rows for one unit are
        /// side by side (one load for a matvec block's 1, 2 or 4 rows); the padding rows'
        /// records are zero.
        #[test]
        fn scales_and_high_bits_lie_in_groups_of_rows((rows, width, t) in shapes(), seed in any::<u64>()) {
            let dtype = TYPES[t];
            let cols = width * dtype.block_len();
            let rows = rows.min(257);
            let mut x = seed | 1;
            let gguf: Vec<u8> = (0..rows * width * dtype.block_bytes()).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                (x >> 24) as u8
            }).collect();
            let packed = pack(dtype, rows, cols, &gguf).unwrap();
            let l = layout(dtype, rows, cols).unwrap();
            let g = l.row_group;
            prop_assert_eq!(g, if dtype.block_len() == 32 { ROW_GROUP } else { 1 });
            let (sf, _) = fields(dtype);
            let s = l.scale_bytes;
            for row in 0..rows.next_multiple_of(g) {
                for block in 0..width {
                    let at = l.scale_at(row, block);
                    let group_start = l.scale_at(row - row % g, block);
                    prop_assert_eq!(at, group_start + (row % g) * s);
                    prop_assert_eq!(at - l.scale_offset, ((row / g * width + block) * g + row % g) * s);
                    let record = &packed[at..][..s];
                    if row < rows {
                        let b = &gguf[(row * width + block) * dtype.block_bytes()..][..dtype.block_bytes()];
                        prop_assert_eq!(record, &b[sf.clone()]);
                    } else {
                        prop_assert!(record.iter().all(|&v| v == 0), "padding rows are zero");
                    }
                }
            }
            let end = l.scale_offset + l.scale_plane_bytes();
            prop_assert!(end <= l.bytes && l.bytes - end < 16);
            prop_assert!(packed[end..].iter().all(|&v| v == 0));
            let (h, units) = (l.high_bytes, dtype.block_len() / 32);
            let (_, qf) = fields(dtype);
            for row in 0..rows.next_multiple_of(g) {
                for unit in 0..l.blocks {
                    let at = l.high_at(row, unit);
                    prop_assert_eq!(at, l.high_at(row - row % g, unit) + (row % g) * h);
                    let mut want = vec![0u8; h];
                    if row < rows && h > 0 {
                        let block = row * width + unit / units;
                        let b = &gguf[block * dtype.block_bytes()..][..dtype.block_bytes()];
                        let (low, high) = get_codes(dtype, &b[qf.clone()], unit % units);
                        put_unit(&low, &high, &mut [0u8; 16], &mut want);
                    }
                    prop_assert_eq!(&packed[at..][..h], &want[..]);
                }
            }
            let high_end = l.high_offset + l.high_plane_bytes();
            prop_assert!(high_end <= l.scale_offset && l.scale_offset - high_end < 16);
            prop_assert!(packed[high_end..l.scale_offset].iter().all(|&v| v == 0));
        }
    }

    #[test]
    fn q4_0_scales_of_four_rows_are_one_8_byte_word() {
        // Five Q4_0 rows of two blocks: d of (row r, block b) is f16 bits 0x100·r + b.
        let (rows, blocks) = (5usize, 2usize);
        let mut gguf = vec![0u8; rows * blocks * 18];
        for (i, b) in gguf.chunks_exact_mut(18).enumerate() {
            b[..2].copy_from_slice(&((0x100 * (i / blocks) + i % blocks) as u16).to_le_bytes());
        }
        let p = pack(DType::Q4_0, rows, 64, &gguf).unwrap();
        let l = layout(DType::Q4_0, rows, 64).unwrap();
        assert_eq!(l.scale_offset, rows * blocks * 16);
        assert_eq!(
            l.scale_plane_bytes(),
            8 * blocks * 2,
            "two groups of 4 rows"
        );
        let d = |at: usize| u16::from_le_bytes([p[at], p[at + 1]]);
        let plane: Vec<u16> = (0..16).map(|j| d(l.scale_offset + 2 * j)).collect();
        // Group 0: block 0 of rows 0-3, block 1 of rows 0-3; group 1: row 4, then padding.
        #[rustfmt::skip]
        assert_eq!(plane, [
            0x000, 0x100, 0x200, 0x300, 0x001, 0x101, 0x201, 0x301,
            0x400, 0, 0, 0, 0x401, 0, 0, 0,
        ]);
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
            let cols = 2 * dtype.block_len();
            assert!(matches!(
                pack(dtype, 3, cols, &vec![1; good - 1]),
                Err(RepackError::Length { .. })
            ));
            assert!(matches!(
                pack(dtype, 3, cols - 16, &vec![1; good]),
                Err(RepackError::Cols { .. })
            ));
            let n = packed_bytes(dtype, 3, cols).unwrap();
            assert!(matches!(
                unpack(dtype, 3, cols, &vec![1; n + 16]),
                Err(RepackError::Length { .. })
            ));
            assert!(matches!(
                layout(dtype, usize::MAX / 2, cols),
                Err(RepackError::Overflow { .. })
            ));
        }
        assert!(matches!(
            pack(DType::Q4_K, 1, 288, &[0; 162]),
            Err(RepackError::Cols { block: 256, .. })
        ));
        assert_eq!(
            pack(DType::Q8_K, 1, 256, &[0; 292]),
            Err(RepackError::Unsupported(DType::Q8_K))
        );
    }
}
