//! The 32-value weight formats as the tiles of [`super`] see them ([`Blocks`]): Q4_0,
//! Q4_1, Q8_0, Q5_0 and Q5_1, and the small load helpers they share.

#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{Blocks, Isa};

/// Q4_0 weights, as a block with minimum `m = -8 d`: `d (q - 8) = d q + m`.
pub(super) struct Q4_0;

impl Blocks for Q4_0 {
    const W: usize = kiln_ir::quant::q4_0::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    /// The 32 nibbles as bytes 0..=15, element order.
    type Weight = __m256i;
    const SIGNED: bool = false;

    #[inline(always)]
    fn bytes(q: &__m256i) -> __m256i {
        *q
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight<I: Isa>(p: *const u8) -> __m256i {
        // SAFETY: a Q4_0 block is d (2 bytes) + 16 bytes of nibbles (contract).
        unsafe { nibbles(p.add(2)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<I: Isa>(q: &__m256i, y: __m256i) -> __m256i {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe { I::dot_u8_i8(*q, y) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: d is the first 2 bytes of each block (contract).
        unsafe { f16_lanes(p, stride, n) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: as `scales`; -8 d is exact.
        unsafe { _mm_mul_ps(f16_lanes(p, stride, n), _mm_set1_ps(-8.0)) }
    }
}

/// Q4_1 weights.
pub(super) struct Q4_1;

impl Blocks for Q4_1 {
    const W: usize = kiln_ir::quant::q4_1::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    type Weight = __m256i;
    const SIGNED: bool = false;

    #[inline(always)]
    fn bytes(q: &__m256i) -> __m256i {
        *q
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight<I: Isa>(p: *const u8) -> __m256i {
        // SAFETY: a Q4_1 block is d, m (2 bytes each) + 16 bytes of nibbles (contract).
        unsafe { nibbles(p.add(4)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<I: Isa>(q: &__m256i, y: __m256i) -> __m256i {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe { I::dot_u8_i8(*q, y) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: d is bytes 0..2 of each block (contract).
        unsafe { f16_lanes(p, stride, n) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: m is bytes 2..4 of each block (contract).
        unsafe { f16_lanes(p.add(2), stride, n) }
    }
}

/// Q8_0 weights.
pub(super) struct Q8_0;

#[derive(Clone, Copy)]
pub(super) struct Q8_0Weight {
    x: __m256i,
    /// `|x|`, read as unsigned (so -128 is 128).
    ax: __m256i,
}

impl Blocks for Q8_0 {
    const W: usize = kiln_ir::quant::q8_0::BLOCK_BYTES;
    const HAS_MIN: bool = false;
    type Weight = Q8_0Weight;
    const SIGNED: bool = true;

    #[inline(always)]
    fn bytes(w: &Q8_0Weight) -> __m256i {
        w.x
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight<I: Isa>(p: *const u8) -> Q8_0Weight {
        // SAFETY: a Q8_0 block is d (2 bytes) + 32 quants (contract).
        unsafe {
            let x = _mm256_loadu_si256(p.add(2).cast());
            Q8_0Weight {
                x,
                ax: _mm256_sign_epi8(x, x),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<I: Isa>(w: &Q8_0Weight, y: __m256i) -> __m256i {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe {
            // x * y = |x| * (y * sign(x)); exact unless y = -128 meets x < 0.
            I::dot_u8_i8(w.ax, _mm256_sign_epi8(y, w.x))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: d is bytes 0..2 of each block (contract).
        unsafe { f16_lanes(p, stride, n) }
    }

    unsafe fn mins(_: *const u8, _: usize, _: usize) -> __m128 {
        unreachable!("Q8_0 blocks have no minimum")
    }
}

/// The little-endian f16s at `p`, `p + stride`, .. (`n <= 4` of them) as f32 in lanes
/// 0..n; the other lanes are 0.
///
/// # Safety
/// 2 readable bytes at each address; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_lanes(p: *const u8, stride: usize, n: usize) -> __m128 {
    // SAFETY: reads 2 bytes at each of the n addresses (contract).
    unsafe {
        let at = |i: usize| i32::from(p.add(i * stride).cast::<u16>().read_unaligned());
        let mut bits = _mm_cvtsi32_si128(at(0));
        if n > 1 {
            bits = _mm_insert_epi16::<1>(bits, at(1));
        }
        if n > 2 {
            bits = _mm_insert_epi16::<2>(bits, at(2));
        }
        if n > 3 {
            bits = _mm_insert_epi16::<3>(bits, at(3));
        }
        _mm_cvtph_ps(bits)
    }
}

/// The 32 nibbles of 16 bytes, as bytes in element order: low nibbles (elements 0..16)
/// in the low 128 bits, high nibbles (16..32) in the high 128 bits.
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: reads 16 bytes (contract).
    unsafe {
        let lo = _mm_loadu_si128(p.cast());
        // An immediate shift and a lane insert (a shuffle-port µop) rather than a
        // broadcast and a variable shift: the multiply ports are the bottleneck, and
        // no register is held for the shift counts.
        let hi = _mm_srli_epi16(lo, 4);
        _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
    }
}

/// The fifth bits of a Q5_0/Q5_1 block (the u32 at `p`) as bytes 0x10 or 0 in element
/// order (ggml's `bytes_from_bits_32`): byte k of the broadcast word is picked into
/// bytes 8k .. 8k + 8, each byte ORed with a mask that lacks only its own bit, and a byte
/// equal to 0xFF has its bit set.
///
/// # Safety
/// `p` points at 4 readable bytes; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: reads 4 bytes (contract).
    unsafe {
        let qh = p.cast::<i32>().read_unaligned();
        let pick = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), pick);
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

/// Q5_0 weights, as a block with minimum `m = -16 d`: `d (q - 16) = d q + m`, q the
/// 5-bit quant (0..=31) read as unsigned.
pub(super) struct Q5_0;

impl Blocks for Q5_0 {
    const W: usize = kiln_ir::quant::q5_0::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    /// The 32 quants as bytes 0..=31, element order.
    type Weight = __m256i;
    const SIGNED: bool = false;

    #[inline(always)]
    fn bytes(q: &__m256i) -> __m256i {
        *q
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight<I: Isa>(p: *const u8) -> __m256i {
        // SAFETY: a Q5_0 block is d (2 bytes), qh (4 bytes), 16 bytes of nibbles (contract).
        unsafe { I::with_fifth_bits(nibbles(p.add(6)), p.add(2)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<I: Isa>(q: &__m256i, y: __m256i) -> __m256i {
        // SAFETY: value intrinsics only; the CPU features are the contract. No i16 pair
        // saturates: 2 · 31 · 128.
        unsafe { I::dot_u8_i8(*q, y) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: d is bytes 0..2 of each block (contract).
        unsafe { f16_lanes(p, stride, n) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: as `scales`; -16 d is exact.
        unsafe { _mm_mul_ps(f16_lanes(p, stride, n), _mm_set1_ps(-16.0)) }
    }
}

/// Q5_1 weights.
pub(super) struct Q5_1;

impl Blocks for Q5_1 {
    const W: usize = kiln_ir::quant::q5_1::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    type Weight = __m256i;
    const SIGNED: bool = false;

    #[inline(always)]
    fn bytes(q: &__m256i) -> __m256i {
        *q
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight<I: Isa>(p: *const u8) -> __m256i {
        // SAFETY: a Q5_1 block is d, m (2 bytes each), qh (4 bytes), 16 bytes of nibbles
        // (contract).
        unsafe { I::with_fifth_bits(nibbles(p.add(8)), p.add(4)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot<I: Isa>(q: &__m256i, y: __m256i) -> __m256i {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe { I::dot_u8_i8(*q, y) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: d is bytes 0..2 of each block (contract).
        unsafe { f16_lanes(p, stride, n) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mins(p: *const u8, stride: usize, n: usize) -> __m128 {
        // SAFETY: m is bytes 2..4 of each block (contract).
        unsafe { f16_lanes(p.add(2), stride, n) }
    }
}
