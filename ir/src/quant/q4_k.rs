//! Q4_K (ggml's `block_q4_K`): super-blocks of 256 values in 144 bytes, 8 sub-blocks
//! of 32 with a 6-bit scale and a 6-bit minimum each. Gemma 3 270M Q4_K_M stores its
//! FFN and attention output weights in this format.
//!
//! ```text
//! bytes 0..2     d, f16 little endian (scale of the sub-block scales)
//! bytes 2..4     dmin, f16 little endian (scale of the sub-block minimums)
//! bytes 4..16    scales[12]: 8 six-bit scales sc and 8 six-bit minimums m, packed as
//!                k_common::scale_min_k4 reads them
//! bytes 16..144  qs[128]: 4 chunks of 32 bytes; chunk c holds sub-block 2c in its low
//!                nibbles and sub-block 2c + 1 in its high nibbles
//! value = d * sc[j] * q - dmin * m[j] for an element of sub-block j
//! ```

use super::k_common::{QK_K, dot_super_block_qkx, quantize_super_block_qkx, scale_min_k4};
use super::{debug_check_blocks, f16_at, q8_k};

pub const BLOCK_LEN: usize = QK_K;
pub const BLOCK_BYTES: usize = 144;
/// Byte offset of the quants.
pub const QS_AT: usize = 16;

/// The 256 quants (0..=15) of a block, in element order.
#[inline(always)]
fn quants(block: &[u8]) -> [u8; QK_K] {
    let qs = &block[QS_AT..BLOCK_BYTES];
    let mut q = [0u8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            q[64 * c + l] = qs[32 * c + l] & 0xF;
            q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
    }
    q
}

/// Dequantizes whole blocks into `dst` (ggml's `dequantize_row_q4_K`:
/// `(d * sc) * q - dmin * m`, each product rounded to f32 as the C source writes it).
///
/// Precondition: `dst.len()` is a multiple of 256 and `src.len() == dst.len() / 256 * 144`
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

/// ggml's `quantize_row_q4_K_ref`: per sub-block of 32, `make_qkx2_quants` (15 levels,
/// weights `sqrt(mean(x²)) + |x|`, 21 trial scales from `(14 + 0.1 is) / range`); the 8
/// scales and minimums quantized to 6 bits against their maxima (`d = max_scale / 63`,
/// `dmin = max_min / 63`, both f16); then every quant recomputed with the stored
/// scales, `q = clamp(nearest_int((x + dmin m) / (d sc)), 0, 15)`.
///
/// Precondition: `src.len()` is a multiple of 256 and `dst.len() == src.len() / 256 * 144`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut l = [0u8; QK_K];
        let (d, dmin, scales) = quantize_super_block_qkx(x, 15, -1.0, 20, &mut l);
        block[0..2].copy_from_slice(&d.to_le_bytes());
        block[2..4].copy_from_slice(&dmin.to_le_bytes());
        block[4..16].copy_from_slice(&scales);
        let qs = &mut block[QS_AT..BLOCK_BYTES];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}

