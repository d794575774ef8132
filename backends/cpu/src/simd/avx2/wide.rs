//! The wide tile: one weight row against runs of [`WIDE`] tokens staged interleaved
//! (see `stage.rs`), for batches. Each 4-byte chunk of the weight block is broadcast to
//! the 8 lanes and dotted (`vpdpbusd`, or `maddubs` + `madd`) with the 8 tokens' matching
//! chunks, so the 8 lanes accumulate the 8 tokens' block dots directly: no reduction
//! across lanes, and one weight decode shared by every token of the tile. About one
//! multiply µop per (row, token) block pair, against three in the 1 × 4 tile.
//!
//! A (row, token) result takes the same operations as in the narrow tiles (exact integer
//! block dot, then `acc += P · (d_w · d_a)`, `acc_min += m · s`, `acc + acc_min`), so a
//! token's results do not depend on the tile it lands in.

use core::arch::x86_64::*;

use super::super::stage::{W_D_AT, W_S_AT, WIDE, WIDE_UNIT};
use super::{Blocks, Isa, Job, Staged};

/// All rows of the job against the RUNS runs of tokens from `t0`.
///
/// # Safety
/// As `run`: the job passed `Job::checked`, `staged` holds its activations, the CPU has
/// `I`'s features; and tokens `t0..t0 + RUNS * WIDE` are whole staged runs (`t0` a
/// multiple of WIDE).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn wide_pass<B: Blocks, I: Isa, const RUNS: usize>(
    job: &mut Job<'_>,
    staged: &Staged,
    t0: usize,
) {
    debug_assert!(t0.is_multiple_of(WIDE) && t0 + RUNS * WIDE <= job.n_tokens);
    let run_stride = job.blocks * WIDE_UNIT;
    let runs = staged.bytes[staged.wide_at() + t0 / WIDE * run_stride..].as_ptr();
    for r in 0..job.n_rows {
        let row = job.rows[r * job.row_bytes..].as_ptr();
        // SAFETY: row r < n_rows holds `blocks` whole blocks inside `job.rows` (Job
        // invariants); the RUNS runs at `runs` are staged (this function's contract);
        // the CPU features are forwarded.
        let sums =
            unsafe { I::wide_tile::<B, RUNS>(row, job.row_bytes, runs, run_stride, job.blocks) };
        for (h, run) in sums.iter().enumerate() {
            for (i, &s) in run.iter().enumerate() {
                job.out[(t0 + h * WIDE + i) * job.out_stride + r] = s;
            }
        }
    }
}

/// Dot products of the weight row at `w` with the RUNS runs at `runs` (`run_stride`
/// bytes apart), over `blocks` blocks: `[run][token]`.
///
/// # Safety
/// The row holds `blocks` whole weight blocks in one live allocation, the runs' `blocks`
/// units are staged, and the CPU has AVX2, FMA, F16C (from the `Isa::wide_tile` it is
/// inlined into) and `I`'s features.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // const-sized arrays stay in registers
pub(super) unsafe fn wide_body<B: Blocks, I: Isa, const RUNS: usize>(
    w: *const u8,
    w_stride: usize,
    runs: *const u8,
    run_stride: usize,
    blocks: usize,
) -> [[f32; WIDE]; RUNS] {
    // SAFETY: the weight pointers are `w + b * W`, b < blocks, inside the row; the
    // activation pointers are inside unit b of a run the contract names (its quant
    // chunks, or its arrays of 8 d and 8 s). Loads read only those bytes.
    unsafe {
        // Lanes are the run's tokens.
        let mut acc = [_mm256_setzero_ps(); RUNS];
        let mut acc_min = [_mm256_setzero_ps(); RUNS];
        for b in 0..blocks {
            // The next row, which the next tile reads (see `tile_body`).
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(w_stride + b * B::W).cast());
            let wb = w.add(b * B::W);
            let x = B::weight::<I>(wb);
            let mut chunks = [0i32; 8];
            _mm256_storeu_si256(chunks.as_mut_ptr().cast(), B::bytes(&x));
            let mut p = [_mm256_setzero_si256(); RUNS];
            for k in 0..8 {
                let c = _mm256_set1_epi32(chunks[k]);
                // Q8_0: |x| · (y · sign(x)), as in the narrow tiles.
                let u = if B::SIGNED { _mm256_abs_epi8(c) } else { c };
                for h in 0..RUNS {
                    let y = _mm256_loadu_si256(
                        runs.add(h * run_stride + b * WIDE_UNIT + 32 * k).cast(),
                    );
                    let y = if B::SIGNED { _mm256_sign_epi8(y, c) } else { y };
                    p[h] = I::dot_u8_i8_add(p[h], u, y);
                }
            }
            let d = _mm256_broadcastss_ps(B::scales(wb, w_stride, 1));
            let m = if B::HAS_MIN {
                _mm256_broadcastss_ps(B::mins(wb, w_stride, 1))
            } else {
                _mm256_setzero_ps()
            };
            for h in 0..RUNS {
                let unit = runs.add(h * run_stride + b * WIDE_UNIT);
                let dd = _mm256_mul_ps(d, _mm256_loadu_ps(unit.add(W_D_AT).cast()));
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[h]), dd, acc[h]);
                if B::HAS_MIN {
                    let s = _mm256_loadu_ps(unit.add(W_S_AT).cast());
                    acc_min[h] = _mm256_fmadd_ps(m, s, acc_min[h]);
                }
            }
        }
        let mut sums = [[0.0f32; WIDE]; RUNS];
        for h in 0..RUNS {
            if B::HAS_MIN {
                acc[h] = _mm256_add_ps(acc[h], acc_min[h]);
            }
            _mm256_storeu_ps(sums[h].as_mut_ptr(), acc[h]);
        }
        sums
    }
}
