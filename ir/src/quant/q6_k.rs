//! Q6_K (ggml's `block_q6_K`): super-blocks of 256 values in 210 bytes, 16 sub-blocks
//! of 16 with a signed 8-bit scale each. Q4_K_M files keep the output head and some
//! FFN down projections in this format.
//!
//! ```text
//! bytes 0..128    ql[128]: low 4 bits. Half h (128 values) uses ql[64h .. 64h + 64]:
//!                 element 128h + l (l < 32) in the low nibble of ql[64h + l],
//!                 128h + 32 + l in the low nibble of ql[64h + 32 + l],
//!                 128h + 64 + l in the high nibble of ql[64h + l],
//!                 128h + 96 + l in the high nibble of ql[64h + 32 + l]
//! bytes 128..192  qh[64]: high 2 bits; qh[32h + l] holds those four elements' bits at
//!                 shifts 0, 2, 4, 6
//! bytes 192..208  scales[16], i8: the scale of sub-block j (elements 16j .. 16j + 16)
//! bytes 208..210  d, f16 little endian
//! value = d * scales[j] * (q - 32), q in 0..=63
//! ```

use half::f16;

use super::k_common::{GROUP_MAX_EPS, QK_K, make_qx_quants, nearest_int};
use super::{debug_check_blocks, f16_at, q8_k};

pub const BLOCK_LEN: usize = QK_K;
pub const BLOCK_BYTES: usize = 210;
/// Byte offsets of the high bits, the scales and `d`.
pub const QH_AT: usize = 128;
pub const SCALES_AT: usize = 192;
pub const D_AT: usize = 208;

