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
