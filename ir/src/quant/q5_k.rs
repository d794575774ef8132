//! Q5_K (ggml's `block_q5_K`): super-blocks of 256 values in 176 bytes; Q4_K with a
//! fifth bit per value.
//!
//! ```text
//! bytes 0..2     d, f16 little endian
//! bytes 2..4     dmin, f16 little endian
//! bytes 4..16    scales[12]: 8 six-bit scales and minimums, packed as in Q4_K
//! bytes 16..48   qh[32]: bit 2c of qh[l] is the fifth bit of element 64c + l, bit 2c + 1
//!                that of element 64c + 32 + l
//! bytes 48..176  qs[128]: low nibbles as in Q4_K (chunk c: sub-blocks 2c and 2c + 1)
//! value = d * sc[j] * q - dmin * m[j], q in 0..=31
//! ```

use super::k_common::{QK_K, dot_super_block_qkx, quantize_super_block_qkx, scale_min_k4};
use super::{debug_check_blocks, f16_at, q8_k};

pub const BLOCK_LEN: usize = QK_K;
pub const BLOCK_BYTES: usize = 176;
/// Byte offset of the fifth bits.
pub const QH_AT: usize = 16;
/// Byte offset of the nibbles.
pub const QS_AT: usize = 48;

/// The 256 quants (0..=31) of a block, in element order.
#[inline(always)]
fn quants(block: &[u8]) -> [u8; QK_K] {
    let qh = &block[QH_AT..QS_AT];
    let qs = &block[QS_AT..BLOCK_BYTES];
    let mut q = [0u8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            let hi = qh[l] >> (2 * c);
            q[64 * c + l] = (qs[32 * c + l] & 0xF) | ((hi & 1) << 4);
            q[64 * c + 32 + l] = (qs[32 * c + l] >> 4) | ((hi & 2) << 3);
        }
    }
    q
}

/// Dequantizes whole blocks into `dst` (ggml's `dequantize_row_q5_K`:
/// `(d * sc) * q - dmin * m`).
///
/// Precondition: `dst.len()` is a multiple of 256 and `src.len() == dst.len() / 256 * 176`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        let min = f16_at(block, 2);
        let q = quants(block);
        for (j, (out, q)) in out.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
            let (sc, m) = scale_min_k4(j, &block[4..16]);
            let (d1, m1) = (d * f32::from(sc), min * f32::from(m));
            for (o, &q) in out.iter_mut().zip(q) {
                *o = d1 * f32::from(q) - m1;
            }
        }
    }
}

/// ggml's `quantize_row_q5_K_ref`: Q4_K's scheme with 31 levels and the trial scales
/// `(30.5 + 0.1 is) / range`, is = 0..=15.
///
/// Precondition: `src.len()` is a multiple of 256 and `dst.len() == src.len() / 256 * 176`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut l = [0u8; QK_K];
        let (d, dmin, scales) = quantize_super_block_qkx(x, 31, -0.5, 15, &mut l);
        block[0..2].copy_from_slice(&d.to_le_bytes());
        block[2..4].copy_from_slice(&dmin.to_le_bytes());
        block[4..16].copy_from_slice(&scales);
        let (qh, qs) = block[QH_AT..BLOCK_BYTES].split_at_mut(QS_AT - QH_AT);
        qh.fill(0);
        for c in 0..4 {
            for i in 0..32 {
                let (l1, l2) = (l[64 * c + i], l[64 * c + 32 + i]);
                qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                qs[32 * c + i] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    }
}

