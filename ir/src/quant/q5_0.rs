//! Q5_0 (ggml's `block_q5_0`): blocks of 32 values in 22 bytes. Most tensors of
//! Gemma 3 270M Q4_K_M are stored in this format.
//!
//! ```text
//! bytes 0..2   d, f16 little endian
//! bytes 2..6   qh, u32 little endian: bit j is the fifth bit of element j
//! bytes 6..22  qs[16]: element j in the low nibble of qs[j], element j + 16 in the high one
//! value = (q - 16) * d, q = nibble | fifth bit << 4 in 0..=31
//! ```

use half::f16;

use super::{debug_check_blocks, f16_at, q8_0};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 22;

/// The fifth bits of a Q5_0 or Q5_1 block, at byte `at`.
#[inline(always)]
pub(super) fn qh_at(block: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
}

/// The 5-bit quants (0..=31) of the 16 nibble bytes `qs` and fifth bits `qh`, in element
/// order.
#[inline(always)]
pub(super) fn quants5(qs: &[u8], qh: u32) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) | ((((qh >> j) << 4) & 0x10) as u8);
        q[j + 16] = (qs[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
    }
    q
}

/// Packs 32 quants (0..=31) into 16 nibble bytes and the fifth bits.
pub(super) fn pack5(q: &[u8; 32], qs: &mut [u8]) -> u32 {
    let mut qh = 0u32;
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        qh |= u32::from((q[j] & 0x10) >> 4) << j;
        qh |= u32::from((q[j + 16] & 0x10) >> 4) << (j + 16);
    }
    qh
}

