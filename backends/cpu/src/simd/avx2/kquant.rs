//! K-quant tiles: Q4_K, Q5_K and Q6_K weight rows against Q8_K activation rows, in the
//! style of ggml's AVX2 `vec_dot_q*_K_q8_K`, with rows × tokens tiles.
//!
//! Per 256-value super-block and (row, token) pair, the integer sums are exact:
//! - `sumi = Σ_j sc_j Σ q·y`: per 64-value chunk, `maddubs` of the unsigned quants
//!   (0..=15, 0..=31 or 0..=63) with the activation bytes gives i16 pairs (at most
//!   2 · 63 · 128, no saturation), and `madd` with the sub-block scale broadcast to i16
//!   applies the scale and widens to i32 in the same instruction;
//! - Q4_K/Q5_K `summ = Σ_j m_j bsum32_j`: one `madd` of the 8 minimums with the Q8_K
//!   block sums added in pairs;
//! - Q6_K's offset `-32 Σ_j sc_j bsum_j`: one `madd` of the 16 scales with the 16 block
//!   sums, shifted and taken as the starting value of `sumi`.
//!
//! Then, as in ggml, per super-block `acc += sumi · (d dy)` and `acc_min += summ ·
//! (dmin dy)` lane by lane (8 and 4 f32 lanes: one convert and one FMA each, no
//! horizontal sum), and at the end the result is `Σ acc - Σ acc_min` in a fixed lane
//! order. The scalar twins (`kiln_ir::quant::vec_dot_q*_k_q8_k`) compute the same
//! integers and sum them before scaling; the results agree to f32 rounding. The tiles
//! (one row against four tokens, or against one) run the same operations for a (row,
//! token), so a token's results do not depend on its batch.
//!
//! Activations are read in place: a Q8_K block already holds an f32 scale and its block
//! sums, so nothing needs staging. The scale multiply rides on `madd`, so VNNI's fused
//! `vpdpbusd` would save nothing here: every kernel table runs these tiles.

#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use kiln_ir::quant::{q4_k, q5_k, q6_k, q8_k};

use super::{GROUP, Job};

/// Bytes of a Q8_K block, and where its quants and block sums start.
const Y_BYTES: usize = q8_k::BLOCK_BYTES;
const Y_QS: usize = q8_k::QS_AT;
const Y_BSUMS: usize = q8_k::BSUMS_AT;

/// One K-quant weight format as the tiles see it.
pub(super) trait SuperBlocks {
    /// Bytes of a super-block.
    const W: usize;
    /// Whether the format has sub-block minimums (`acc_min`).
    const HAS_MIN: bool;
    /// A super-block's decoded scales (and minimums).
    type Head: Copy;

    /// # Safety
    /// `p` points at a whole super-block; the CPU has AVX2, FMA and F16C.
    unsafe fn head(p: *const u8) -> Self::Head;

    /// The super-block's `d` and `dmin` (0 without minimums).
    ///
    /// # Safety
    /// `p` points at a whole super-block; the CPU has AVX2, FMA and F16C.
    unsafe fn d_dmin(p: *const u8) -> (f32, f32);

    /// The starting value of `sumi` (8 i32 lanes, summed later) and `summ` (4 i32 lanes)
    /// of a (row, token) pair, from the row's head and the token's Q8_K block at `y`.
    ///
    /// # Safety
    /// `y` points at a whole Q8_K block; the CPU has AVX2, FMA and F16C.
    unsafe fn start(head: &Self::Head, y: *const u8) -> (__m256i, __m128i);

    /// The scaled integer dot of chunk `C` (values 64C .. 64C + 64) of the super-block at
    /// `p` with the activation quants `y0` (values 64C .. + 32) and `y1` (the next 32), as
    /// 8 i32 partial sums.
    ///
    /// # Safety
    /// `p` points at a whole super-block; the CPU has AVX2, FMA and F16C.
    unsafe fn chunk<const C: usize>(
        p: *const u8,
        head: &Self::Head,
        y0: __m256i,
        y1: __m256i,
    ) -> __m256i;
}

