//! AVX2 kernels (with FMA and F16C) in the style of ggml's x86 `vec_dot`s.
//!
//! Per block of 32 values, the integer dot is done in 256-bit registers:
//! `_mm256_maddubs_epi16` multiplies unsigned bytes by signed bytes and adds adjacent
//! pairs into i16, `_mm256_madd_epi16` by ones adds pairs again into 8 i32 partial sums,
//! which are converted to f32 and multiplied by the blocks' scales with an FMA.
//! - Q4_1: the nibbles (0..=15) are already unsigned; the minimum enters as `m * s`,
//!   `s = d_a * sum(y)` being stored in the Q8_1 activation block.
//! - Q4_0: `d (q - 8)` is taken as `d q + m` with `m = -8 d`, so it runs as Q4_1 does
//!   (the staging computes `s` of its Q8_0 activation blocks).
//! - Q8_0: ggml's sign trick, `|x| * (y * sign(x))`, which is exact for any weight
//!   byte as long as activation quants avoid -128 (see the module above).
//! - Q5_0, Q5_1: as Q4_0 (`m = -16 d`) and Q4_1, the fifth bits ORed into the nibbles
//!   (quants 0..=31).
//!
//! No i16 sum saturates: a pair is at most 2 * 31 * 128 for the 4- and 5-bit formats and
//! 2 * 128 * 127 for Q8_0. The i32 lanes (4 products each) convert to f32 exactly.
//! The 32-value formats' [`Blocks`] are in `blocks.rs`; the K-quants (256-value
//! super-blocks against Q8_K activations, no staging) have their own tiles in
//! `kquant.rs`.
//!
//! A job's activations are first staged ([`super::stage`]): decoded once into units a
//! tile reads with plain loads. [`tile`] then computes an R × T tile (weight rows ×
//! tokens), one block at a time: the R weight blocks are decoded into registers and
//! dotted with each of the T staged activation blocks. [`run`] covers a job with tiles.
//! The kernels are bound by the multiply ports (maddubs, madd, convert, scale, FMA per
//! block pair).
//!
//! MSRV note: under Rust 1.85 the value intrinsics are `unsafe fn`s; from 1.87 they
//! are safe inside `#[target_feature]` functions. Each helper therefore wraps its body
//! in one `unsafe` block, and `unused_unsafe` is allowed where a body only computes.

#![allow(unused_unsafe)]

use core::arch::x86_64::*;

use core::cell::RefCell;

use super::stage::{ActBlocks, D_AT, GROUP, S_AT, Staged, UNIT, WIDE};

mod blocks;
mod kquant;
mod wide;
use super::{Format, Job, Kernels};
use blocks::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};

/// Whether this CPU has what these kernels are compiled for.
pub(super) fn detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether it also has AVX-VNNI (`vpdpbusd` on 256-bit registers).
pub(super) fn detected_vnni() -> bool {
    detected() && is_x86_feature_detected!("avxvnni")
}

