//! Q4_1 (ggml's `block_q4_1`): blocks of 32 values in 20 bytes. The reference model's
//! weights are stored in this format.
//!
//! ```text
//! bytes 0..2   d, f16 little endian (scale)
//! bytes 2..4   m, f16 little endian (the block minimum)
//! bytes 4..20  qs[16]: element j in the low nibble of qs[j], element j + 16 in the high one
//! value = q * d + m
//! ```

use half::f16;

use super::{debug_check_blocks, f16_at, q8_1};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 20;

/// Dequantizes whole blocks into `dst`.
///
/// Precondition: `dst.len()` is a multiple of 32 and `src.len() == dst.len() / 32 * 20`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let qs = &block[4..BLOCK_BYTES];
        for j in 0..16 {
            out[j] = f32::from(qs[j] & 0x0F) * d + m;
            out[j + 16] = f32::from(qs[j] >> 4) * d + m;
        }
    }
}

/// ggml's `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`, and
/// `q = min(15, trunc((x - min) / d + 0.5))` (round half up). The quants use the f32
/// `d` and `min`; the stored (and dequantized) ones are their f16 roundings.
///
/// Precondition: `src.len()` is a multiple of 32 and `dst.len() == src.len() / 32 * 20`.
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
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let lo = quant((x[j] - min) * id + 0.5);
            let hi = quant((x[j + 16] - min) * id + 0.5);
            block[4 + j] = lo | (hi << 4);
        }
    }
}

/// C's `MIN(15, (int8_t)v)`: truncation toward zero, then the top clamp.
fn quant(v: f32) -> u8 {
    (v as i8).min(15) as u8
}

/// Dot product of a Q4_1 row with Q8_1 activations (ggml's `ggml_vec_dot_q4_1_q8_1`,
/// generic version). Per block, `sum((q*dx + m) * qy*dy) = dx*dy*sum(q*qy) + m*sy`,
/// where the activation block carries `sy = dy * sum(qy)` precomputed.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 20 == act.len() / 36`, no remainders); debug assertion only.
pub fn vec_dot_q4_1_q8_1(row: &[u8], act: &[u8]) -> f32 {
    let blocks = row.len() / BLOCK_BYTES;
    debug_check_blocks(blocks * BLOCK_LEN, row.len(), BLOCK_LEN, BLOCK_BYTES);
    debug_check_blocks(blocks * BLOCK_LEN, act.len(), BLOCK_LEN, q8_1::BLOCK_BYTES);
    let mut sumf = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(q8_1::BLOCK_BYTES))
    {
        let (xq, yq) = (&x[4..BLOCK_BYTES], &y[4..]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = i32::from(xq[j] & 0x0F);
            let v1 = i32::from(xq[j] >> 4);
            sumi += v0 * i32::from(yq[j] as i8) + v1 * i32::from(yq[j + 16] as i8);
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
    /// qs[j] = j | (15 - j) << 4: low nibbles count up, high nibbles count down.
    fn hand_block() -> Vec<u8> {
        let mut bytes = vec![0x00, 0x38, 0x00, 0xBC];
        bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        bytes
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(32);
        dequantize_row(&hand_block(), &mut out);
        #[rustfmt::skip]
        let expected = [
            -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5,
            6.5, 6.0, 5.5, 5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [3.0f32; 32]; // (4 * 2 + 0.5) -> 8
        x[0] = -1.0; // the minimum: q = 0
        x[1] = 6.5; // the maximum: d = 7.5 / 15 = 0.5, id = 2, q = 15
        x[2] = 0.25; // 2.5 + 0.5 -> 3: halves round up
        x[16] = 2.0; // 6 + 0.5 -> 6
        x[17] = 1.1; // 4.2 + 0.5 -> 4
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        let mut expected = vec![0x00, 0x38, 0x00, 0xBC, 0x60, 0x4F, 0x83];
        expected.extend([0x88; 13]);
        assert_eq!(bytes, expected);

        let mut out = poisoned(32);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out[..3], [-1.0, 6.5, 0.5]);
        assert_eq!(out[16..18], [2.0, 1.0]);
    }

    #[test]
    fn hand_computed_dot_with_q8_1() {
        // Activations: d = 0.25 (0x3400), q[k] = k - 16, so sum(q) = -16 and
        // s = 0.25 * -16 = -4.0 (0xC400).
        let mut act = vec![0x00, 0x34, 0x00, 0xC4];
        act.extend((0..32i32).map(|k| (k - 16) as i8 as u8));
        // sum(q * qy) = (1240 - 1920) + (1800 - 1240) = -120:
        // 0.5 * 0.25 * -120 + (-1) * (-4) = -15 + 4.
        assert_eq!(vec_dot_q4_1_q8_1(&hand_block(), &act), -11.0);
    }

    #[test]
    fn constant_block_is_stored_as_its_minimum() {
        let x = [-2.75f32; 32];
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        assert_eq!(bytes[..4], [0x00, 0x00, 0x80, 0xC1]); // d = 0, m = -2.75
        let mut out = poisoned(32);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out, x);
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
                let d = (max - min) / 15.0;
                for (&a, &b) in x.iter().zip(y) {
                    // Half a step, plus the f16 roundings of d (times q <= 15) and of m.
                    let bound = d / 2.0 + 15.0 * f16_rounding(d) + f16_rounding(min)
                        + 1e-6 * (a.abs() + min.abs());
                    prop_assert!((a - b).abs() <= bound, "{a} -> {b}, d = {d}, min = {min}");
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
            // The integer path uses the stored s = f16(d * sum(q)) where the dequantized
            // activations sum to f16(d) * sum(q); allow that difference times |m|.
            let mut s_slack = 0.0f64;
            for (x, y) in row.chunks(BLOCK_BYTES).zip(act.chunks(q8_1::BLOCK_BYTES)) {
                let m = f16_at(x, 2) as f64;
                let sum_q: i32 = y[4..].iter().map(|&q| i32::from(q as i8)).sum();
                let s = f16_at(y, 2) as f64;
                let s_deq = f16_at(y, 0) as f64 * sum_q as f64;
                s_slack += m.abs() * ((s - s_deq).abs() + 1e-6 * s.abs());
            }
            let got = vec_dot_q4_1_q8_1(&row, &act) as f64;
            let tol = 1e-5 * magnitude + s_slack + 1e-30;
            prop_assert!((got - exact).abs() <= tol, "{got} vs {exact} (tol {tol})");
        }
    }
}
