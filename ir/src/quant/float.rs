//! Plain float rows (F32, F16, BF16, little endian) and the f32 dot product that the
//! reference forward pass spends its time in.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Decodes `dst.len()` little-endian f32 values from `src` (4 bytes each).
/// Precondition: `src.len() == 4 * dst.len()`.
pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) {
    super::debug_check_blocks(dst.len(), src.len(), 1, 4);
    for (b, d) in src.chunks_exact(4).zip(dst) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Encodes `src` as little-endian f32. Precondition: `dst.len() == 4 * src.len()`.
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) {
    super::debug_check_blocks(src.len(), dst.len(), 1, 4);
    for (&v, b) in src.iter().zip(dst.chunks_exact_mut(4)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// f16 values converted at a time through a stack buffer, so that `half` can use its
/// vectorized slice conversion (F16C on x86_64) instead of one value at a time.
const F16_CHUNK: usize = 64;

/// Decodes `dst.len()` little-endian f16 values. Precondition: `src.len() == 2 * dst.len()`.
pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    super::debug_check_blocks(dst.len(), src.len(), 1, 2);
    // (F16_CHUNK,) the current chunk's values, decoded from bytes
    let mut halves = [f16::ZERO; F16_CHUNK];
    for (bytes, out) in src.chunks(2 * F16_CHUNK).zip(dst.chunks_mut(F16_CHUNK)) {
        let h = &mut halves[..out.len()];
        for (b, v) in bytes.chunks_exact(2).zip(h.iter_mut()) {
            *v = f16::from_le_bytes([b[0], b[1]]);
        }
        h.convert_to_f32_slice(out);
    }
}

/// Rounds `src` to f16 (nearest even; overflow gives ±inf). Precondition:
/// `dst.len() == 2 * src.len()`.
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    super::debug_check_blocks(src.len(), dst.len(), 1, 2);
    // (F16_CHUNK,) the current chunk's values, rounded to f16
    let mut halves = [f16::ZERO; F16_CHUNK];
    for (values, bytes) in src.chunks(F16_CHUNK).zip(dst.chunks_mut(2 * F16_CHUNK)) {
        let h = &mut halves[..values.len()];
        h.convert_from_f32_slice(values);
        for (v, b) in h.iter().zip(bytes.chunks_exact_mut(2)) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Decodes `dst.len()` little-endian bf16 values. Precondition: `src.len() == 2 * dst.len()`.
pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) {
    super::debug_check_blocks(dst.len(), src.len(), 1, 2);
    for (b, d) in src.chunks_exact(2).zip(dst) {
        *d = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// Rounds `src` to bf16 (nearest even). Precondition: `dst.len() == 2 * src.len()`.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8]) {
    super::debug_check_blocks(src.len(), dst.len(), 1, 2);
    for (&v, b) in src.iter().zip(dst.chunks_exact_mut(2)) {
        b.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
    }
}

/// Partial sums of [`dot_lanes`]: `ACCS` groups of `WIDTH`. Float addition is not
/// associative, so LLVM may only vectorize a reduction whose lanes the source already
/// keeps apart; several independent groups hide the latency of the adds.
const WIDTH: usize = 8;
const ACCS: usize = 4;

/// `sum(a[i] * b[i])`, the inner loop of every f32 matrix-vector product.
///
/// Precondition: `a.len() == b.len()` (debug assertion; in release the shorter length
/// is used). On x86_64 it uses an AVX2+FMA kernel when the CPU has them (detected once,
/// then a cached flag); [`dot_f32_scalar`] is the portable twin.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "dot_f32 of unequal lengths");
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { dot_f32_avx2_fma(a, b) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // FMA is part of the aarch64 baseline, so `mul_add` is one instruction.
        return dot_lanes::<true>(a, b);
    }
    #[allow(unreachable_code)] // on aarch64, which returned above
    dot_f32_scalar(a, b)
}

/// The portable twin of [`dot_f32`], in plain Rust (no intrinsics, no FMA) for the
/// baseline target. Same precondition.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "dot_f32_scalar of unequal lengths");
    dot_lanes::<false>(a, b)
}