/// Dot product of a Q4_K row with Q8_K activations. Per super-block, exact integers
/// `sumi = Σ_j sc_j Σ q·y` and `summ = Σ_j m_j (bsum_2j + bsum_2j+1)`, then
/// `acc += (d dy) sumi` and `acc_min += (dmin dy) summ`; the result is `acc - acc_min`.
/// The SIMD kernels compute the same integers and the same two chains.
///
/// Precondition: both rows hold the same number of whole blocks
/// (`row.len() / 144 == act.len() / 292`); debug assertion only.
pub fn vec_dot_q4_k_q8_k(row: &[u8], act: &[u8]) -> f32 {
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
    use crate::quant::k_common::pack_scale_min_k4;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    const LS: [u8; 8] = [1, 2, 3, 4, 5, 17, 33, 63];
    const LM: [u8; 8] = [0, 1, 2, 3, 20, 40, 63, 7];

    /// One hand-written super-block: d = 0.5 (f16 0x3800), dmin = 0.25 (0x3400), the
    /// scales LS and minimums LM packed by hand, qs[i] = i % 16 | (15 - i % 16) << 4.
    fn hand_block() -> Vec<u8> {
        let mut b = vec![0x00, 0x38, 0x00, 0x34];
        // j < 4: the low 6 bits; j >= 4: nibbles in bytes 8..12, high bits in 0..8.
        b.extend([
            0x01, 0x42, 0x83, 0xC4, 0x40, 0x81, 0xC2, 0x03, 0x45, 0x81, 0xF1, 0x7F,
        ]);
        b.extend((0..128usize).map(|i| (i % 16) as u8 | ((15 - i % 16) as u8) << 4));
        b
    }

    #[test]
    fn hand_packed_scales_are_what_the_packer_writes() {
        let mut q = [0u8; 12];
        pack_scale_min_k4(&LS, &LM, &mut q);
        assert_eq!(q[..], hand_block()[4..16]);
    }

    #[test]
    fn dequantizes_a_hand_written_block() {
        let mut out = poisoned(256);
        dequantize_row(&hand_block(), &mut out);
        // (d * sc, dmin * m) of each sub-block, by hand.
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
            let (j, l) = (e / 32, e % 16);
            // Even sub-blocks read the low nibbles (counting up), odd ones the high.
            let q = if j % 2 == 0 { l } else { 15 - l } as f32;
            assert_eq!(v, dm[j].0 * q - dm[j].1, "element {e}");
        }
        assert_eq!(out[..3], [0.0, 0.5, 1.0]);
        assert_eq!(out[32..34], [14.75, 13.75]);
        assert_eq!(out[255], 31.5 * 0.0 - 1.75);
    }

    #[test]
    fn hand_computed_dot_with_q8_k() {
        // Activations: d = 1, every quant 1, block sums 16.
        let mut act = 1.0f32.to_le_bytes().to_vec();
        act.extend([1u8; 256]);
        for _ in 0..16 {
            act.extend(16i16.to_le_bytes());
        }
        // Every sub-block's quants sum to 240: sumi = 240 · Σ LS = 30_720; summ =
        // 32 · Σ LM = 4_352; 0.5 · 30_720 - 0.25 · 4_352.
        assert_eq!(vec_dot_q4_k_q8_k(&hand_block(), &act), 14_272.0);
    }

    #[test]
    fn quantizes_exact_ramps_to_full_scales() {
        // Every sub-block is 0.5 q - 1 for q = 0..16 (twice): the first fit is exact, so
        // every scale and minimum is the largest, 63.
        let x: Vec<f32> = (0..256).map(|i| 0.5 * (i % 16) as f32 - 1.0).collect();
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        assert_eq!(bytes[0..2], half::f16::from_f32(0.5 / 63.0).to_le_bytes());
        assert_eq!(bytes[2..4], half::f16::from_f32(1.0 / 63.0).to_le_bytes());
        assert_eq!(bytes[4..16], [0xFF; 12]);
        for c in 0..4 {
            for i in 0..32 {
                let q = (i % 16) as u8;
                assert_eq!(bytes[QS_AT + 32 * c + i], q | (q << 4));
            }
        }
        let mut out = poisoned(256);
        dequantize_row(&bytes, &mut out);
        for (&a, &b) in x.iter().zip(&out) {
            assert!(
                (a - b).abs() <= 16.0 * f16_rounding(0.5) + f16_rounding(1.0),
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
            check_round_trip_k(&src, &out, 15.0)?;
            // Dequantized values go through again within the same bound.
            let again = quantize_checked(quantize_row, &out, bytes.len());
            let mut out2 = poisoned(src.len());
            dequantize_row(&again, &mut out2);
            check_round_trip_k(&out, &out2, 15.0)?;
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
            let got = vec_dot_q4_k_q8_k(&row, &act) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{got} vs {exact}");
        }
    }
}
