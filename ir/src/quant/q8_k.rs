//! Q8_K (ggml's `block_q8_K`): the activation blocks the K-quant weights are dotted
//! with. 256 values in 292 bytes:
//!
//! ```text
//! bytes 0..4      d, f32 little endian
//! bytes 4..260    qs[256], i8
//! bytes 260..292  bsums[16], i16 little endian: bsums[j] = sum of qs[16 j .. 16 j + 16]
//! value = q * d
//! ```
//!
//! The block sums let a K-quant dot apply its sub-block minimums (Q4_K, Q5_K) or its
//! offset of 32 (Q6_K) with one multiply per sub-block instead of one per value.

use super::debug_check_blocks;
use super::k_common::{QK_K, nearest_int};

pub const BLOCK_LEN: usize = QK_K;
pub const BLOCK_BYTES: usize = 292;
/// Byte offset of the quants.
pub const QS_AT: usize = 4;
/// Byte offset of the 16 block sums.
pub const BSUMS_AT: usize = 260;

/// The f32 scale `d` of a block.
#[inline(always)]
pub fn block_d(block: &[u8]) -> f32 {
    f32::from_le_bytes([block[0], block[1], block[2], block[3]])
}

/// Block sum `j` (0..16) of a block.
#[inline(always)]
pub fn block_bsum(block: &[u8], j: usize) -> i16 {
    i16::from_le_bytes([block[BSUMS_AT + 2 * j], block[BSUMS_AT + 2 * j + 1]])
}