/// [`dot_f32`] with AVX2 and FMA: four 8-wide accumulators, two loads and one fused
/// multiply-add per 8 floats, which is what the load ports allow (LLVM's own
/// vectorization of [`dot_lanes`] reaches about a third of this).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // SAFETY: the caller guarantees AVX2 and FMA. Every unaligned 8-float load reads a
    // slice from `chunks_exact(32)` at offset 0, 8, 16 or 24, or one from
    // `chunks_exact(8)` at offset 0, so it stays inside that slice; the store writes
    // an 8-float array.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (xa, xb) in ca.zip(cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(xa.as_ptr().add(8 * k));
                let y = _mm256_loadu_ps(xb.as_ptr().add(8 * k));
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
        }
        let (ca, cb) = (ra.chunks_exact(8), rb.chunks_exact(8));
        let (ta, tb) = (ca.remainder(), cb.remainder());
        for (xa, xb) in ca.zip(cb) {
            let (x, y) = (_mm256_loadu_ps(xa.as_ptr()), _mm256_loadu_ps(xb.as_ptr()));
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        let mut tail = 0.0f32;
        for (&x, &y) in ta.iter().zip(tb) {
            tail = x.mul_add(y, tail);
        }
        let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
        ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + tail
    }
}

/// The plain-Rust loop: `ACCS * WIDTH` partial sums over whole chunks, one more
/// `WIDTH` of them for whole groups of the remainder, a scalar tail, then a reduction
/// of the partial sums. With `FMA`, each step is a fused multiply-add (only chosen where
/// that is one instruction).
#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let step = |acc: f32, x: f32, y: f32| if FMA { x.mul_add(y, acc) } else { acc + x * y };

    // (ACCS, WIDTH) partial sums: acc[k][i] adds the products at indices
    // k * WIDTH + i modulo ACCS * WIDTH
    let mut acc = [[0.0f32; WIDTH]; ACCS];
    let (ca, cb) = (a.chunks_exact(ACCS * WIDTH), b.chunks_exact(ACCS * WIDTH));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for (k, acc) in acc.iter_mut().enumerate() {
            for i in 0..WIDTH {
                acc[i] = step(acc[i], xa[k * WIDTH + i], xb[k * WIDTH + i]);
            }
        }
    }
    // (WIDTH,) partial sums of the remainder's whole groups
    let mut rest = [0.0f32; WIDTH];
    let (ca, cb) = (ra.chunks_exact(WIDTH), rb.chunks_exact(WIDTH));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for i in 0..WIDTH {
            rest[i] = step(rest[i], xa[i], xb[i]);
        }
    }
    let mut tail = 0.0f32;
    for (&x, &y) in ta.iter().zip(tb) {
        tail = step(tail, x, y);
    }
    for acc in &acc {
        for i in 0..WIDTH {
            rest[i] += acc[i];
        }
    }
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rest;
    ((r0 + r4) + (r2 + r6)) + ((r1 + r5) + (r3 + r7)) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::{assert_all_written, dot_f64, poisoned};
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn f16_and_bf16_decode_hand_written_bytes() {
        // f16: 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800, 65504 = 0x7BFF, 2^-24 = 0x0001.
        let src = [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38, 0xFF, 0x7B, 0x01, 0x00];
        let mut out = poisoned(5);
        dequantize_row_f16(&src, &mut out);
        assert_eq!(out, [1.0, -2.0, 0.5, 65504.0, 2f32.powi(-24)]);

        // bf16: 1.0 = 0x3F80, -3.0 = 0xC040, 2^100 = 0x7180.
        let src = [0x80, 0x3F, 0x40, 0xC0, 0x80, 0x71];
        let mut out = poisoned(3);
        dequantize_row_bf16(&src, &mut out);
        assert_eq!(out, [1.0, -3.0, 2f32.powi(100)]);
    }

    #[test]
    fn f16_and_bf16_encode_round_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and the next f16: ties go to the even 1.0;
        // 1 + 3 * 2^-11 goes up to 1 + 2^-9. Beyond 65520 f16 overflows to inf.
        let src = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 1.0e6];
        let mut out = vec![0u8; 6];
        quantize_row_f16(&src, &mut out);
        assert_eq!(out, [0x00, 0x3C, 0x02, 0x3C, 0x00, 0x7C]);

        let src = [1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)];
        let mut out = vec![0u8; 4];
        quantize_row_bf16(&src, &mut out);
        assert_eq!(out, [0x80, 0x3F, 0x82, 0x3F]);
    }

    #[test]
    fn special_values_survive_f16_and_bf16() {
        let src = [f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::NAN];
        for (q, d) in [
            (
                quantize_row_f16 as fn(&[f32], &mut [u8]),
                dequantize_row_f16 as fn(&[u8], &mut [f32]),
            ),
            (quantize_row_bf16, dequantize_row_bf16),
        ] {
            let mut bytes = vec![0u8; 8];
            q(&src, &mut bytes);
            let mut out = vec![0.0f32; 4];
            d(&bytes, &mut out);
            assert_eq!(out[0], f32::INFINITY);
            assert_eq!(out[1], f32::NEG_INFINITY);
            assert!(out[2] == 0.0 && out[2].is_sign_negative());
            assert!(out[3].is_nan());
        }
    }

    #[test]
    fn dot_of_known_vectors() {
        let a: Vec<f32> = (1..=70).map(|i| i as f32).collect();
        let b: Vec<f32> = (1..=70)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        // Pairs (2k-1, 2k) contribute +1 each: 35 pairs.
        assert_eq!(dot_f32(&a, &b), 35.0);
        assert_eq!(dot_f32_scalar(&a, &b), 35.0);
        assert_eq!(dot_f32(&[], &[]), 0.0);
        assert_eq!(dot_f32(&[3.0], &[-2.5]), -7.5);
    }

    /// Random vectors of the odd lengths the model uses and a few around the lane widths.
    fn dot_inputs() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        prop_oneof![
            Just(1usize),
            Just(7),
            Just(8),
            Just(9),
            Just(31),
            Just(32),
            Just(33),
            Just(63),
            Just(577),
            Just(1537),
            1usize..2000
        ]
        .prop_flat_map(|n| (vec(-4.0f32..4.0, n), vec(-4.0f32..4.0, n)))
    }

    proptest! {
        #[test]
        fn f32_rows_round_trip_bit_exactly(src in vec(any::<f32>(), 0..100)) {
            let mut bytes = vec![0u8; 4 * src.len()];
            quantize_row_f32(&src, &mut bytes);
            let mut out = poisoned(src.len());
            dequantize_row_f32(&bytes, &mut out);
            for (a, b) in src.iter().zip(&out) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }

        #[test]
        fn f16_and_bf16_round_trips_are_within_half_an_ulp(
            src in vec(prop_oneof![-60000.0f32..60000.0, -1.0f32..1.0, -1e-3f32..1e-3], 1..100)
        ) {
            let n = src.len();
            let mut bytes = vec![0u8; 2 * n];
            let mut out = poisoned(n);
            quantize_row_f16(&src, &mut bytes);
            dequantize_row_f16(&bytes, &mut out);
            assert_all_written(&out);
            for (&x, &y) in src.iter().zip(&out) {
                // f16 has 11 significant bits; below 2^-14 it is subnormal (spacing 2^-24).
                prop_assert!((x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{x} -> {y}");
            }
            let mut out = poisoned(n);
            quantize_row_bf16(&src, &mut bytes);
            dequantize_row_bf16(&bytes, &mut out);
            assert_all_written(&out);
            for (&x, &y) in src.iter().zip(&out) {
                // bf16 has 8 significant bits and f32's exponent range.
                prop_assert!((x - y).abs() <= x.abs() * 2f32.powi(-8), "{x} -> {y}");
            }
        }

        #[test]
        fn dot_f32_matches_an_f64_sum((a, b) in dot_inputs()) {
            let (exact, magnitude) = dot_f64(&a, &b);
            // Relative to the sum of |products|, the scale of any rounding error.
            let tol = 1e-5 * magnitude + 1e-30;
            let fast = dot_f32(&a, &b) as f64;
            let scalar = dot_f32_scalar(&a, &b) as f64;
            prop_assert!((fast - exact).abs() <= tol, "fast {fast} vs {exact}");
            prop_assert!((scalar - exact).abs() <= tol, "scalar {scalar} vs {exact}");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: AVX2 and FMA are present, checked just above.
                let simd = unsafe { dot_f32_avx2_fma(&a, &b) } as f64;
                prop_assert!((simd - scalar).abs() <= tol, "avx2 {simd} vs scalar {scalar}");
            }
        }
    }
}