/// Covers the job with one-row tiles: a weight row against groups of [`GROUP`] tokens
/// (a super-block decoded once for four tokens), then against each remaining token.
///
/// One row at a time, unlike the 32-value tiles' four: the rows of a 4 × 1 tile are four
/// interleaved streams, and from memory (the usual case: a model's other layers evict a
/// matrix between two reads) they measured 1.2 to 5 times slower than a single stream
/// (Q6_K, 14336 × 4096: 12.4 against 6.8 ms a matvec on one thread; Q4_K, 2048 × 640:
/// 118 against 48 µs). The activation block, reread for every row, stays in L1.
///
/// # Safety
/// `job` passed `Job::checked`, its format is `B`'s, and the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run<B: SuperBlocks>(job: &mut Job<'_>) {
    let mut t0 = 0;
    while job.n_tokens - t0 >= GROUP {
        // SAFETY: forwarded; tokens t0..t0 + GROUP are within n_tokens.
        unsafe { pass::<B, GROUP>(job, t0) };
        t0 += GROUP;
    }
    while t0 < job.n_tokens {
        // SAFETY: forwarded; token t0 is within n_tokens.
        unsafe { pass::<B, 1>(job, t0) };
        t0 += 1;
    }
}

/// Every row of the job against tokens `t0..t0 + T`.
///
/// # Safety
/// As [`run`], and `t0 + T <= job.n_tokens`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass<B: SuperBlocks, const T: usize>(job: &mut Job<'_>, t0: usize) {
    debug_assert!(t0 + T <= job.n_tokens);
    let acts = job.acts[t0 * job.act_stride..].as_ptr();
    for r in 0..job.n_rows {
        let row = job.rows[r * job.row_bytes..].as_ptr();
        // SAFETY: row r < n_rows holds `blocks` whole super-blocks inside `job.rows`, and
        // tokens t0..t0 + T hold `blocks` Q8_K blocks each `act_stride` apart inside
        // `job.acts` (Job invariants); the CPU features are this function's contract.
        let sums = unsafe { tile::<B, T>(row, acts, job.act_stride, job.blocks) };
        for (t, &s) in sums.iter().enumerate() {
            job.out[(t0 + t) * job.out_stride + r] = s;
        }
    }
}

/// [`tile_body`] compiled once per tile shape.
///
/// # Safety
/// As [`tile_body`].
// Not inlined: one register allocation per tile shape.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<B: SuperBlocks, const T: usize>(
    w: *const u8,
    y: *const u8,
    y_stride: usize,
    blocks: usize,
) -> [f32; T] {
    // SAFETY: forwarded from this function's contract.
    unsafe { tile_body::<B, T>(w, y, y_stride, blocks) }
}

/// Dot products of the weight row at `w` with T (<= 4) tokens' Q8_K rows (at `y`,
/// `y_stride` bytes apart) over `blocks` super-blocks.
///
/// # Safety
/// The row holds `blocks` whole super-blocks and each of the T tokens `blocks` Q8_K
/// blocks, in live allocations; the CPU has AVX2, FMA and F16C (from the [`tile`] it is
/// inlined into).
// Index loops over const-sized arrays: fully unrolled, kept in registers (see
// `tile_body` in avx2.rs).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_body<B: SuperBlocks, const T: usize>(
    w: *const u8,
    y: *const u8,
    y_stride: usize,
    blocks: usize,
) -> [f32; T] {
    debug_assert!(T <= 4);
    // SAFETY: every weight pointer is `w + b * W + k`, b < blocks, k < W: inside the
    // row the contract promises; every activation pointer is `y + t * y_stride +
    // b * Y_BYTES + k`, t < T, k < Y_BYTES, likewise.
    // Decode prefetches PREFETCH_AHEAD bytes ahead in address order (the task's rows are
    // one range): the hardware prefetcher alone left Q4_K / Q5_K / Q6_K matvecs (4096 ×
    // 14336, two threads, tasks of 128 rows) 3 / 8 / 9% slower.
    unsafe {
        // Per token: 8 f32 lanes of Σ sumi · (d dy) and 4 of Σ summ · (dmin dy), reduced
        // across lanes once, at the end (as ggml does: no reduction per super-block).
        let mut acc = [_mm256_setzero_ps(); T];
        let mut acc_min = [_mm_setzero_ps(); T];
        for b in 0..blocks {
            let wb = w.add(b * B::W);
            if T == 1 {
                // Decode: the rows of a task are one address range, read in order;
                // prefetch it a fixed distance ahead, as the 32-value tiles do (prefetching
                // never faults, so the addresses may run past the matrix).
                let ahead = wb.wrapping_add(super::PREFETCH_AHEAD);
                let mut line = 0;
                while line < B::W {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
                    line += 64;
                }
            }
            let yb = y.add(b * Y_BYTES);
            let head = B::head(wb);
            let mut dots = [_mm256_setzero_si256(); T];
            let mut mins = [_mm_setzero_si128(); T];
            for t in 0..T {
                (dots[t], mins[t]) = B::start(&head, yb.add(t * y_stride));
            }
            macro_rules! chunk {
                ($c:literal) => {
                    for t in 0..T {
                        let q = yb.add(t * y_stride + Y_QS + 64 * $c);
                        let y0 = _mm256_loadu_si256(q.cast());
                        let y1 = _mm256_loadu_si256(q.add(32).cast());
                        let p = B::chunk::<$c>(wb, &head, y0, y1);
                        dots[t] = _mm256_add_epi32(dots[t], p);
                    }
                };
            }
            chunk!(0);
            chunk!(1);
            chunk!(2);
            chunk!(3);
            let (dx, dmin) = B::d_dmin(wb);
            for t in 0..T {
                let dy = yb.add(t * y_stride).cast::<f32>().read_unaligned();
                let dd = _mm256_set1_ps(dx * dy);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[t]), dd, acc[t]);
                if B::HAS_MIN {
                    let dm = _mm_set1_ps(dmin * dy);
                    acc_min[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(mins[t]), dm, acc_min[t]);
                }
            }
        }
        core::array::from_fn(|t| hsum8(acc[t]) - hsum4_ps(acc_min[t]))
    }
}