/// The 256 quants (0..=63, before the offset of 32) of a block, in element order.
#[inline(always)]
fn quants(block: &[u8]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        let ql = &block[64 * h..64 * h + 64];
        let qh = &block[QH_AT + 32 * h..QH_AT + 32 * h + 32];
        let out = &mut q[128 * h..128 * h + 128];
        for l in 0..32 {
            out[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// Dequantizes whole blocks into `dst` (ggml's `dequantize_row_q6_K`:
/// `(d * sc) * (q - 32)`).
///
/// Precondition: `dst.len()` is a multiple of 256 and `src.len() == dst.len() / 256 * 210`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, D_AT);
        let q = quants(block);
        for (j, (out, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let ds = d * f32::from(block[SCALES_AT + j] as i8);
            for (o, &q) in out.iter_mut().zip(q) {
                *o = ds * f32::from(q as i8 - 32);
            }
        }
    }
}

/// ggml's `quantize_row_q6_K_ref`: per sub-block of 16, `make_qx_quants` (32 levels each
/// side, error weighted by x²); the scale of largest magnitude, sign kept, sets
/// `iscale = -128 / max_scale`, `d = f16(1 / iscale)`, and each sub-block scale is
/// `min(127, nearest_int(iscale * scale))`; then every quant is recomputed with the
/// stored scales, `q = clamp(nearest_int(x / (d sc)), -32, 31) + 32`. A super-block whose
/// scales are all below 1e-15 is stored as zeros.
///
/// Precondition: `src.len()` is a multiple of 256 and `dst.len() == src.len() / 256 * 210`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut l = [0u8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for (j, scale) in scales.iter_mut().enumerate() {
            *scale = make_qx_quants(32, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = *scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            block.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        block[D_AT..D_AT + 2].copy_from_slice(&d.to_le_bytes());
        for (j, &scale) in scales.iter().enumerate() {
            // C's `int8_t = MIN(127, nearest_int(..))`: the int is cut to its low byte.
            block[SCALES_AT + j] = nearest_int(iscale * scale).min(127) as i8 as u8;
        }
        for j in 0..16 {
            let dj = d.to_f32() * f32::from(block[SCALES_AT + j] as i8);
            if dj == 0.0 {
                continue;
            }
            for i in 0..16 {
                let q = nearest_int(x[16 * j + i] / dj).clamp(-32, 31);
                l[16 * j + i] = (q + 32) as u8;
            }
        }
        let (ql, qh) = block[..SCALES_AT].split_at_mut(QH_AT);
        for h in 0..2 {
            let lh = &l[128 * h..128 * h + 128];
            for i in 0..32 {
                let (q1, q2, q3, q4) = (lh[i], lh[i + 32], lh[i + 64], lh[i + 96]);
                ql[64 * h + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[64 * h + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// Dot product of a Q6_K row with Q8_K activations. Per super-block the exact integer
/// `sumi = Σ_j sc_j (Σ q·y - 32 bsum_j)` over the 16 sub-blocks, then
/// `acc += (d dy) sumi`. The SIMD kernels compute the same integer and chain.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 210 == act.len() / 292`); debug assertion only.
pub fn vec_dot_q6_k_q8_k(row: &[u8], act: &[u8]) -> f32 {
    let blocks = row.len() / BLOCK_BYTES;
    debug_check_blocks(blocks * BLOCK_LEN, row.len(), BLOCK_LEN, BLOCK_BYTES);
    debug_check_blocks(blocks * BLOCK_LEN, act.len(), BLOCK_LEN, q8_k::BLOCK_BYTES);
    let mut acc = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(q8_k::BLOCK_BYTES))
    {
        let q = quants(x);
        let yq = &y[q8_k::QS_AT..q8_k::BSUMS_AT];
        let mut sumi = 0i32;
        for j in 0..16 {
            let dot: i32 = q[16 * j..16 * j + 16]
                .iter()
                .zip(&yq[16 * j..16 * j + 16])
                .map(|(&q, &y)| i32::from(q) * i32::from(y as i8))
                .sum();
            let bsum = i32::from(q8_k::block_bsum(y, j));
            sumi += i32::from(x[SCALES_AT + j] as i8) * (dot - 32 * bsum);
        }
        acc += (f16_at(x, D_AT) * q8_k::block_d(y)) * sumi as f32;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    const SCALES: [i8; 16] = [1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 127, -128];

    /// One hand-written super-block: ql[i] = i % 16 | (15 - i % 16) << 4, every qh byte
    /// 0xE4 (high bits 0, 1, 2, 3 at shifts 0, 2, 4, 6), the scales SCALES, d = 0.25
    /// (f16 0x3400).
    fn hand_block() -> Vec<u8> {
        let mut b: Vec<u8> = (0..128usize)
            .map(|i| (i % 16) as u8 | ((15 - i % 16) as u8) << 4)
            .collect();
        b.extend([0xE4; 64]);
        b.extend(SCALES.map(|s| s as u8));
        b.extend([0x00, 0x34]);
        b
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(256);
        dequantize_row(&hand_block(), &mut out);
        for (e, &v) in out.iter().enumerate() {
            let l = e % 16;
            // By the quarter of its half: low nibble with high bits 0, low nibble with 1,
            // high nibble (15 - l) with 2, high nibble with 3; minus 32.
            let q = match (e % 128) / 32 {
                0 => l as i32 - 32,
                1 => l as i32 - 16,
                2 => 15 - l as i32,
                _ => 31 - l as i32,
            };
            let want = 0.25 * f32::from(SCALES[e / 16]) * q as f32;
            assert_eq!(v, want, "element {e}");
        }
        assert_eq!(out[..2], [-8.0, -7.75]);
        assert_eq!(out[16..18], [8.0, 7.75]);
        assert_eq!(out[240..242], [-0.25 * 128.0 * 31.0, -0.25 * 128.0 * 30.0]);
    }

    #[test]
    fn hand_computed_dot_with_q8_k() {
        // Activations: d = 1, every quant 1, block sums 16.
        let mut act = 1.0f32.to_le_bytes().to_vec();
        act.extend([1u8; 256]);
        for _ in 0..16 {
            act.extend(16i16.to_le_bytes());
        }
        // Sub-block sums of q - 32 by quarter: -392, -136, 120, 376. The first half's
        // scales cancel in pairs; the second half gives 5·0 + 6·0 + 7·0 + 127·376 - 128·376.
        assert_eq!(vec_dot_q6_k_q8_k(&hand_block(), &act), 0.25 * -376.0);
    }

    #[test]
    fn zeros_quantize_to_zeros() {
        let bytes = quantize_checked(quantize_row, &[0.0; 256], BLOCK_BYTES);
        assert!(bytes.iter().all(|&b| b == 0));
    }

    #[test]
    fn quantizes_a_symmetric_ramp() {
        // x = q - 32 for q = 0..64 (four times): every sub-block scale comes out 1 or
        // about it, and the round trip is within the step.
        let x: Vec<f32> = (0..256).map(|i| (i % 64) as f32 - 32.0).collect();
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        let mut out = poisoned(256);
        dequantize_row(&bytes, &mut out);
        for (&a, &b) in x.iter().zip(&out) {
            assert!((a - b).abs() <= 1.0, "{a} -> {b}");
        }
    }

    proptest! {
        #[test]
        fn round_trip_error_is_bounded(src in rows_k()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 256 * BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            check_round_trip_k(&src, &out, 64.0)?;
            let again = quantize_checked(quantize_row, &out, bytes.len());
            let mut out2 = poisoned(src.len());
            dequantize_row(&again, &mut out2);
            check_round_trip_k(&out, &out2, 64.0)?;
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
            let got = vec_dot_q6_k_q8_k(&row, &act) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{got} vs {exact}");
        }
    }
}
