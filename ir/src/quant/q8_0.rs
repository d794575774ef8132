//! Q8_0 (ggml's `block_q8_0`): blocks of 32 values in 34 bytes. The reference model's
//! token embedding (tied to the output head) is stored in this format, and activations
//! are quantized to it for the integer dot with Q4_0 and Q8_0 weights.
//!
//! ```text
//! bytes 0..2   d, f16 little endian
//! bytes 2..34  qs[32], i8
//! value = q * d
//! ```

use half::f16;

use super::{debug_check_blocks, f16_at, round_to_i8};

pub const BLOCK_LEN: usize = 32;
pub const BLOCK_BYTES: usize = 34;

/// Dequantizes whole blocks into `dst`.
///
/// Precondition: `dst.len()` is a multiple of 32 and `src.len() == dst.len() / 32 * 34`
/// (debug assertion; [`super::dequantize_row`] checks and returns an error).
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    debug_check_blocks(dst.len(), src.len(), BLOCK_LEN, BLOCK_BYTES);
    for (block, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_LEN))
    {
        let d = f16_at(block, 0);
        for (o, &q) in out.iter_mut().zip(&block[2..BLOCK_BYTES]) {
            *o = f32::from(q as i8) * d;
        }
    }
}

/// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `q = round(x / d)` (halves away
/// from zero, like C's `roundf`). The quants use the f32 `d`; the stored (and
/// dequantized) one is its f16 rounding.
///
/// Precondition: `src.len()` is a multiple of 32 and `dst.len() == src.len() / 32 * 34`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    debug_check_blocks(src.len(), dst.len(), BLOCK_LEN, BLOCK_BYTES);
    for (x, block) in src
        .chunks_exact(BLOCK_LEN)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let (d, _) = quantize_block(x, &mut block[2..BLOCK_BYTES]);
        block[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }
}

/// One block of 32 values: its quants into `quants` (i8 as bytes), and `(d, sum of the
/// quants)`; shared with the Q8_1 quantizer. On x86_64 with AVX2 it runs the SIMD twin
/// (same bits), otherwise [`quantize_block_scalar`].
pub(super) fn quantize_block(x: &[f32], quants: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if x.len() == BLOCK_LEN && quants.len() == BLOCK_LEN && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); 32 values and 32 quants.
        if let Some(done) = unsafe { super::q8_avx2::quantize_block(x, quants) } {
            return done;
        }
    }
    quantize_block_scalar(x, quants)
}

/// The portable twin of [`quantize_block`].
pub(super) fn quantize_block_scalar(x: &[f32], quants: &mut [u8]) -> (f32, i32) {
    let (d, id) = scale(x);
    let mut sum = 0i32;
    for (q, &v) in quants.iter_mut().zip(x) {
        let qi = round_to_i8(v * id);
        sum += i32::from(qi);
        *q = qi as u8;
    }
    (d, sum)
}