/// Whether it has AVX-512 VNNI with AVX-512 VL and BW: the same `vpdpbusd` on 256-bit
/// registers, EVEX-encoded (AMD Zen 4, Intel Ice Lake and later server parts, which lack
/// the VEX-encoded AVX-VNNI or have it beside).
pub(super) fn detected_avx512_vnni() -> bool {
    detected()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// The AVX2 table; [`super::kernels`] hands it out only after [`detected`].
pub(super) const KERNELS: Kernels = Kernels {
    isa: "avx2",
    run: run_job::<Avx2>,
};

/// The AVX-VNNI table; handed out only after [`detected_vnni`].
pub(super) const KERNELS_VNNI: Kernels = Kernels {
    isa: "avx2+avx-vnni",
    run: run_job::<AvxVnni>,
};

/// The AVX-512 VNNI table; handed out only after [`detected_avx512_vnni`].
pub(super) const KERNELS_AVX512_VNNI: Kernels = Kernels {
    isa: "avx2+avx512-vnni",
    run: run_job::<Avx512Vnni>,
};

/// What differs between the tables: the instruction that dots 32 unsigned bytes
/// with 32 signed bytes into 8 i32 sums of 4 products, and the tile entry compiled with
/// the features it needs.
trait Isa {
    /// # Safety
    /// The CPU has this ISA's features.
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i;

    /// `acc +` [`Self::dot_u8_i8`]`(u, s)`.
    ///
    /// # Safety
    /// The CPU has this ISA's features.
    unsafe fn dot_u8_i8_add(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;

    /// The 5-bit quants of a Q5_0/Q5_1 block: `nibbles` with 0x10 added where the
    /// block's fifth bits (the little-endian u32 at `qh`) are set.
    ///
    /// # Safety
    /// 4 readable bytes at `qh`; the CPU has this ISA's features.
    #[inline(always)]
    unsafe fn with_fifth_bits(nibbles: __m256i, qh: *const u8) -> __m256i {
        // SAFETY: forwarded from this function's contract.
        unsafe { _mm256_or_si256(nibbles, blocks::fifth_bits(qh)) }
    }

    /// [`wide::wide_body`] compiled for this ISA.
    ///
    /// # Safety
    /// As [`wide::wide_body`], and the CPU has this ISA's features.
    unsafe fn wide_tile<B: Blocks, const RUNS: usize>(
        w: *const u8,
        w_stride: usize,
        runs: *const u8,
        run_stride: usize,
        blocks: usize,
    ) -> [[f32; WIDE]; RUNS];

    /// [`tile_body`] compiled for this ISA.
    ///
    /// # Safety
    /// As [`tile_body`], and the CPU has this ISA's features.
    unsafe fn tile<B: Blocks, const R: usize, const T: usize>(
        w: *const u8,
        w_stride: usize,
        units: *const u8,
        lane: usize,
        blocks: usize,
    ) -> [[f32; T]; R];
}

/// The tile entry points of an [`Isa`] impl, compiled for its CPU features (a
/// `#[target_feature]` list must be a literal on each function). Not inlined: one register
/// allocation per tile shape, not one for the whole pass.
macro_rules! tile_entries {
    ($features:literal) => {
        #[inline(never)]
        #[target_feature(enable = $features)]
        unsafe fn wide_tile<B: Blocks, const RUNS: usize>(
            w: *const u8,
            w_stride: usize,
            runs: *const u8,
            run_stride: usize,
            blocks: usize,
        ) -> [[f32; WIDE]; RUNS] {
            // SAFETY: forwarded from this function's contract.
            unsafe { wide::wide_body::<B, Self, RUNS>(w, w_stride, runs, run_stride, blocks) }
        }

        #[inline(never)]
        #[target_feature(enable = $features)]
        unsafe fn tile<B: Blocks, const R: usize, const T: usize>(
            w: *const u8,
            w_stride: usize,
            units: *const u8,
            lane: usize,
            blocks: usize,
        ) -> [[f32; T]; R] {
            // SAFETY: forwarded from this function's contract.
            unsafe { tile_body::<B, Self, R, T>(w, w_stride, units, lane, blocks) }
        }
    };
}

/// AVX2: `maddubs` into i16 pairs (no pair saturates, see above), then `madd` by ones.
struct Avx2;

/// AVX-VNNI: one `vpdpbusd`, which adds the four products of each i32 lane directly.
struct AvxVnni;

/// AVX-512 VNNI (with VL and BW): the same `vpdpbusd` on 256-bit registers, EVEX-encoded,
/// and Q5 fifth bits from a mask register; the same integer sums, so the same bits as
/// the other tables.
struct Avx512Vnni;

impl Isa for Avx2 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_u8_i8_add(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe { _mm256_add_epi32(acc, Self::dot_u8_i8(u, s)) }
    }

    tile_entries!("avx2,fma,f16c");
}

impl Isa for AvxVnni {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe { _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn dot_u8_i8_add(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe { _mm256_dpbusd_avx_epi32(acc, u, s) }
    }

    tile_entries!("avx2,fma,f16c,avxvnni");
}

impl Isa for Avx512Vnni {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn with_fifth_bits(nibbles: __m256i, qh: *const u8) -> __m256i {
        // SAFETY: reads 4 bytes (contract); the rest are value intrinsics. The u32 is a
        // byte mask in element order as it is: one masked add (nibbles <= 15, so + 16
        // is the OR) instead of the AVX2 shuffle, compare and AND.
        unsafe {
            let bits = qh.cast::<u32>().read_unaligned();
            _mm256_mask_add_epi8(nibbles, bits, nibbles, _mm256_set1_epi8(0x10))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn dot_u8_i8_add(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: value intrinsics only (contract: the CPU features).
        unsafe { _mm256_dpbusd_epi32(acc, u, s) }
    }

    tile_entries!("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni");
}

/// [`super::Kernel`] of the AVX2 paths.
///
/// # Safety
/// `job` passed [`Job::checked`] and the CPU has AVX2, FMA, F16C and `I`'s features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_job<I: Isa>(job: &mut Job<'_>) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match job.format {
            Format::Q4_0 => run::<Q4_0, I>(job),
            Format::Q4_1 => run::<Q4_1, I>(job),
            Format::Q8_0 => run::<Q8_0, I>(job),
            Format::Q5_0 => run::<Q5_0, I>(job),
            Format::Q5_1 => run::<Q5_1, I>(job),
            Format::Q4K => kquant::run::<kquant::Q4K>(job),
            Format::Q5K => kquant::run::<kquant::Q5K>(job),
            Format::Q6K => kquant::run::<kquant::Q6K>(job),
        }
    }
}

thread_local! {
    /// This thread's staged activations, for jobs that come without them; reused.
    static STAGED: RefCell<Staged> = RefCell::new(Staged::new(ActBlocks::Q8_0, 0, 0));
}

/// Covers the job with tiles over its staged activations (the caller's, or staged here):
/// runs of [`WIDE`] tokens with the wide tiles ([`wide`]: one weight row, one or two
/// runs), a remaining whole group of [`GROUP`] tokens with a 1 × GROUP tile, then each
/// remaining token with 4 × 1 tiles (four rows, one token). Both
/// shapes compute a (row, token) result with the same operations in the same order
/// ([`tile_body`]), so a token's results do not depend on the tokens it is batched with.
///
/// # Safety
/// As [`run_job`], with `job.format` the format of `B`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run<B: Blocks, I: Isa>(job: &mut Job<'_>) {
    let passes = |job: &mut Job<'_>, staged: &Staged| {
        let mut t0 = 0;
        while job.n_tokens - t0 >= 2 * WIDE {
            // SAFETY: forwarded; tokens t0..t0 + 2 WIDE are two whole staged runs.
            unsafe { wide::wide_pass::<B, I, 2>(job, staged, t0) };
            t0 += 2 * WIDE;
        }
        if job.n_tokens - t0 >= WIDE {
            // SAFETY: forwarded; tokens t0..t0 + WIDE are a whole staged run.
            unsafe { wide::wide_pass::<B, I, 1>(job, staged, t0) };
            t0 += WIDE;
        }
        while job.n_tokens - t0 >= GROUP {
            // SAFETY: forwarded; tokens t0..t0 + GROUP are within n_tokens and staged.
            unsafe { rows_pass::<B, I, GROUP, 1>(job, &staged.bytes, t0) };
            t0 += GROUP;
        }
        while t0 < job.n_tokens {
            // SAFETY: forwarded; token t0 is within n_tokens and staged.
            unsafe { rows_pass::<B, I, 1, 4>(job, &staged.bytes, t0) };
            t0 += 1;
        }
    };
    if let Some(staged) = job.staged {
        passes(job, staged);
        return;
    }
    STAGED.with_borrow_mut(|staged| {
        let format = job.format.act_blocks();
        staged.restage(format, job.acts, job.act_stride, job.n_tokens, job.blocks);
        passes(job, staged);
    });
}

