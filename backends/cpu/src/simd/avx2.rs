//! AVX2 kernels (with FMA and F16C) in the style of ggml's x86 `vec_dot`s.
//!
//! Per block of 32 values, the integer dot is done in 256-bit registers:
//! `_mm256_maddubs_epi16` multiplies unsigned bytes by signed bytes and adds adjacent
//! pairs into i16, `_mm256_madd_epi16` by ones adds pairs again into 8 i32 partial sums,
//! which are converted to f32 and multiplied by the block's scales with an FMA.
//! - Q4_1: the nibbles (0..=15) are already unsigned; the minimum enters as `m * s`.
//! - Q4_0: `sum((q - 8) * y) = sum(q * y) - sum(8 * y)`; the second term is computed
//!   once per activation block and shared by every weight row of the tile.
//! - Q8_0: ggml's sign trick, `|x| * (y * sign(x))`, which is exact for any weight
//!   byte as long as activation quants avoid -128 (see the module above).
//!
//! No i16 sum saturates: a pair is at most 2 * 15 * 128 for the nibble formats and
//! 2 * 128 * 127 for Q8_0. The i32 lanes (4 products each) convert to f32 exactly.
//!
//! [`tile`] computes an R × T tile (weight rows × tokens), one block at a time: the R
//! weight blocks are decoded into registers, then each of the T activation blocks is
//! decoded once and dotted with all of them. [`run`] covers a job with tiles. The
//! kernels are bound by the multiply ports (about 11 vector µops per block pair at
//! 4 × 1), not by loads: a tile only saves the decoding of the shared side.
//!
//! MSRV note: under Rust 1.85 the value intrinsics are `unsafe fn`s; from 1.87 they
//! are safe inside `#[target_feature]` functions. Each helper therefore wraps its body
//! in one `unsafe` block, and `unused_unsafe` is allowed where a body only computes.

#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use super::{Format, Job, Kernels};

/// Whether this CPU has what these kernels are compiled for.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX2 table; [`super::kernels`] hands it out only after [`detected`].
pub(super) const KERNELS: Kernels = Kernels {
    isa: "avx2",
    run: run_job,
};

/// [`super::Kernel`] of the AVX2 path.
///
/// # Safety
/// `job` passed [`Job::checked`] and the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_job(job: &mut Job<'_>) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match job.format {
            Format::Q4_0 => run::<Q4_0>(job),
            Format::Q4_1 => run::<Q4_1>(job),
            Format::Q8_0 => run::<Q8_0>(job),
        }
    }
}

/// Covers the job with tiles: tokens four at a time with 1 × 4 tiles (one weight
/// row, four tokens), then each remaining token with 4 × 1 tiles (four rows, one token).
///
/// Why these shapes (measured on a Sapphire Rapids class Xeon, 576 rows of 48 blocks,
/// ns per row-token dot): 4 × 1 is 20-25% faster than 1 × 1 and 1 × 4 another 8-9%
/// faster. Wider tiles (2 × 3, 2 × 4) are 5-10% faster again at best, but LLVM spills
/// one or more accumulators of them inside the loop, and at a few stack positions in
/// a hundred those tiles ran twice as slow (likely the spill slot 4K-aliasing a
/// constant reloaded every iteration). The tiles used here have no spills.
///
/// # Safety
/// As [`run_job`], with `job.format` the format of `B`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run<B: Blocks>(job: &mut Job<'_>) {
    let mut t0 = 0;
    while job.n_tokens - t0 >= 4 {
        // SAFETY: forwarded; tokens t0..t0 + 4 are within n_tokens.
        unsafe { rows_pass::<B, 4, 1>(job, t0) };
        t0 += 4;
    }
    while t0 < job.n_tokens {
        // SAFETY: forwarded; token t0 is within n_tokens.
        unsafe { rows_pass::<B, 1, 4>(job, t0) };
        t0 += 1;
    }
}

