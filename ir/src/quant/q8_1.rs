//! Q8_1 (ggml's `block_q8_1`): the activation blocks dotted with Q4_1 weights. Not a
//! tensor storage type, so it has no [`crate::DType`]. 32 values in 36 bytes:
//!
//! ```text
//! bytes 0..2   d, f16 little endian
//! bytes 2..4   s = d * sum(q), f16 little endian: lets the Q4_1 dot apply the weight
//!              block's minimum m with one multiply (m * s) instead of 32
//! bytes 4..36  qs[32], i8
//! value = q * d
//! ```

use half::f16;

use super::{debug_check_blocks, f16_at, q8_0};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 36;

/// ggml's `quantize_row_q8_1_ref`: the Q8_0 scale and rounding, plus
/// `s = f16(sum(q) * d)` computed with the f32 `d` (not its f16 rounding).
///
/// Precondition: `src.len()` is a multiple of 32 and `dst.len() == src.len() / 32 * 36`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let (d, sum) = q8_0::quantize_block(x, &mut block[4..BLOCK_BYTES]);
        block[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(sum as f32 * d).to_le_bytes());
    }
}

/// Dequantizes whole blocks into `dst` (`q * d`; `s` is not needed).
///
/// Precondition: `dst.len()` is a multiple of 32 and `src.len() == dst.len() / 32 * 36`.
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        for (o, &q) in out.iter_mut().zip(&block[4..BLOCK_BYTES]) {
            *o = f32::from(q as i8) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [1.5f32; 32]; // 3
        x[0] = -63.5; // amax: d = 0.5 (f16 0x3800), id = 2, q = -127
        x[1] = 63.5; // 127
        x[2] = 0.25; // 0.5 -> 1 (halves away from zero)
        x[3] = -0.75; // -1.5 -> -2
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        // sum(q) = -127 + 127 + 1 - 2 + 28 * 3 = 83; s = 41.5 = f16 0x5130.
        assert_eq!(bytes[..4], [0x00, 0x38, 0x30, 0x51]);
        assert_eq!(bytes[4..8], [0x81, 0x7F, 0x01, 0xFE]);
        assert!(bytes[8..].iter().all(|&q| q == 3));

        let mut out = poisoned(32);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out[..4], [-63.5, 63.5, 0.5, -1.0]);
        assert!(out[4..].iter().all(|&v| v == 1.5));
    }

    #[test]
    fn sum_uses_the_f32_scale() {
        // d = 1 / 127 is not an f16; s must be f16(sum * d32), as in ggml.
        let x: Vec<f32> = (0..32).map(|k| if k == 5 { 1.0 } else { 0.3 }).collect();
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        let d32 = 1.0f32 / 127.0;
        let sum: i32 = bytes[4..].iter().map(|&q| i32::from(q as i8)).sum();
        assert_eq!(sum, 127 + 31 * 38); // 0.3 * 127 = 38.1 -> 38
        assert_eq!(bytes[2..4], f16::from_f32(sum as f32 * d32).to_le_bytes());
    }

    proptest! {
        #[test]
        fn round_trip_and_sum_are_consistent(src in rows()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 32 * BLOCK_BYTES);
            // The quants and d are exactly those of Q8_0.
            let q8 = quantize_checked(q8_0::quantize_row, &src, src.len() / 32 * q8_0::BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            for ((x, y), (b1, b0)) in src.chunks(32).zip(out.chunks(32))
                .zip(bytes.chunks(BLOCK_BYTES).zip(q8.chunks(q8_0::BLOCK_BYTES)))
            {
                prop_assert_eq!(&b1[..2], &b0[..2]);
                prop_assert_eq!(&b1[4..], &b0[2..]);
                let (d, _) = q8_0::scale(x);
                for (&a, &b) in x.iter().zip(y) {
                    let bound = d / 2.0 + 127.0 * f16_rounding(d) + 1e-6 * a.abs();
                    prop_assert!((a - b).abs() <= bound, "{a} -> {b}, d = {d}");
                }
                let sum: i32 = b1[4..].iter().map(|&q| i32::from(q as i8)).sum();
                let s = f16_at(b1, 2);
                let exact = sum as f32 * d;
                prop_assert!((s - exact).abs() <= f16_rounding(exact) + 1e-6 * exact.abs());
            }
        }
    }
}