/// The f32 scale `amax / 127` of one block and its inverse (0 for an all-zero block).
pub(super) fn scale(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in x {
        // ggml's MAX(amax, |v|)
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// Dot product of a Q8_0 row with Q8_0 activations (ggml's `ggml_vec_dot_q8_0_q8_0`,
/// generic version).
///
/// Precondition: `row.len() == act.len()`, a multiple of 34; debug assertion only.
pub fn vec_dot_q8_0_q8_0(row: &[u8], act: &[u8]) -> f32 {
    debug_check_blocks(
        row.len() / BLOCK_BYTES * BLOCK_LEN,
        row.len(),
        BLOCK_LEN,
        BLOCK_BYTES,
    );
    debug_assert_eq!(row.len(), act.len(), "vec_dot_q8_0_q8_0 of unequal lengths");
    let mut sumf = 0.0f32;
    for (x, y) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(act.chunks_exact(BLOCK_BYTES))
    {
        let mut sumi = 0i32;
        for (&a, &b) in x[2..].iter().zip(&y[2..]) {
            sumi += i32::from(a as i8) * i32::from(b as i8);
        }
        sumf += sumi as f32 * (f16_at(x, 0) * f16_at(y, 0));
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::*;
    use proptest::prelude::*;

    /// Two hand-written blocks: d = 0.5 (f16 0x3800) with q[k] = k - 16 (-16..=15), and
    /// d = -0.25 (0xB400) with q alternating 127, -128.
    fn hand_blocks() -> Vec<u8> {
        let mut bytes = vec![0x00, 0x38];
        bytes.extend((0..32i32).map(|k| (k - 16) as i8 as u8));
        bytes.extend([0x00, 0xB4]);
        for _ in 0..16 {
            bytes.extend([0x7F, 0x80]);
        }
        bytes
    }

    #[test]
    fn dequantizes_hand_written_blocks() {
        let mut out = poisoned(64);
        dequantize_row(&hand_blocks(), &mut out);
        for (k, &v) in out[..32].iter().enumerate() {
            assert_eq!(v, (k as f32 - 16.0) * 0.5);
        }
        assert_eq!(out[..3], [-8.0, -7.5, -7.0]);
        for pair in out[32..].chunks(2) {
            assert_eq!(pair, [-31.75, 32.0]);
        }
    }

    #[test]
    fn quantizes_a_hand_computed_block() {
        let mut x = [1.5f32; 32]; // 3
        x[0] = -63.5; // amax: d = 0.5, id = 2, q = -127
        x[1] = 0.25; // 0.5 -> 1: halves round away from zero
        x[2] = -0.25; // -0.5 -> -1
        x[3] = 63.5; // 127
        x[4] = 1.25; // 2.5 -> 3
        x[5] = -0.2; // -0.4 -> 0
        let bytes = quantize_checked(quantize_row, &x, BLOCK_BYTES);
        assert_eq!(bytes[0..2], [0x00, 0x38]);
        assert_eq!(bytes[2..8], [0x81, 0x01, 0xFF, 0x7F, 0x03, 0x00]);
        assert!(bytes[8..].iter().all(|&q| q == 3));
    }

    #[test]
    fn hand_computed_dot() {
        let blocks = hand_blocks();
        let first = &blocks[..BLOCK_BYTES];
        // Block 0 with itself: the sum of t^2 for t in -16..=15 is 1496 + 1240 = 2736,
        // times 0.5 * 0.5.
        assert_eq!(vec_dot_q8_0_q8_0(first, first), 684.0);
        // Block 1 with itself: 16 * (127^2 + 128^2) = 520_208, times 0.0625; two blocks add.
        assert_eq!(vec_dot_q8_0_q8_0(&blocks, &blocks), 684.0 + 32_513.0);
    }

    /// The quantizer's two paths give the same bits: ordinary blocks, exact halves, and
    /// blocks with infinities and NaNs.
    fn check_block_twins(x: &[f32]) {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        let (da, sa) = quantize_block(x, &mut a);
        let (db, sb) = quantize_block_scalar(x, &mut b);
        assert_eq!((da.to_bits(), sa, a), (db.to_bits(), sb, b), "{x:?}");
    }

    #[test]
    fn quantize_block_twins_agree_on_edges() {
        // amax 127: d = 1, so every other value stays an exact half.
        let mut x: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        x[31] = 127.0;
        check_block_twins(&x);
        x[3] = f32::INFINITY;
        check_block_twins(&x);
        x[7] = f32::NAN;
        check_block_twins(&x);
        check_block_twins(&[0.0; 32]);
        check_block_twins(&[-0.0; 32]);
        check_block_twins(&[1e-44; 32]); // d subnormal: 1 / d overflows
    }

    proptest! {
        #[test]
        fn quantize_block_twins_agree(x in proptest::collection::vec(-1e4f32..1e4, 32), scale in -20i32..20) {
            let x: Vec<f32> = x.iter().map(|v| v * 2f32.powi(scale)).collect();
            check_block_twins(&x);
        }

        #[test]
        fn round_trip_error_is_within_half_a_step(src in rows()) {
            let bytes = quantize_checked(quantize_row, &src, src.len() / 32 * BLOCK_BYTES);
            let mut out = poisoned(src.len());
            dequantize_row(&bytes, &mut out);
            assert_all_written(&out);
            for (x, y) in src.chunks(32).zip(out.chunks(32)) {
                let (d, _) = scale(x);
                for (&a, &b) in x.iter().zip(y) {
                    let bound = d / 2.0 + 127.0 * f16_rounding(d) + 1e-6 * a.abs();
                    prop_assert!((a - b).abs() <= bound, "{a} -> {b}, d = {d}");
                }
            }
        }

        #[test]
        fn integer_dot_matches_dequantized_dot((w, x) in row_pairs()) {
            let n_bytes = w.len() / 32 * BLOCK_BYTES;
            let row = quantize_checked(quantize_row, &w, n_bytes);
            let act = quantize_checked(quantize_row, &x, n_bytes);
            let (mut wd, mut xd) = (poisoned(w.len()), poisoned(x.len()));
            dequantize_row(&row, &mut wd);
            dequantize_row(&act, &mut xd);
            let (exact, magnitude) = dot_f64(&wd, &xd);
            let got = vec_dot_q8_0_q8_0(&row, &act) as f64;
            prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{got} vs {exact}");
        }
    }
}