/// All rows of the job against tokens `t0..t0 + T`: R rows per tile, then single rows.
///
/// # Safety
/// As [`run`], and `t0 + T <= job.n_tokens`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_pass<B: Blocks, const T: usize, const R: usize>(job: &mut Job<'_>, t0: usize) {
    debug_assert!(t0 + T <= job.n_tokens);
    // In bounds by the job's invariants: token t0 + T - 1 < n_tokens starts at
    // (t0 + T - 1) * act_stride, and its blocks end inside `acts`.
    let acts = job.acts[t0 * job.act_stride..].as_ptr();
    let mut r0 = 0;
    while r0 < job.n_rows {
        let rows = job.rows[r0 * job.row_bytes..].as_ptr();
        let tile_rows = if job.n_rows - r0 >= R { R } else { 1 };
        // SAFETY: rows r0..r0 + tile_rows (<= n_rows) and tokens t0..t0 + T
        // (<= n_tokens) hold `blocks` whole blocks each, inside the slices `rows` and
        // `acts` point into (Job invariants); the CPU features are forwarded from this
        // function's contract.
        let sums = unsafe {
            if tile_rows == R {
                tile::<B, R, T>(rows, job.row_bytes, acts, job.act_stride, job.blocks)
            } else {
                let one = tile::<B, 1, T>(rows, job.row_bytes, acts, job.act_stride, job.blocks);
                let mut wide = [[0.0; T]; R];
                wide[0] = one[0];
                wide
            }
        };
        for (r, row_sums) in sums.iter().take(tile_rows).enumerate() {
            for (t, &s) in row_sums.iter().enumerate() {
                job.out[(t0 + t) * job.out_stride + r0 + r] = s;
            }
        }
        r0 += tile_rows;
    }
}

/// One weight format with its activation format, as the tile loop sees them: decode a
/// block of each side once, then combine every (weight, activation) pair of the tile.
trait Blocks {
    /// Bytes of one weight block and of one activation block.
    const W: usize;
    const A: usize;
    /// Whether a block adds `m * s` to its scaled integer dot (Q4_1).
    const HAS_MIN: bool;
    /// A decoded weight block.
    type Weight: Copy;
    /// A decoded activation block.
    type Act: Copy;

    /// # Safety
    /// `p` points at a whole weight block; the CPU has AVX2, FMA and F16C.
    unsafe fn weight(p: *const u8) -> Self::Weight;
    /// # Safety
    /// `p` points at a whole activation block; the CPU has AVX2, FMA and F16C.
    unsafe fn act(p: *const u8) -> Self::Act;
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    unsafe fn term(w: &Self::Weight, a: &Self::Act) -> Term;
}

/// One block's contribution, summed over the 8 lanes: `p * d + m * s`.
#[derive(Clone, Copy)]
struct Term {
    /// The integer dot as 8 f32 partial sums (each exact).
    p: __m256,
    /// `dx * dy`, in every lane.
    d: __m256,
    /// Q4_1 only (unused otherwise): the weight block's minimum `m` in every lane and
    /// the activation block's `s` in lane 0 (zeros elsewhere), so the lanes add up to
    /// `m * s`. This keeps the min term in the vector accumulator: no scalar chain, no
    /// extra register per accumulator.
    m: __m256,
    s: __m256,
}