/// The two little-endian f16s of the 4 bytes at `p`, as f32. One 32-bit load into a
/// zeroed register: an f16 alone is inserted by LLVM into whatever register is free
/// (`vpinsrw`), which chained the conversion to the accumulators.
///
/// # Safety
/// 4 readable bytes at `p`; the CPU has F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
    // SAFETY: reads 4 bytes (contract).
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

/// The sum of the 8 lanes of `v`, in a fixed order: halves, then pairs, then the last two.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum8(v: __m256) -> f32 {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        hsum4_ps(_mm_add_ps(
            _mm256_castps256_ps128(v),
            _mm256_extractf128_ps::<1>(v),
        ))
    }
}

/// The sum of the 4 lanes of `v`: (0 + 2) + (1 + 3).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum4_ps(v: __m128) -> f32 {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        let pairs = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
    }
}

/// The decoded header of a Q4_K or Q5_K super-block.
#[derive(Clone, Copy)]
pub(super) struct ScalesMins {
    /// The 8 sub-block scales as i16, in both 128-bit lanes.
    scales: __m256i,
    /// The 8 sub-block minimums as i16.
    mins: __m128i,
}

/// Unpacks the 12 bytes of 6-bit scales and minimums at `p` (ggml's `utmp` shuffle on
/// 32-bit words: scalar integer work, which runs beside the vector ports).
///
/// # Safety
/// 12 readable bytes at `p`; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_mins(p: *const u8) -> ScalesMins {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    // SAFETY: reads 12 bytes (contract).
    unsafe {
        let word = |i: usize| p.add(4 * i).cast::<u32>().read_unaligned();
        let (w0, w1, w2) = (word(0), word(1), word(2));
        // Scales 0..4 and 4..8, minimums 0..4 and 4..8, one byte each.
        let s03 = w0 & KMASK1;
        let s47 = (w2 & KMASK2) | (((w0 >> 6) & KMASK3) << 4);
        let m03 = w1 & KMASK1;
        let m47 = ((w2 >> 4) & KMASK2) | (((w1 >> 6) & KMASK3) << 4);
        let bytes = _mm_set_epi32(m47 as i32, m03 as i32, s47 as i32, s03 as i32);
        let wide = _mm256_cvtepu8_epi16(bytes);
        let scales = _mm256_castsi256_si128(wide);
        ScalesMins {
            scales: _mm256_set_m128i(scales, scales),
            mins: _mm256_extracti128_si256::<1>(wide),
        }
    }
}

/// The Q4_K/Q5_K start: no offset on `sumi`; `summ` lanes from the minimums and the
/// block sums added in pairs (one per 32-value sub-block).
///
/// # Safety
/// `y` points at a whole Q8_K block; the CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn start_mins(head: &ScalesMins, y: *const u8) -> (__m256i, __m128i) {
    // SAFETY: reads the 32 bytes of block sums (contract).
    unsafe {
        let b = y.add(Y_BSUMS);
        let pairs = _mm_hadd_epi16(_mm_loadu_si128(b.cast()), _mm_loadu_si128(b.add(16).cast()));
        (_mm256_setzero_si256(), _mm_madd_epi16(head.mins, pairs))
    }
}

