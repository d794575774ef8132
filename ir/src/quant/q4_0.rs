//! Q4_0 (ggml's `block_q4_0`): blocks of 32 values in 18 bytes.
//!
//! ```text
//! bytes 0..2   d, f16 little endian
//! bytes 2..18  qs[16]: element j in the low nibble of qs[j], element j + 16 in the high one
//! value = (q - 8) * d
//! ```

use half::f16;

use super::{debug_check_blocks, f16_at};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 18;

/// Dequantizes whole blocks into `dst`.
///
/// Precondition: `dst.len()` is a multiple of 32 and `src.len() == dst.len() / 32 * 18`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        let qs = &block[2..BLOCK_BYTES];
        for j in 0..16 {
            out[j] = (i32::from(qs[j] & 0x0F) - 8) as f32 * d;
            out[j + 16] = (i32::from(qs[j] >> 4) - 8) as f32 * d;
        }
    }
}

/// ggml's `quantize_row_q4_0_ref`, the quantizer that made the model files.
///
/// The value of largest magnitude, sign kept, sets `d = max / -8`, so it lands exactly
/// on q = 0 and the 16 levels are spent on its side: a value near `-max` is clamped to
/// q = 15, i.e. `7 * d`, an error of up to `|d|` rather than `|d| / 2`.
/// `x / d + 8.5` truncated is round-half-up. The scale used for the quants is the f32
/// `d`; the stored (and dequantized) one is its f16 rounding.
///
/// Precondition: `src.len()` is a multiple of 32 and `dst.len() == src.len() / 32 * 18`.
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
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let lo = quant(x[j] * id + 8.5);
            let hi = quant(x[j + 16] * id + 8.5);
            block[2 + j] = lo | (hi << 4);
        }
    }
}

/// C's `MIN(15, (int8_t)v)`: truncation toward zero, then the top clamp.
fn quant(v: f32) -> u8 {
    (v as i8).min(15) as u8
}

/// Dot product of a Q4_0 row with Q8_0 activations (ggml's `ggml_vec_dot_q4_0_q8_0`,
/// generic version): an integer dot per block, scaled by both blocks' `d`.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 18 == act.len() / 34`, no remainders); debug assertion only.
pub fn vec_dot_q4_0_q8_0(row: &[u8], act: &[u8]) -> f32 {
    let blocks = row.len() / BLOCK_BYTES;
    debug_check_blocks(blocks * BLOCK_LEN, row.len(), BLOCK_LEN, BLOCK_BYTES);
    debug_check_blocks(
        blocks * BLOCK_LEN,
        act.len(),
        BLOCK_LEN,
        super::q8_0::BLOCK_BYTES,
    );
    let mut sumf = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(super::q8_0::BLOCK_BYTES))
    {
        let (xq, yq) = (&x[2..BLOCK_BYTES], &y[2..]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = i32::from(xq[j] & 0x0F) - 8;
            let v1 = i32::from(xq[j] >> 4) - 8;
            sumi += v0 * i32::from(yq[j] as i8) + v1 * i32::from(yq[j + 16] as i8);
        }
        sumf += sumi as f32 * f16_at(x, 0) * f16_at(y, 0);
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::q8_0;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    /// Two hand-written blocks. Block 0: d = 0.5 (f16 0x3800), qs[j] = j | (15 - j) << 4,
    /// so the low nibbles count up 0..15 (elements 0..16) and the high ones count down
    /// (elements 16..32). Block 1: d = -2.0 (0xC000), every byte 0x9F: low 15, high 9.
    fn hand_blocks() -> Vec<u8> {
        let mut bytes = vec![0x00, 0x38];
        bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        bytes.extend([0x00, 0xC0]);
        bytes.extend([0x9F; 16]);
        bytes
    }

    #[test]
    fn dequantizes_hand_written_blocks() {
        let mut out = poisoned(64);
        dequantize_row(&hand_blocks(), &mut out);
        #[rustfmt::skip]
        let block0 = [
            -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5,
            3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0,
        ];
        assert_eq!(out[..32], block0);
        // (15 - 8) * -2 = -14 for the low nibbles, (9 - 8) * -2 = -2 for the high ones.
        assert_eq!(out[32..48], [-14.0; 16]);
        assert_eq!(out[48..64], [-2.0; 16]);
    }

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [0.0f32; 32];
        x[0] = -4.0; // largest magnitude: d = -4 / -8 = 0.5, id = 2, q = 0
        x[1] = 1.0; // 2 + 8.5 -> 10
        x[2] = 0.25; // 0.5 + 8.5 -> 9: halves round up
        x[3] = -0.25; // -0.5 + 8.5 -> 8
        x[16] = 4.0; // 8 + 8.5 = 16.5 -> clamped to 15, dequantizes to 3.5
        x[17] = -3.3; // -6.6 + 8.5 = 1.9 -> 1
        for v in &mut x[4..16] {
            *v = 0.1; // 0.2 + 8.5 -> 8
        }
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        let mut expected = vec![0x00, 0x38, 0xF0, 0x1A, 0x89, 0x88];
        expected.extend([0x88; 12]);
        assert_eq!(bytes, expected);

        let mut out = poisoned(32);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out[..4], [-4.0, 1.0, 0.5, 0.0]);
        assert_eq!(out[16..18], [3.5, -3.5]);
    }

    #[test]
    fn hand_computed_dot_with_q8_0() {
        let row = &hand_blocks()[..BLOCK_BYTES];
        // Activations: d = 0.25 (0x3400), q[k] = k - 16.
        let mut act = vec![0x00, 0x34];
        act.extend((0..32i32).map(|k| (k - 16) as i8 as u8));
        // Weights q - 8 are k - 8 for k < 16 and 23 - k above: the integer dot is
        // 408 + (-400) = 8, times 0.5 * 0.25.
        assert_eq!(vec_dot_q4_0_q8_0(row, &act), 1.0);
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
                let d = max / -8.0;
                for (&a, &b) in x.iter().zip(y) {
                    // Only values within d/2 of -max are clamped, to an error up to |d|.
                    let step = if d != 0.0 && a / d > 7.4 { d.abs() } else { d.abs() / 2.0 };
                    let bound = step + 8.0 * f16_rounding(d) + 1e-6 * a.abs();
                    prop_assert!((a - b).abs() <= bound, "{a} -> {b}, d = {d}");
                }
            }
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
            let got = vec_dot_q4_0_q8_0(&row, &act) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{got} vs {exact}");
        }
    }
}
