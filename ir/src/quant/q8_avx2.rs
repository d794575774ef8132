//! The AVX2 twin of [`super::q8_0::quantize_block_scalar`], the activation quantizer every
//! matmul launch runs: the same scale and the same quants, bit for bit (a block holding
//! a NaN or an infinity goes to the scalar twin, whose `max` chain and casts define it).

use core::arch::x86_64::*;

/// Quantizes the 32 values of `x` into `quants` (i8 as bytes) and returns `(d, sum of
/// the quants)`, or None when `x` holds a NaN or an infinity or its scale overflows.
///
/// # Safety
/// The CPU has AVX2; `x` and `quants` hold 32 elements each.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_block(x: &[f32], quants: &mut [u8]) -> Option<(f32, i32)> {
    debug_assert!(x.len() == 32 && quants.len() == 32);
    // SAFETY: 32 f32 at `x` and 32 bytes at `quants` (contract); the CPU has AVX2.
    unsafe {
        let v: [__m256; 4] = core::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let nan = v.iter().fold(_mm256_setzero_ps(), |acc, &v| {
            _mm256_or_ps(acc, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v))
        });
        if _mm256_movemask_ps(nan) != 0 {
            return None;
        }
        // amax: max is associative without NaNs, so the lane order does not matter.
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let abs: [__m256; 4] = core::array::from_fn(|i| _mm256_and_ps(v[i], abs_mask));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let amax = _mm_cvtss_f32(m);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        if !(amax.is_finite() && id.is_finite()) {
            // inf · 0 or 0 · inf ahead: NaNs and infinities, which the scalar casts settle.
            return None;
        }
        // round(v * id), halves away from zero: truncate, then step by the exact
        // remainder (|v * id| <= 127.x, far below 2^23).
        let ids = _mm256_set1_ps(id);
        let (half, neg_half, one) = (
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(-0.5),
            _mm256_set1_ps(1.0),
        );
        let q: [__m256i; 4] = core::array::from_fn(|i| {
            let s = _mm256_mul_ps(v[i], ids);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
            let frac = _mm256_sub_ps(s, t);
            let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
            let down = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, neg_half), one);
            _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(t, up), down))
        });
        // i32 → i8 (saturating, as the scalar cast is), back in element order: the
        // packs interleave 128-bit lanes, the permute undoes it.
        let w01 = _mm256_packs_epi32(q[0], q[1]);
        let w23 = _mm256_packs_epi32(q[2], q[3]);
        let b = _mm256_packs_epi16(w01, w23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(quants.as_mut_ptr().cast(), b);
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        Some((d, _mm_cvtsi128_si32(s)))
    }
}