/// Dot products of R weight rows (starting at `w`, `w_stride` bytes apart) with T
/// activation rows (at `a`, `a_stride` apart), over `blocks` blocks: `[r][t]`.
///
/// # Safety
/// Each of the R rows and T activation rows holds `blocks` whole blocks in one live
/// allocation; the CPU has AVX2, FMA and F16C.
// Not inlined: one register allocation per tile shape, not one for the whole pass.
// Index loops over the const-sized arrays: LLVM unrolls them fully and keeps the
// arrays in registers; the iterator forms clippy suggests left a loop and spilled.
#[inline(never)]
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<B: Blocks, const R: usize, const T: usize>(
    w: *const u8,
    w_stride: usize,
    a: *const u8,
    a_stride: usize,
    blocks: usize,
) -> [[f32; T]; R] {
    // SAFETY: every pointer formed below is `w + r * w_stride + b * W` or
    // `a + t * a_stride + b * A` with r < R, t < T, b < blocks: the start of a block
    // inside the rows the contract promises; the loads read only that block.
    unsafe {
        // (R, T) accumulators, 8 partial sums each.
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for b in 0..blocks {
            // The R weight blocks are decoded into registers; each of the T activation
            // blocks is decoded once and dotted with all of them.
            // The next tile's rows: each row here is a stream of only a few cache lines,
            // too short for the hardware prefetcher to find in time (a profile shows the
            // weight loads stalling). Prefetching never faults, so the address may run
            // past the matrix.
            for r in 0..R {
                let ahead = w.wrapping_add((R + r) * w_stride + b * B::W);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            }
            let mut x = [B::weight(w.add(b * B::W)); R];
            for r in 1..R {
                x[r] = B::weight(w.add(r * w_stride + b * B::W));
            }
            for t in 0..T {
                let y = B::act(a.add(t * a_stride + b * B::A));
                for r in 0..R {
                    let e = B::term(&x[r], &y);
                    if !B::HAS_MIN {
                        acc[r][t] = _mm256_fmadd_ps(e.p, e.d, acc[r][t]);
                    } else if R * T > 1 {
                        // Two FMAs in a row on each accumulator: the other accumulators
                        // of the tile hide their latency.
                        acc[r][t] = _mm256_fmadd_ps(e.p, e.d, acc[r][t]);
                        acc[r][t] = _mm256_fmadd_ps(e.m, e.s, acc[r][t]);
                    } else {
                        // A lone accumulator: keep one dependent op per block.
                        let term = _mm256_fmadd_ps(e.p, e.d, _mm256_mul_ps(e.m, e.s));
                        acc[r][t] = _mm256_add_ps(acc[r][t], term);
                    }
                }
            }
        }
        let mut sums = [[0.0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                sums[r][t] = hsum(acc[r][t]);
            }
        }
        sums
    }
}

/// Q4_0 weights × Q8_0 activations.
struct Q4_0;

#[derive(Clone, Copy)]
struct Q4_0Weight {
    /// The 32 nibbles as bytes 0..=15, element order.
    q: __m256i,
    d: __m256,
}

#[derive(Clone, Copy)]
struct Q8Act {
    /// The 32 quants.
    y: __m256i,
    d: __m256,
}

#[derive(Clone, Copy)]
struct Q8_0ActOffset {
    act: Q8Act,
    /// `8 * (y[2i] + y[2i + 1])` as i16: what the -8 of every weight quant costs.
    off: __m256i,
}