/// Dot product of a Q5_K row with Q8_K activations: as
/// [`super::q4_k::vec_dot_q4_k_q8_k`], with 5-bit quants.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 176 == act.len() / 292`); debug assertion only.
pub fn vec_dot_q5_k_q8_k(row: &[u8], act: &[u8]) -> f32 {
    let blocks = row.len() / BLOCK_BYTES;
    debug_check_blocks(blocks * BLOCK_LEN, row.len(), BLOCK_LEN, BLOCK_BYTES);
    debug_check_blocks(blocks * BLOCK_LEN, act.len(), BLOCK_LEN, q8_k::BLOCK_BYTES);
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(q8_k::BLOCK_BYTES))
    {
        let (sumi, summ) = dot_super_block_qkx(&x[4..16], &quants(x), y);
        let dy = q8_k::block_d(y);
        acc += (f16_at(x, 0) * dy) * sumi as f32;
        acc_min += (f16_at(x, 2) * dy) * summ as f32;
    }
    acc - acc_min
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    /// One hand-written super-block: Q4_K's hand block (d = 0.5, dmin = 0.25, scales
    /// 1 2 3 4 5 17 33 63, minimums 0 1 2 3 20 40 63 7, qs[i] = i % 16 | (15 - i % 16) << 4)
    /// with qh[l] = 0x99 for even l, 0 for odd l: bits 0, 3, 4, 7, i.e. the fifth bit of
    /// the even elements of sub-blocks 0, 3, 4 and 7.
    fn hand_block() -> Vec<u8> {
        let mut b = vec![0x00, 0x38, 0x00, 0x34];
        b.extend([
            0x01, 0x42, 0x83, 0xC4, 0x40, 0x81, 0xC2, 0x03, 0x45, 0x81, 0xF1, 0x7F,
        ]);
        b.extend((0..32).map(|l| if l % 2 == 0 { 0x99u8 } else { 0 }));
        b.extend((0..128usize).map(|i| (i % 16) as u8 | ((15 - i % 16) as u8) << 4));
        b
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(256);
        dequantize_row(&hand_block(), &mut out);
        let dm = [
            (0.5f32, 0.0f32),
            (1.0, 0.25),
            (1.5, 0.5),
            (2.0, 0.75),
            (2.5, 5.0),
            (8.5, 10.0),
            (16.5, 15.75),
            (31.5, 1.75),
        ];
        for (e, &v) in out.iter().enumerate() {
            let (j, l) = (e / 32, e % 32);
            let nibble = if j % 2 == 0 { l % 16 } else { 15 - l % 16 };
            let fifth = if l % 2 == 0 && [0, 3, 4, 7].contains(&j) {
                16
            } else {
                0
            };
            let q = (nibble + fifth) as f32;
            assert_eq!(v, dm[j].0 * q - dm[j].1, "element {e}");
        }
        assert_eq!(out[..3], [8.0, 0.5, 9.0]);
        assert_eq!(out[96..98], [2.0 * 31.0 - 0.75, 2.0 * 14.0 - 0.75]);
    }

    #[test]
    fn hand_computed_dot_with_q8_k() {
        // Activations: d = 1, every quant 1, block sums 16.
        let mut act = 1.0f32.to_le_bytes().to_vec();
        act.extend([1u8; 256]);
        for _ in 0..16 {
            act.extend(16i16.to_le_bytes());
        }
        // Sub-blocks sum to 240, plus 16 · 16 in sub-blocks 0, 3, 4, 7:
        // sumi = 240 · 128 + 256 · (1 + 4 + 5 + 63) = 49_408; summ = 32 · 136 = 4_352.
        assert_eq!(vec_dot_q5_k_q8_k(&hand_block(), &act), 24_704.0 - 1_088.0);
    }

    #[test]
    fn quantizes_exact_ramps_to_full_scales() {
        // Every sub-block is 0.25 q - 2 for q = 0..32: the first fit is exact.
        let x: Vec<f32> = (0..256).map(|i| 0.25 * (i % 32) as f32 - 2.0).collect();
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        assert_eq!(bytes[0..2], half::f16::from_f32(0.25 / 63.0).to_le_bytes());
        assert_eq!(bytes[2..4], half::f16::from_f32(2.0 / 63.0).to_le_bytes());
        assert_eq!(bytes[4..16], [0xFF; 12]);
        // Elements 16..32 of every sub-block have the fifth bit: qh[l] = 0xFF for l >= 16.
        for l in 0..32 {
            assert_eq!(bytes[QH_AT + l], if l >= 16 { 0xFF } else { 0 }, "qh[{l}]");
        }
        let mut out = poisoned(256);
        dequantize_row(&bytes, &mut out);
        for (&a, &b) in x.iter().zip(&out) {
            assert!(
                (a - b).abs() <= 32.0 * f16_rounding(0.25) + f16_rounding(2.0),
                "{a} -> {b}"
            );
        }
    }

    proptest! {
        #[test]
        fn round_trip_error_is_bounded(src in rows_k()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 256 * BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            check_round_trip_k(&src, &out, 31.0)?;
            let again = quantize_checked(quantize_row, &out, bytes.len());
            let mut out2 = poisoned(src.len());
            dequantize_row(&again, &mut out2);
            check_round_trip_k(&out, &out2, 31.0)?;
        }

        #[test]
        fn integer_dot_matches_dequantized_dot((w, x) in row_pairs_k()) {
            let blocks = w.len() / 256;
            let row = quantize_checked(quantize_row, &w, blocks * BLOCK_BYTES);
            let act = quantize_checked(q8_k::quantize_row, &x, blocks * q8_k::BLOCK_BYTES);
            let (mut wd, mut xd) = (poisoned(w.len()), poisoned(x.len()));
            dequantize_row(&row, &mut wd);
            q8_k::dequantize_row(&act, &mut xd);
            let (exact, magnitude) = dot_f64(&wd, &xd);
            let got = vec_dot_q5_k_q8_k(&row, &act) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{got} vs {exact}");
        }
    }
}
