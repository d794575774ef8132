//! Shared helpers for the block-format tests: row generators, poisoned buffers, bounds.

use proptest::collection::vec;
use proptest::prelude::*;

/// Largest absolute error of rounding `v` to f16 (normal range: half an ulp, 2^-11
/// relative; subnormal range: half the subnormal spacing, 2^-25).
pub fn f16_rounding(v: f32) -> f32 {
    v.abs() * 2f32.powi(-11) + 2f32.powi(-25)
}

/// An f32 buffer of `n` NaNs, so a test can tell which elements a call wrote.
pub fn poisoned(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// Asserts that a call overwrote every NaN of a [`poisoned`] buffer.
pub fn assert_all_written(out: &[f32]) {
    if let Some(i) = out.iter().position(|v| v.is_nan()) {
        panic!("element {i} of {} was not written", out.len());
    }
}

/// Runs a quantizer twice, into bytes poisoned with 0x00 and with 0xFF, asserts both
/// runs wrote the same bytes (so every byte was written) and returns them.
pub fn quantize_checked(
    quantize: impl Fn(&[f32], &mut [u8]),
    src: &[f32],
    n_bytes: usize,
) -> Vec<u8> {
    let mut a = vec![0x00u8; n_bytes];
    let mut b = vec![0xFFu8; n_bytes];
    quantize(src, &mut a);
    quantize(src, &mut b);
    assert_eq!(a, b, "the quantizer left some output bytes unwritten");
    a
}

/// Exact-ish dot product in f64, and the sum of the absolute products (the scale
/// against which a rounding error is measured).
pub fn dot_f64(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        let p = x as f64 * y as f64;
        (s + p, m + p.abs())
    })
}

/// Rows of 32..=192 values (whole 32-value blocks) in realistic shapes: uniform at a few
/// scales, one large outlier, constant, and all of one sign.
pub fn rows() -> impl Strategy<Value = Vec<f32>> {
    (
        1usize..=6,
        prop_oneof![Just(0.05f32), Just(1.0f32), Just(40.0f32)],
    )
        .prop_flat_map(|(blocks, scale)| rows_of(blocks * 32, scale))
}

/// Two rows of the same length, for dot products.
pub fn row_pairs() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (
        1usize..=6,
        prop_oneof![Just(0.05f32), Just(1.0f32), Just(40.0f32)],
    )
        .prop_flat_map(|(blocks, scale)| (rows_of(blocks * 32, scale), rows_of(blocks * 32, 1.0)))
}

/// Checks a K-quant round trip `src` -> `out`, super-block by super-block: every error
/// is at most one step of a plain `nmax`-level quantizer over the super-block's range
/// (`max - min(min, 0)`; `2 max|x|` for the signed Q6_K, `nmax` 64), plus what the
/// 6-bit storage of the sub-block scales and minimums can cost on top (half a step of
/// each: `range / 126` at the top of a sub-block's grid, `max|x| / 126` at its bottom),
/// plus the f16 roundings of `d` and `dmin`: 2^-11 relative each, or, where they fall
/// among the f16 subnormals, 2^-25 absolute times the largest multiplier of `d`
/// (`q · sc`).
pub fn check_round_trip_k(src: &[f32], out: &[f32], nmax: f32) -> Result<(), TestCaseError> {
    for (x, y) in src.chunks(256).zip(out.chunks(256)) {
        let max = x.iter().copied().fold(f32::MIN, f32::max);
        let min = x.iter().copied().fold(f32::MAX, f32::min);
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let range = if nmax == 64.0 {
            2.0 * amax
        } else {
            max - min.min(0.0)
        };
        let multiplier = if nmax == 64.0 {
            32.0 * 128.0
        } else {
            (nmax + 1.0) * 63.0
        };
        let f16_slack = amax * 2f32.powi(-9) + multiplier * 2f32.powi(-25);
        let bound = range / nmax + (range + amax) / 126.0 + f16_slack;
        for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
            prop_assert!(
                (a - b).abs() <= bound,
                "element {i}: {a} -> {b}, bound {bound} (range {range})"
            );
        }
    }
    Ok(())
}

/// Rows of 256..=1024 values (whole 256-value super-blocks), shaped as [`rows`].
pub fn rows_k() -> impl Strategy<Value = Vec<f32>> {
    (
        1usize..=4,
        prop_oneof![Just(0.05f32), Just(1.0f32), Just(40.0f32)],
    )
        .prop_flat_map(|(blocks, scale)| rows_of(blocks * 256, scale))
}

/// Two rows of the same length in whole super-blocks, for dot products.
pub fn row_pairs_k() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (
        1usize..=4,
        prop_oneof![Just(0.05f32), Just(1.0f32), Just(40.0f32)],
    )
        .prop_flat_map(|(blocks, scale)| (rows_of(blocks * 256, scale), rows_of(blocks * 256, 1.0)))
}

fn rows_of(n: usize, scale: f32) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        4 => vec(-scale..scale, n),
        2 => (vec(-scale..scale, n), 0..n, prop::bool::ANY).prop_map(move |(mut v, i, neg)| {
            v[i] = if neg { -20.0 } else { 20.0 } * scale;
            v
        }),
        1 => (-scale..scale).prop_map(move |c| vec![c; n]),
        1 => vec(0.5 * scale..scale, n),
        1 => vec(-scale..-0.5 * scale, n),
    ]
}