/// Word `j` (0..8) of each lane of `v` in every word of that lane.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn word(v: __m256i, j: usize) -> __m256i {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        let pick = (((2 * j + 1) << 8) | (2 * j)) as i16;
        _mm256_shuffle_epi8(v, _mm256_set1_epi16(pick))
    }
}

/// `madd(scale lo, maddubs(lo, y0)) + madd(scale hi, maddubs(hi, y1))` for the two
/// sub-blocks 2C and 2C + 1 of a Q4_K/Q5_K chunk.
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_pair<const C: usize>(
    head: &ScalesMins,
    lo: __m256i,
    hi: __m256i,
    y: [__m256i; 2],
) -> __m256i {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        let s0 = word(head.scales, 2 * C);
        let s1 = word(head.scales, 2 * C + 1);
        let p0 = _mm256_madd_epi16(s0, _mm256_maddubs_epi16(lo, y[0]));
        let p1 = _mm256_madd_epi16(s1, _mm256_maddubs_epi16(hi, y[1]));
        _mm256_add_epi32(p0, p1)
    }
}

/// Q4_K weights.
pub(super) struct Q4K;

impl SuperBlocks for Q4K {
    const W: usize = q4_k::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    type Head = ScalesMins;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn d_dmin(p: *const u8) -> (f32, f32) {
        // SAFETY: d and dmin are bytes 0..4 (contract).
        unsafe { f16_pair(p) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn head(p: *const u8) -> ScalesMins {
        // SAFETY: the packed scales are bytes 4..16 of the super-block (contract).
        unsafe { scales_mins(p.add(4)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn start(head: &ScalesMins, y: *const u8) -> (__m256i, __m128i) {
        // SAFETY: forwarded.
        unsafe { start_mins(head, y) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn chunk<const C: usize>(
        p: *const u8,
        head: &ScalesMins,
        y0: __m256i,
        y1: __m256i,
    ) -> __m256i {
        // SAFETY: chunk C's 32 bytes of nibbles are inside the super-block (contract).
        unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            let bits = _mm256_loadu_si256(p.add(q4_k::QS_AT + 32 * C).cast());
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            dot_pair::<C>(head, lo, hi, [y0, y1])
        }
    }
}

/// Bit `K` (0..8) of every byte of `h`, moved to bit 4 (0x10 or 0): an immediate
/// 16-bit shift (bits that cross into the neighbouring byte are masked off).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bit_to_16<const K: usize>(h: __m256i) -> __m256i {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        let moved = match K {
            0 => _mm256_slli_epi16::<4>(h),
            1 => _mm256_slli_epi16::<3>(h),
            2 => _mm256_slli_epi16::<2>(h),
            3 => _mm256_slli_epi16::<1>(h),
            4 => h,
            5 => _mm256_srli_epi16::<1>(h),
            6 => _mm256_srli_epi16::<2>(h),
            _ => _mm256_srli_epi16::<3>(h),
        };
        _mm256_and_si256(moved, _mm256_set1_epi8(0x10))
    }
}

/// Q5_K weights.
pub(super) struct Q5K;

impl SuperBlocks for Q5K {
    const W: usize = q5_k::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    type Head = ScalesMins;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn d_dmin(p: *const u8) -> (f32, f32) {
        // SAFETY: d and dmin are bytes 0..4 (contract).
        unsafe { f16_pair(p) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn head(p: *const u8) -> ScalesMins {
        // SAFETY: the packed scales are bytes 4..16 of the super-block (contract).
        unsafe { scales_mins(p.add(4)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn start(head: &ScalesMins, y: *const u8) -> (__m256i, __m128i) {
        // SAFETY: forwarded.
        unsafe { start_mins(head, y) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn chunk<const C: usize>(
        p: *const u8,
        head: &ScalesMins,
        y0: __m256i,
        y1: __m256i,
    ) -> __m256i {
        // SAFETY: the 32 bytes of fifth bits and chunk C's 32 bytes of nibbles are inside
        // the super-block (contract).
        unsafe {
            let m4 = _mm256_set1_epi8(0x0F);
            let bits = _mm256_loadu_si256(p.add(q5_k::QS_AT + 32 * C).cast());
            let h = _mm256_loadu_si256(p.add(q5_k::QH_AT).cast());
            let (h_lo, h_hi) = match C {
                0 => (bit_to_16::<0>(h), bit_to_16::<1>(h)),
                1 => (bit_to_16::<2>(h), bit_to_16::<3>(h)),
                2 => (bit_to_16::<4>(h), bit_to_16::<5>(h)),
                _ => (bit_to_16::<6>(h), bit_to_16::<7>(h)),
            };
            let lo = _mm256_or_si256(_mm256_and_si256(bits, m4), h_lo);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4), h_hi);
            dot_pair::<C>(head, lo, hi, [y0, y1])
        }
    }
}

/// Q6_K weights.
pub(super) struct Q6K;

impl Q6K {
    /// 16 i16 (a block's 16 scales or a Q8_K block's 16 sums) from natural order
    /// (lane 0: 0..8, lane 1: 8..16) to evens in lane 0 and odds in lane 1: an in-lane
    /// shuffle to [evens, odds] per lane, then the middle 64-bit words swapped.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn evens_odds(v: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe {
            let pick = _mm256_setr_epi8(
                0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, //
                0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
            );
            _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(v, pick))
        }
    }
}

impl SuperBlocks for Q6K {
    const W: usize = q6_k::BLOCK_BYTES;
    const HAS_MIN: bool = false;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn d_dmin(p: *const u8) -> (f32, f32) {
        // SAFETY: the last two scales and d are the block's last 4 bytes (contract).
        unsafe { (f16_pair(p.add(q6_k::D_AT - 2)).1, 0.0) }
    }
    /// The 16 sub-block scales as i16, the even ones in lane 0 and the odd ones in
    /// lane 1 ([`Q6K::evens_odds`]): one in-lane shuffle then gives a 32-value piece's
    /// two scales (sub-block 2i in lane 0, 2i + 1 in lane 1).
    type Head = __m256i;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn head(p: *const u8) -> __m256i {
        // SAFETY: the 16 scales are inside the super-block (contract).
        unsafe {
            let scales = _mm_loadu_si128(p.add(q6_k::SCALES_AT).cast());
            Self::evens_odds(_mm256_cvtepi8_epi16(scales))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn start(scales: &__m256i, y: *const u8) -> (__m256i, __m128i) {
        // SAFETY: reads the 32 bytes of block sums (contract).
        unsafe {
            // -32 Σ_j sc_j bsum_j, in 8 lanes (the sums in the scales' order);
            // |each lane| <= 32 · 2 · 128 · 2032.
            let bsums = Self::evens_odds(_mm256_loadu_si256(y.add(Y_BSUMS).cast()));
            let dot = _mm256_madd_epi16(*scales, bsums);
            let offset = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(dot));
            (offset, _mm_setzero_si128())
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn chunk<const C: usize>(
        p: *const u8,
        scales: &__m256i,
        y0: __m256i,
        y1: __m256i,
    ) -> __m256i {
        // SAFETY: the half's 64 bytes of low bits and 32 bytes of high bits are inside
        // the super-block (contract).
        unsafe {
            let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
            let h = C / 2;
            let ql_a = _mm256_loadu_si256(p.add(64 * h).cast());
            let ql_b = _mm256_loadu_si256(p.add(64 * h + 32).cast());
            let qh = _mm256_loadu_si256(p.add(q6_k::QH_AT + 32 * h).cast());
            // Even chunks: low nibbles with high bits 0-1 and 2-3; odd chunks: high
            // nibbles with bits 4-5 and 6-7. Shifts cross bytes only into masked bits.
            let (q0, q1) = if C.is_multiple_of(2) {
                (
                    _mm256_or_si256(
                        _mm256_and_si256(ql_a, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql_b, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
                    ),
                )
            } else {
                (
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql_a), m4),
                        _mm256_and_si256(qh, m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql_b), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                    ),
                )
            };
            // Sub-blocks 4C .. 4C + 4: pieces 2C and 2C + 1, two sub-blocks each.
            let p0 = _mm256_madd_epi16(word(*scales, 2 * C), _mm256_maddubs_epi16(q0, y0));
            let p1 = _mm256_madd_epi16(word(*scales, 2 * C + 1), _mm256_maddubs_epi16(q1, y1));
            _mm256_add_epi32(p0, p1)
        }
    }
}