impl Blocks for Q4_0 {
    const W: usize = kiln_ir::quant::q4_0::BLOCK_BYTES;
    const A: usize = kiln_ir::quant::q8_0::BLOCK_BYTES;
    const HAS_MIN: bool = false;
    type Weight = Q4_0Weight;
    type Act = Q8_0ActOffset;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(p: *const u8) -> Q4_0Weight {
        // SAFETY: a Q4_0 block is d (2 bytes) + 16 bytes of nibbles (contract).
        unsafe {
            Q4_0Weight {
                q: nibbles(p.add(2)),
                d: f16_splat(p),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(p: *const u8) -> Q8_0ActOffset {
        // SAFETY: a Q8_0 block (contract).
        unsafe {
            let act = q8_0_act(p);
            let off = _mm256_maddubs_epi16(_mm256_set1_epi8(8), act.y);
            Q8_0ActOffset { act, off }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn term(w: &Q4_0Weight, a: &Q8_0ActOffset) -> Term {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe {
            let pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(w.q, a.act.y), a.off);
            Term {
                p: sum_pairs(pairs),
                d: _mm256_mul_ps(w.d, a.act.d),
                m: _mm256_setzero_ps(),
                s: _mm256_setzero_ps(),
            }
        }
    }
}

/// Q4_1 weights × Q8_1 activations.
struct Q4_1;

#[derive(Clone, Copy)]
struct Q4_1Weight {
    q: __m256i,
    d: __m256,
    m: __m256,
}

#[derive(Clone, Copy)]
struct Q8_1Act {
    act: Q8Act,
    /// `s = d * sum(y)`, stored in the block, in lane 0; zeros elsewhere.
    s: __m256,
}

impl Blocks for Q4_1 {
    const W: usize = kiln_ir::quant::q4_1::BLOCK_BYTES;
    const A: usize = kiln_ir::quant::q8_1::BLOCK_BYTES;
    const HAS_MIN: bool = true;
    type Weight = Q4_1Weight;
    type Act = Q8_1Act;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(p: *const u8) -> Q4_1Weight {
        // SAFETY: a Q4_1 block is d, m (2 bytes each) + 16 bytes of nibbles (contract).
        unsafe {
            Q4_1Weight {
                q: nibbles(p.add(4)),
                d: f16_splat(p),
                m: f16_splat(p.add(2)),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(p: *const u8) -> Q8_1Act {
        // SAFETY: a Q8_1 block is d, s (2 bytes each) + 32 quants (contract).
        unsafe {
            Q8_1Act {
                act: Q8Act {
                    y: _mm256_loadu_si256(p.add(4).cast()),
                    d: f16_splat(p),
                },
                s: f16_lane0(p.add(2)),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn term(w: &Q4_1Weight, a: &Q8_1Act) -> Term {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe {
            Term {
                p: sum_pairs(_mm256_maddubs_epi16(w.q, a.act.y)),
                d: _mm256_mul_ps(w.d, a.act.d),
                m: w.m,
                s: a.s,
            }
        }
    }
}

/// Q8_0 weights × Q8_0 activations.
struct Q8_0;

#[derive(Clone, Copy)]
struct Q8_0Weight {
    x: __m256i,
    /// `|x|`, read as unsigned (so -128 is 128).
    ax: __m256i,
    d: __m256,
}

impl Blocks for Q8_0 {
    const W: usize = kiln_ir::quant::q8_0::BLOCK_BYTES;
    const A: usize = kiln_ir::quant::q8_0::BLOCK_BYTES;
    const HAS_MIN: bool = false;
    type Weight = Q8_0Weight;
    type Act = Q8Act;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weight(p: *const u8) -> Q8_0Weight {
        // SAFETY: a Q8_0 block (contract).
        unsafe {
            let Q8Act { y: x, d } = q8_0_act(p);
            Q8_0Weight {
                x,
                ax: _mm256_sign_epi8(x, x),
                d,
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(p: *const u8) -> Q8Act {
        // SAFETY: a Q8_0 block (contract).
        unsafe { q8_0_act(p) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn term(w: &Q8_0Weight, a: &Q8Act) -> Term {
        // SAFETY: value intrinsics only; the CPU features are the contract.
        unsafe {
            // x * y = |x| * (y * sign(x)); exact unless y = -128 meets x < 0.
            let sy = _mm256_sign_epi8(a.y, w.x);
            Term {
                p: sum_pairs(_mm256_maddubs_epi16(w.ax, sy)),
                d: _mm256_mul_ps(w.d, a.d),
                m: _mm256_setzero_ps(),
                s: _mm256_setzero_ps(),
            }
        }
    }
}

/// Loads a Q8_0 block: d (2 bytes) + 32 quants.
///
/// # Safety
/// `p` points at 34 readable bytes; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_act(p: *const u8) -> Q8Act {
    // SAFETY: reads bytes 0..34 of the block (contract).
    unsafe {
        Q8Act {
            y: _mm256_loadu_si256(p.add(2).cast()),
            d: f16_splat(p),
        }
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

/// The little-endian f16 at `p`, as f32 in every lane.
///
/// # Safety
/// `p` points at 2 readable bytes; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_splat(p: *const u8) -> __m256 {
    // SAFETY: reads 2 bytes (contract); x86 is little endian.
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16(p.cast::<i16>().read_unaligned())) }
}

/// The little-endian f16 at `p`, as f32 in lane 0; the other lanes are 0.
///
/// # Safety
/// `p` points at 2 readable bytes; the CPU has AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_lane0(p: *const u8) -> __m256 {
    // SAFETY: reads 2 bytes (contract).
    unsafe {
        let bits = i32::from(p.cast::<u16>().read_unaligned());
        _mm256_cvtph_ps(_mm_cvtsi32_si128(bits))
    }
}

/// 16 i16 pair sums → 8 i32 sums of 4 products → f32 (exact: each is below 2^17).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_pairs(pairs: __m256i) -> __m256 {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe { _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))) }
}

/// The sum of the 8 lanes.
///
/// # Safety
/// The CPU has AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}