/// Dequantizes whole blocks into `dst` (ggml's `dequantize_row_q5_0`: `(q - 16) * d`).
///
/// Precondition: `dst.len()` is a multiple of 32 and `src.len() == dst.len() / 32 * 22`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        let q = quants5(&block[6..BLOCK_BYTES], qh_at(block, 2));
        for (o, &q) in out.iter_mut().zip(&q) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q5_0_ref`: as Q4_0 with 32 levels. The value of largest
/// magnitude, sign kept, sets `d = max / -16` (it lands on q = 0); `q = min(31,
/// trunc(x / d + 16.5))`. The quants use the f32 `d`; the stored one is its f16 rounding.
///
/// Precondition: `src.len()` is a multiple of 32 and `dst.len() == src.len() / 32 * 22`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // C's `MIN(31, (int8_t)v)`: truncation toward zero, then the top clamp.
        let q: [u8; 32] = std::array::from_fn(|i| ((x[i] * id + 16.5) as i8).min(31) as u8);
        block[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let qh = pack5(&q, &mut block[6..BLOCK_BYTES]);
        block[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Dot product of a Q5_0 row with Q8_0 activations (ggml's `ggml_vec_dot_q5_0_q8_0`,
/// generic version): an integer dot per block, scaled by both blocks' `d`.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 22 == act.len() / 34`); debug assertion only.
pub fn vec_dot_q5_0_q8_0(row: &[u8], act: &[u8]) -> f32 {
    let blocks = row.len() / BLOCK_BYTES;
    debug_check_blocks(blocks * BLOCK_LEN, row.len(), BLOCK_LEN, BLOCK_BYTES);
    debug_check_blocks(blocks * BLOCK_LEN, act.len(), BLOCK_LEN, q8_0::BLOCK_BYTES);
    let mut sumf = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(q8_0::BLOCK_BYTES))
    {
        let q = quants5(&x[6..BLOCK_BYTES], qh_at(x, 2));
        let mut sumi = 0i32;
        for (&q, &y) in q.iter().zip(&y[2..]) {
            sumi += (i32::from(q) - 16) * i32::from(y as i8);
        }
        sumf += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    /// One hand-written block: d = 0.5 (f16 0x3800), qs[j] = j | (15 - j) << 4, and
    /// qh = 0x00FF_5555: the even elements of 0..16 and elements 16..24 have their
    /// fifth bit set.
    fn hand_block() -> Vec<u8> {
        let mut bytes = vec![0x00, 0x38, 0x55, 0x55, 0xFF, 0x00];
        bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        bytes
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(32);
        dequantize_row(&hand_block(), &mut out);
        #[rustfmt::skip]
        let expected = [
            // q = j + 16 for even j, j for odd j; (q - 16) / 2
            0.0, -7.5, 1.0, -6.5, 2.0, -5.5, 3.0, -4.5, 4.0, -3.5, 5.0, -2.5, 6.0, -1.5, 7.0, -0.5,
            // q = 31 - j for j < 8, 15 - j above
            7.5, 7.0, 6.5, 6.0, 5.5, 5.0, 4.5, 4.0, -4.5, -5.0, -5.5, -6.0, -6.5, -7.0, -7.5, -8.0,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [0.0f32; 32]; // 16.5 -> 16
        x[0] = -8.0; // largest magnitude: d = 0.5, id = 2, q = 0
        x[1] = 7.9; // 15.8 + 16.5 = 32.3 -> clamped to 31
        x[2] = 0.25; // 0.5 + 16.5 -> 17: halves round up
        x[3] = -0.25; // -0.5 + 16.5 -> 16
        x[4] = 3.3; // 6.6 + 16.5 -> 23
        x[16] = -3.9; // -7.8 + 16.5 -> 8
        x[17] = 1.0; // 2 + 16.5 -> 18
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        // Every fifth bit set but those of elements 0 (q 0) and 16 (q 8).
        let mut expected = vec![
            0x00, 0x38, 0xFE, 0xFF, 0xFE, 0xFF, 0x80, 0x2F, 0x01, 0x00, 0x07,
        ];
        expected.extend([0x00; 11]);
        assert_eq!(bytes, expected);

        let mut out = poisoned(32);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out[..5], [-8.0, 7.5, 0.5, 0.0, 3.5]);
        assert_eq!(out[16..18], [-4.0, 1.0]);
    }

    #[test]
    fn hand_computed_dot_with_q8_0() {
        // Activations: d = 0.25 (0x3400), q[k] = k - 16.
        let mut act = vec![0x00, 0x34];
        act.extend((0..32i32).map(|k| (k - 16) as i8 as u8));
        // Σ (q - 16) · y = (680 - 336) + (280 - 1192) = -568, times 0.5 · 0.25.
        assert_eq!(vec_dot_q5_0_q8_0(&hand_block(), &act), -71.0);
    }

    proptest! {
        #[test]
        fn round_trip_error_is_within_half_a_step(src in rows()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 32 * BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            for (x, y) in src.chunks(32).zip(out.chunks(32)) {
                let max = x.iter().fold(0.0f32, |m, &v| if m.abs() < v.abs() { v } else { m });
                let d = max / -16.0;
                for (&a, &b) in x.iter().zip(y) {
                    // Only values within d/2 of -max are clamped, to an error up to |d|.
                    let step = if d != 0.0 && a / d > 15.4 { d.abs() } else { d.abs() / 2.0 };
                    let bound = step + 16.0 * f16_rounding(d) + 1e-6 * a.abs();
                    prop_assert!((a - b).abs() <= bound, "{a} -> {b}, d = {d}");
                }
            }
            // Dequantized values are fixed points: max lands on -16 d again, and d on
            // itself.
            let again = quantize_checked(quantize_row, &out, bytes.len());
            let mut out2 = poisoned(src.len());
            dequantize_row(&again, &mut out2);
            prop_assert_eq!(out2, out);
        }

        #[test]
        fn integer_dot_matches_dequantized_dot((w, x) in row_pairs()) {
            let blocks = w.len() / 32;
            let row = quantize_checked(quantize_row, &w, blocks * BLOCK_BYTES);
            let act = quantize_checked(q8_0::quantize_row, &x, blocks * q8_0::BLOCK_BYTES);
            let (mut wd, mut xd) = (poisoned(w.len()), poisoned(x.len()));
            dequantize_row(&row, &mut wd);
            q8_0::dequantize_row(&act, &mut xd);
            let (exact, magnitude) = dot_f64(&wd, &xd);
            let got = vec_dot_q5_0_q8_0(&row, &act) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{got} vs {exact}");
        }
    }
}