/// Dequantizes whole blocks into `dst` (ggml's `dequantize_row_q8_K`: `d * q`).
///
/// Precondition: `dst.len()` is a multiple of 256 and `src.len() == dst.len() / 256 * 292`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = block_d(block);
        for (o, &q) in out.iter_mut().zip(&block[QS_AT..BSUMS_AT]) {
            *o = d * f32::from(q as i8);
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`: the value of largest magnitude, sign kept, sets
/// `iscale = -127 / max`, `q = min(127, nearest_int(iscale * x))` (ties to even),
/// `d = 1 / iscale` (kept in f32). Quants therefore lie in -127..=127. An all-zero
/// block is stored as zeros (ggml leaves its block sums unwritten; here they are 0).
///
/// Precondition: `src.len()` is a multiple of 256 and `dst.len() == src.len() / 256 * 292`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        let mut nan = false;
        for &v in x {
            let ax = v.abs();
            nan |= v.is_nan();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if nan {
            // ggml's maximum skips a NaN, so the block would quantize to numbers: keep it
            // in the scale instead, so that it reaches the dot products (and the engine
            // refuses the logits) rather than vanish.
            block.fill(0);
            block[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
            continue;
        }
        if amax == 0.0 {
            block.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let (qs, bsums) = block[QS_AT..].split_at_mut(BSUMS_AT - QS_AT);
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for (j, sum) in bsums.chunks_exact_mut(2).enumerate() {
            let s: i32 = qs[16 * j..16 * j + 16]
                .iter()
                .map(|&q| i32::from(q as i8))
                .sum();
            sum.copy_from_slice(&(s as i16).to_le_bytes());
        }
        block[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// Dot product of a Q8_K row with Q8_K activations: per block `d_x · d_y · Σ x · y`.
/// (ggml has no Q8_K weights; this is the twin of kiln's own Q8_K path.)
///
/// Precondition: `row.len() == act.len()`, a multiple of 292; debug assertion only.
pub fn vec_dot_q8_k_q8_k(row: &[u8], act: &[u8]) -> f32 {
    debug_assert_eq!(row.len(), act.len(), "vec_dot_q8_k_q8_k of unequal lengths");
    let mut sumf = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(BLOCK_BYTES))
    {
        let mut sumi = 0i32;
        for (&a, &b) in x[QS_AT..BSUMS_AT].iter().zip(&y[QS_AT..BSUMS_AT]) {
            sumi += i32::from(a as i8) * i32::from(b as i8);
        }
        sumf += (block_d(x) * block_d(y)) * sumi as f32;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    #[test]
    fn a_nan_stays_in_the_scale() {
        let mut x: Vec<f32> = (0..BLOCK_LEN).map(|i| i as f32 - 100.0).collect();
        x[17] = f32::NAN;
        let mut block = vec![0xAAu8; BLOCK_BYTES];
        quantize_row(&x, &mut block);
        assert!(f32::from_le_bytes(block[0..4].try_into().unwrap()).is_nan());
        assert!(block[4..].iter().all(|&b| b == 0));
        let mut out = vec![0.0f32; BLOCK_LEN];
        dequantize_row(&block, &mut out);
        assert!(out.iter().all(|v| v.is_nan()));
    }

    /// One hand-written block: d = 0.5, q[k] = (k % 64) - 32 (so every block sum of 16
    /// is known: 16 j' - 32 · 16 + 120 for j' the start of its run).
    fn hand_block() -> Vec<u8> {
        let mut b = 0.5f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|k| ((k % 64) as i32 - 32) as i8 as u8));
        for j in 0..16 {
            let s: i32 = (0..16).map(|i| ((16 * j + i) % 64) - 32).sum();
            b.extend((s as i16).to_le_bytes());
        }
        b
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(256);
        dequantize_row(&hand_block(), &mut out);
        for (k, &v) in out.iter().enumerate() {
            assert_eq!(v, ((k % 64) as f32 - 32.0) * 0.5, "{k}");
        }
    }

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [0.3f32; 256]; // -2.4 -> -2
        x[0] = 15.875; // the largest magnitude: iscale = -127 / 15.875 = -8, d = -0.125
        x[1] = -15.875; // 127
        x[2] = 0.3125; // -2.5 -> -2 (ties to even)
        x[3] = 0.4375; // -3.5 -> -4
        x[17] = -1.25; // 10
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        assert_eq!(block_d(&bytes), -0.125);
        let q: Vec<i8> = bytes[QS_AT..BSUMS_AT].iter().map(|&q| q as i8).collect();
        assert_eq!(q[..5], [-127, 127, -2, -4, -2]);
        assert_eq!(q[17], 10);
        assert!(q[18..].iter().all(|&q| q == -2));
        // Block sum 0: -127 + 127 - 2 - 4 + 12 · -2; block sum 1: 10 + 15 · -2.
        assert_eq!(block_bsum(&bytes, 0), -30);
        assert_eq!(block_bsum(&bytes, 1), -20);
        assert_eq!(block_bsum(&bytes, 15), -32);
        let mut out = poisoned(256);
        dequantize_row(&bytes, &mut out);
        assert_eq!(out[..4], [15.875, -15.875, 0.25, 0.5]);
    }

    #[test]
    fn hand_computed_dot() {
        let b = hand_block();
        // Σ q² over a run of -32..=31 is 11_440 + 10_416; four runs, times 0.5 · 0.5.
        assert_eq!(vec_dot_q8_k_q8_k(&b, &b), 21_856.0);
    }

    proptest! {
        #[test]
        fn round_trip_error_is_within_half_a_step(src in rows_k()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 256 * BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            for ((x, y), block) in src.chunks(256).zip(out.chunks(256)).zip(bytes.chunks(BLOCK_BYTES)) {
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                for (&a, &b) in x.iter().zip(y) {
                    prop_assert!((a - b).abs() <= d / 2.0 + 1e-6 * amax, "{a} -> {b}, d = {d}");
                }
                for j in 0..16 {
                    let s: i32 = block[QS_AT + 16 * j..][..16].iter().map(|&q| i32::from(q as i8)).sum();
                    prop_assert_eq!(i32::from(block_bsum(block, j)), s);
                }
            }
        }
    }
}