/// All rows of the job against tokens `t0..t0 + T`: R rows per tile, then single rows.
///
/// # Safety
/// As [`run`], `t0 + T <= job.n_tokens`, tokens `t0..t0 + T` in one group, and `staged`
/// holds the job's activations ([`Staged`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_pass<B: Blocks, I: Isa, const T: usize, const R: usize>(
    job: &mut Job<'_>,
    staged: &[u8],
    t0: usize,
) {
    debug_assert!(t0 + T <= job.n_tokens && t0 % GROUP + T <= GROUP);
    debug_assert!(staged.len() >= job.n_tokens.div_ceil(GROUP) * job.blocks * UNIT);
    // The group's units start here; the tile reads lanes t0 % GROUP .. + T of each.
    let units = staged[t0 / GROUP * job.blocks * UNIT..].as_ptr();
    let lane = t0 % GROUP;
    let mut r0 = 0;
    while r0 < job.n_rows {
        let rows = job.rows[r0 * job.row_bytes..].as_ptr();
        let tile_rows = if job.n_rows - r0 >= R { R } else { 1 };
        // SAFETY: rows r0..r0 + tile_rows (<= n_rows) hold `blocks` whole blocks each
        // inside `job.rows` (Job invariants), the group's `blocks` units are inside
        // `staged` (this function's contract), and lane + T <= GROUP; the CPU features
        // are forwarded from this function's contract.
        let sums = unsafe {
            if tile_rows == R {
                I::tile::<B, R, T>(rows, job.row_bytes, units, lane, job.blocks)
            } else {
                let one = I::tile::<B, 1, T>(rows, job.row_bytes, units, lane, job.blocks);
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

/// One weight format as the tile loop sees it: decode a weight block's quants once,
/// then dot them with every staged activation block of the tile.
trait Blocks {
    /// Bytes of one weight block.
    const W: usize;
    /// Whether a block adds `m * s` to its scaled integer dot (Q4_1, and Q4_0 as
    /// `m = -8 d`).
    const HAS_MIN: bool;
    /// A weight block's quants, decoded.
    type Weight: Copy;
    /// Whether [`Self::bytes`] are signed (Q8_0: the wide tile applies the sign trick
    /// per broadcast chunk); else they are the unsigned operand as they are.
    const SIGNED: bool;

    /// The block's 32 quants as bytes, element order.
    fn bytes(w: &Self::Weight) -> __m256i;

    /// # Safety
    /// `p` points at a whole weight block; the CPU has AVX2, FMA and F16C.
    unsafe fn weight<I: Isa>(p: *const u8) -> Self::Weight;
    /// The integer dot of the block with 32 activation quants, as 8 i32 partial sums.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    unsafe fn dot<I: Isa>(w: &Self::Weight, y: __m256i) -> __m256i;
    /// The scale `d` of the weight blocks at `p`, `p + stride`, .. (`n <= 4` of them)
    /// in lanes 0..n.
    ///
    /// # Safety
    /// `n` whole weight blocks at those addresses; the CPU has AVX2, FMA and F16C.
    unsafe fn scales(p: *const u8, stride: usize, n: usize) -> __m128;
    /// Their minimum `m`, likewise; only called when [`Self::HAS_MIN`].
    ///
    /// # Safety
    /// As [`Self::scales`].
    unsafe fn mins(p: *const u8, stride: usize, n: usize) -> __m128;
}

/// Dot products of R weight rows (starting at `w`, `w_stride` bytes apart) with the T
/// staged tokens in lanes `lane..lane + T` of the group at `units`, over `blocks`
/// blocks: `[r][t]`. Either T is 1 (token `lane`, R <= 4 rows) or R is 1 and the tile
/// takes the whole group (T = GROUP, `lane` 0).
///
/// Per block, the R × T integer dots are summed exactly into one i32 each (an
/// `hadd`-like reduction of four vectors into the four lanes of one), converted to f32
/// and accumulated as `acc += P · (d_w · d_a)` and `acc_min += m · s` in 128-bit
/// registers whose lanes are the group's tokens (T > 1) or the rows (T = 1). A (row,
/// token) result is therefore the same whatever the tile shape: the same scalar
/// operations, in block order.
///
/// # Safety
/// Each of the R rows holds `blocks` whole weight blocks in one live allocation, the
/// `blocks` units at `units` are staged, `lane + T <= GROUP`, and the CPU has AVX2, FMA
/// and F16C (from the [`Isa::tile`] it is inlined into).
// Always inlined into an [`Isa::tile`], which brings the target features (this function
// has none of its own, so that one body serves every table).
// Index loops over the const-sized arrays: LLVM unrolls them fully and keeps the
// arrays in registers; the iterator forms clippy suggests left a loop and spilled.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_body<B: Blocks, I: Isa, const R: usize, const T: usize>(
    w: *const u8,
    w_stride: usize,
    units: *const u8,
    lane: usize,
    blocks: usize,
) -> [[f32; T]; R] {
    debug_assert!(R <= 4 && (R == 1 || T == 1) && lane + T <= GROUP);
    debug_assert!(T == 1 || (T == GROUP && lane == 0));
    // SAFETY: every weight pointer formed below is `w + r * w_stride + b * W` with
    // r < R, b < blocks: a block inside the rows the contract promises; every
    // activation pointer is inside unit b < blocks (the quants of a token lane < GROUP,
    // or one of its 4-lane arrays of d and s). Loads read only those bytes.
    unsafe {
        // Four lanes: the tokens (T > 1) or the rows (T = 1); Σ P · (d_w · d_a) and Σ m · s
        // apart, so that each is a chain of one FMA per block.
        let mut acc = _mm_setzero_ps();
        let mut acc_min = _mm_setzero_ps();
        for b in 0..blocks {
            // Prefetching never faults, so the addresses may run past the matrix.
            if T == 1 {
                // Decode, from memory: the tile's R rows are R interleaved streams of
                // a few cache lines each, which the hardware prefetchers follow badly
                // (the LM head of Gemma 3 270M, 178 MB of Q8_0, streamed at a third of
                // a plain read's bandwidth). The rows of a job are contiguous, so the
                // tiles read one address range in order: prefetch it, in order, a fixed
                // distance ahead, the R · W bytes this block step consumes.
                let ahead = w.wrapping_add(PREFETCH_AHEAD + b * R * B::W);
                let mut line = 0;
                while line < R * B::W {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
                    line += 64;
                }
            } else {
                // The next tile's rows: each row here is a stream of only a few cache
                // lines, too short for the hardware prefetcher to find in time (a
                // profile shows the weight loads stalling).
                for r in 0..R {
                    let ahead = w.wrapping_add((R + r) * w_stride + b * B::W);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
            }
            let wb = w.add(b * B::W);
            if T > 1 {
                // One row's block against the whole group (lane 0, T = GROUP); lane t
                // of the sums is token t.
                let x = B::weight::<I>(wb);
                let d = _mm_broadcastss_ps(B::scales(wb, w_stride, 1));
                let m = if B::HAS_MIN {
                    _mm_broadcastss_ps(B::mins(wb, w_stride, 1))
                } else {
                    _mm_setzero_ps()
                };
                let unit = units.add(b * UNIT);
                let mut dots = [_mm256_setzero_si256(); 4];
                for t in 0..T {
                    let y = _mm256_loadu_si256(unit.add(32 * t).cast());
                    dots[t] = B::dot::<I>(&x, y);
                }
                let p = _mm_cvtepi32_ps(sum4(dots));
                let dd = _mm_mul_ps(d, _mm_loadu_ps(unit.add(D_AT).cast()));
                acc = _mm_fmadd_ps(p, dd, acc);
                if B::HAS_MIN {
                    let s = _mm_loadu_ps(unit.add(S_AT).cast());
                    acc_min = _mm_fmadd_ps(m, s, acc_min);
                }
            } else {
                // The R rows' blocks against token `lane`; lane r of the sums is row r.
                let unit = units.add(b * UNIT);
                let y = _mm256_loadu_si256(unit.add(32 * lane).cast());
                let mut dots = [_mm256_setzero_si256(); 4];
                for r in 0..R {
                    dots[r] = B::dot::<I>(&B::weight::<I>(wb.add(r * w_stride)), y);
                }
                let p = _mm_cvtepi32_ps(sum4(dots));
                let da = _mm_broadcast_ss(&*unit.add(D_AT + 4 * lane).cast::<f32>());
                let dd = _mm_mul_ps(B::scales(wb, w_stride, R), da);
                acc = _mm_fmadd_ps(p, dd, acc);
                if B::HAS_MIN {
                    let s = _mm_broadcast_ss(&*unit.add(S_AT + 4 * lane).cast::<f32>());
                    acc_min = _mm_fmadd_ps(B::mins(wb, w_stride, R), s, acc_min);
                }
            }
        }
        if B::HAS_MIN {
            acc = _mm_add_ps(acc, acc_min);
        }
        let mut lanes = [0.0f32; 4];
        _mm_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sums = [[0.0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                sums[r][t] = lanes[if T > 1 { t } else { r }];
            }
        }
        sums
    }
}

/// How far ahead of a one-token tile its weight rows are prefetched: about what two
/// cores keep in flight at DRAM latency (measured on a 2-core Zen 4 VM, 178 MB of Q8_0
/// rows: from 0.3 of a plain read's bandwidth with the per-row prefetch to 0.5-0.6 with
/// 4 KiB or more; 1 KiB gave less).
const PREFETCH_AHEAD: usize = 4096;

/// The sums of the 8 i32 lanes of each of four vectors, in the four lanes of one (exact:
/// integer adds of block dots far below 2^31).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum4(v: [__m256i; 4]) -> __m128i {
    // SAFETY: value intrinsics only (contract: the CPU features).
    unsafe {
        // [a0+a2, b0+b2, a1+a3, b1+b3 | the same for lanes 4..8]
        let ab = _mm256_add_epi32(
            _mm256_unpacklo_epi32(v[0], v[1]),
            _mm256_unpackhi_epi32(v[0], v[1]),
        );
        let cd = _mm256_add_epi32(
            _mm256_unpacklo_epi32(v[2], v[3]),
            _mm256_unpackhi_epi32(v[2], v[3]),
        );
        // [a0123, b0123, c0123, d0123 | a4567, b4567, c4567, d4567]
        let abcd = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
        _mm_add_epi32(
            _mm256_castsi256_si128(abcd),
            _mm256_extracti128_si256::<1>(abcd),
        )
    }
}
