//! Q5_1 (ggml's `block_q5_1`): blocks of 32 values in 24 bytes.
//!
//! ```text
//! bytes 0..2   d, f16 little endian (scale)
//! bytes 2..4   m, f16 little endian (the block minimum)
//! bytes 4..8   qh, u32 little endian: bit j is the fifth bit of element j
//! bytes 8..24  qs[16]: element j in the low nibble of qs[j], element j + 16 in the high one
//! value = q * d + m, q = nibble | fifth bit << 4 in 0..=31
//! ```

use half::f16;

use super::q5_0::{pack5, qh_at, quants5};
use super::{debug_check_blocks, f16_at, q8_1};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 24;

/// Dequantizes whole blocks into `dst` (ggml's `dequantize_row_q5_1`: `q * d + m`).
///
/// Precondition: `dst.len()` is a multiple of 32 and `src.len() == dst.len() / 32 * 24`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let q = quants5(&block[8..BLOCK_BYTES], qh_at(block, 4));
        for (o, &q) in out.iter_mut().zip(&q) {
            *o = f32::from(q) * d + m;
        }
    }
}

/// ggml's `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`, and
/// `q = trunc((x - min) / d + 0.5)` (round half up; ggml has no top clamp here, and none
/// is reached). The quants use the f32 `d` and `min`; the stored ones are their f16
/// roundings.
///
/// Precondition: `src.len()` is a multiple of 32 and `dst.len() == src.len() / 32 * 24`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // C's `(uint8_t)v` of a value in 0.5..=31.5 (Rust's cast saturates outside).
        let q: [u8; 32] = std::array::from_fn(|i| ((x[i] - min) * id + 0.5) as u8);
        block[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
        let qh = pack5(&q, &mut block[8..BLOCK_BYTES]);
        block[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Dot product of a Q5_1 row with Q8_1 activations (ggml's `ggml_vec_dot_q5_1_q8_1`,
/// generic version): per block `d_x d_y Σ q · y + m · s`, `s = d_y Σ y` being stored in
/// the activation block.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 24 == act.len() / 36`); debug assertion only.
pub fn vec_dot_q5_1_q8_1(row: &[u8], act: &[u8]) -> f32 {
    let blocks = row.len() / BLOCK_BYTES;
    debug_check_blocks(blocks * BLOCK_LEN, row.len(), BLOCK_LEN, BLOCK_BYTES);
    debug_check_blocks(blocks * BLOCK_LEN, act.len(), BLOCK_LEN, q8_1::BLOCK_BYTES);
    let mut sumf = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(q8_1::BLOCK_BYTES))
    {
        let q = quants5(&x[8..BLOCK_BYTES], qh_at(x, 4));
        let mut sumi = 0i32;
        for (&q, &y) in q.iter().zip(&y[4..]) {
            sumi += i32::from(q) * i32::from(y as i8);
        }
        sumf += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32 + f16_at(x, 2) * f16_at(y, 2);
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    /// One hand-written block: d = 0.5 (f16 0x3800), m = -1.0 (0xBC00),
    /// qh = 0x00FF_5555 (fifth bits of the even elements of 0..16 and of 16..24),
    /// qs[j] = j | (15 - j) << 4.
    fn hand_block() -> Vec<u8> {
        let mut bytes = vec![0x00, 0x38, 0x00, 0xBC, 0x55, 0x55, 0xFF, 0x00];
        bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        bytes
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(32);
        dequantize_row(&hand_block(), &mut out);
        #[rustfmt::skip]
        let expected = [
            // q = j + 16 for even j, j for odd j; q / 2 - 1
            7.0, -0.5, 8.0, 0.5, 9.0, 1.5, 10.0, 2.5, 11.0, 3.5, 12.0, 4.5, 13.0, 5.5, 14.0, 6.5,
            // q = 31 - j for j < 8, 15 - j above
            14.5, 14.0, 13.5, 13.0, 12.5, 12.0, 11.5, 11.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [3.0f32; 32]; // 8 + 0.5 -> 8
        x[0] = -1.0; // the minimum: q = 0
        x[1] = 14.5; // the maximum: d = 15.5 / 31 = 0.5, id = 2, q = 31
        x[2] = 0.25; // 2.5 + 0.5 -> 3: halves round up
        x[16] = 7.0; // 16 + 0.5 -> 16
        x[17] = 1.1; // 4.2 + 0.5 -> 4
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        // Fifth bits: element 1 (q 31) and element 16 (q 16).
        let mut expected = vec![
            0x00, 0x38, 0x00, 0xBC, 0x02, 0x00, 0x01, 0x00, 0x00, 0x4F, 0x83,
        ];
        expected.extend([0x88; 13]);
        assert_eq!(bytes, expected);

        let mut out = poisoned(32);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out[..3], [-1.0, 14.5, 0.5]);
        assert_eq!(out[16..18], [7.0, 1.0]);
    }

    #[test]
    fn hand_computed_dot_with_q8_1() {
        // Activations: d = 0.25 (0x3400), q[k] = k - 16, s = 0.25 · -16 = -4.0 (0xC400).
        let mut act = vec![0x00, 0x34, 0x00, 0xC4];
        act.extend((0..32i32).map(|k| (k - 16) as i8 as u8));
        // Σ q · y = -1832 + 1008 = -824: 0.5 · 0.25 · -824 + (-1) · (-4) = -103 + 4.
        assert_eq!(vec_dot_q5_1_q8_1(&hand_block(), &act), -99.0);
    }

    proptest! {
        #[test]
        fn round_trip_error_is_within_half_a_step(src in rows()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 32 * BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            for (x, y) in src.chunks(32).zip(out.chunks(32)) {
                let min = x.iter().copied().fold(f32::MAX, f32::min);
                let max = x.iter().copied().fold(-f32::MAX, f32::max);
                let d = (max - min) / 31.0;
                for (&a, &b) in x.iter().zip(y) {
                    // Half a step, plus the f16 roundings of d (times q <= 31) and of m.
                    let bound = d / 2.0 + 31.0 * f16_rounding(d) + f16_rounding(min)
                        + 1e-6 * (a.abs() + min.abs());
                    prop_assert!((a - b).abs() <= bound, "{a} -> {b}, d = {d}, min = {min}");
                }
            }
            // Dequantized values are (nearly) fixed points: min and d come back up to an
            // f32 rounding, which the f16 storage and the +0.5 absorb.
            let again = quantize_checked(quantize_row, &out, bytes.len());
            let mut out2 = poisoned(src.len());
            dequantize_row(&again, &mut out2);
            for (y, z) in out.chunks(32).zip(out2.chunks(32)) {
                let span = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (&a, &b) in y.iter().zip(z) {
                    prop_assert!((a - b).abs() <= 1e-6 * span, "{a} -> {b}");
                }
            }
        }

        #[test]
        fn integer_dot_matches_dequantized_dot((w, x) in row_pairs()) {
            let blocks = w.len() / 32;
            let row = quantize_checked(quantize_row, &w, blocks * BLOCK_BYTES);
            let act = quantize_checked(q8_1::quantize_row, &x, blocks * q8_1::BLOCK_BYTES);
            let (mut wd, mut xd) = (poisoned(w.len()), poisoned(x.len()));
            dequantize_row(&row, &mut wd);
            q8_1::dequantize_row(&act, &mut xd);
            let (exact, magnitude) = dot_f64(&wd, &xd);
            // The integer path uses the stored s = f16(d · Σ q) where the dequantized
            // activations sum to f16(d) · Σ q; allow that difference times |m|.
            let mut s_slack = 0.0f64;
            for (x, y) in row.chunks(BLOCK_BYTES).zip(act.chunks(q8_1::BLOCK_BYTES)) {
                let m = f16_at(x, 2) as f64;
                let sum_q: i32 = y[4..].iter().map(|&q| i32::from(q as i8)).sum();
                let s = f16_at(y, 2) as f64;
                let s_deq = f16_at(y, 0) as f64 * sum_q as f64;
                s_slack += m.abs() * ((s - s_deq).abs() + 1e-6 * s.abs());
            }
            let got = vec_dot_q5_1_q8_1(&row, &act) as f64;
            let tol = 1e-5 * magnitude + s_slack + 1e-30;
            prop_assert!((got - exact).abs() <= tol, "{got} vs {exact} (tol {tol})");
        }
    }
}
