//! FP8 E4M3, the OCP "e4m3fn" variant used for the KV cache: 1 sign bit, 4 exponent
//! bits (bias 7), 3 mantissa bits. There are no infinities: S.1111.111 is NaN, so the
//! largest finite value is S.1111.110 = ±448. Exponent 0 holds subnormals m * 2^-9.
//!
//! Encoding rounds to nearest, ties to even, and saturates to ±448 (infinities too);
//! NaN stays NaN. Values here are unscaled: the cache's per-token scale is applied by
//! the caller.

/// Largest finite E4M3 value.
pub const MAX: f32 = 448.0;

/// The canonical NaN code (sign bit clear); 0xFF is the other NaN.
pub const NAN: u8 = 0x7F;

/// Decodes one E4M3 byte.
pub fn decode(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = u32::from((code >> 3) & 0x0F);
    let man = u32::from(code & 0x07);
    let magnitude = if exp == 0x0F && man == 0x07 {
        f32::NAN
    } else if exp == 0 {
        man as f32 * 2f32.powi(-9) // exact: a small integer times a power of two
    } else {
        // Re-bias the exponent from 7 to f32's 127 and widen the mantissa to 23 bits.
        f32::from_bits(((exp + 120) << 23) | (man << 20))
    };
    sign * magnitude
}

/// Encodes one f32 as E4M3: round to nearest even, saturate to ±448, NaN to NaN.
pub fn encode(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs();
    if a.is_nan() {
        return sign | NAN;
    }
    if a >= MAX {
        return sign | 0x7E;
    }
    if a < 2f32.powi(-6) {
        // Subnormal (or zero): count units of 2^-9. A result of 8 is the smallest
        // normal, whose code is 0x08 too, so no special case is needed.
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    // Normal: keep 3 of f32's 23 mantissa bits, rounding the 20 dropped bits to nearest
    // even. A carry out of the mantissa correctly bumps the exponent; a < 448 keeps the
    // result at most 448 (0x7E).
    let bits = a.to_bits();
    let rounded = bits + 0x7_FFFF + ((bits >> 20) & 1);
    let code = (rounded >> 20) - (120 << 3);
    sign | code as u8
}

/// Decodes `dst.len()` E4M3 bytes, unscaled. Precondition: `src.len() == dst.len()`.
pub fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    super::debug_check_blocks(dst.len(), src.len(), 1, 1);
    for (&c, d) in src.iter().zip(dst) {
        *d = decode(c);
    }
}

/// Encodes `src` as E4M3, unscaled. Precondition: `src.len() == dst.len()`.
pub fn quantize_row(src: &[f32], dst: &mut [u8]) {
    super::debug_check_blocks(src.len(), dst.len(), 1, 1);
    for (&v, c) in src.iter().zip(dst) {
        *c = encode(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::{assert_all_written, poisoned};
    use proptest::prelude::*;

    #[test]
    fn decodes_landmark_codes() {
        assert_eq!(decode(0x00), 0.0);
        assert!(decode(0x80) == 0.0 && decode(0x80).is_sign_negative());
        assert_eq!(decode(0x01), 2f32.powi(-9)); // smallest subnormal
        assert_eq!(decode(0x07), 7.0 * 2f32.powi(-9)); // largest subnormal
        assert_eq!(decode(0x08), 2f32.powi(-6)); // smallest normal
        assert_eq!(decode(0x38), 1.0); // exponent 7 = bias
        assert_eq!(decode(0x3B), 1.375);
        assert_eq!(decode(0xC4), -3.0); // S=1, exp 8, man 4: -(1.5 * 2)
        assert_eq!(decode(0x77), 240.0); // largest value below 256 (exp 14, man 7)
        assert_eq!(decode(0x7E), 448.0);
        assert_eq!(decode(0xFE), -448.0);
        assert!(decode(0x7F).is_nan() && decode(0xFF).is_nan());
        assert_eq!(decode(0x78), 256.0); // exponent 15 is an ordinary exponent
    }

    #[test]
    fn every_code_round_trips_except_nan() {
        let mut nans = 0;
        for code in 0..=255u8 {
            let v = decode(code);
            if v.is_nan() {
                nans += 1;
                assert_eq!(code & 0x7F, NAN);
                assert!(decode(encode(v)).is_nan());
            } else {
                assert_eq!(encode(v), code, "code {code:#04x} decodes to {v}");
            }
        }
        assert_eq!(nans, 2);
    }

    #[test]
    fn saturates_and_keeps_nan() {
        assert_eq!(encode(448.0), 0x7E);
        assert_eq!(encode(449.0), 0x7E);
        assert_eq!(encode(464.0), 0x7E); // would round to 480, which does not exist
        assert_eq!(encode(1.0e30), 0x7E);
        assert_eq!(encode(f32::INFINITY), 0x7E);
        assert_eq!(encode(-1000.0), 0xFE);
        assert_eq!(encode(f32::NEG_INFINITY), 0xFE);
        assert_eq!(encode(f32::NAN), 0x7F);
        assert_eq!(encode(-f32::NAN), 0xFF);
    }

    #[test]
    fn rounds_ties_to_even() {
        assert_eq!(encode(1.0625), 0x38); // halfway 1.0 | 1.125 -> even 1.0
        assert_eq!(encode(1.1875), 0x3A); // halfway 1.125 | 1.25 -> even 1.25
        assert_eq!(encode(1.0626), 0x39); // just above halfway goes up
        assert_eq!(encode(15.5), 0x58); // halfway 15 | 16 -> 16: carry into the exponent
        assert_eq!(encode(2f32.powi(-10)), 0x00); // halfway 0 | 2^-9 -> 0
        assert_eq!(encode(3.0 * 2f32.powi(-10)), 0x02); // halfway 1 | 2 units -> 2
        assert_eq!(encode(15.0 * 2f32.powi(-10)), 0x08); // halfway 7 | 8 units -> min normal
        assert_eq!(encode(-1e-30), 0x80);
        assert_eq!(encode(400.0), 0x7C); // halfway 384 | 416 -> even mantissa 4 (384)
        assert_eq!(encode(432.0), 0x7E); // halfway 416 | 448 -> even mantissa 6 (448)
    }

    #[test]
    fn row_functions_write_every_element() {
        let src = [0.3f32, -2.0, 500.0, -0.001, 7.25, f32::NAN];
        let mut bytes = vec![0xAAu8; src.len()];
        quantize_row(&src, &mut bytes);
        // 0.3 -> 1.25 * 2^-2; -0.001 -> one subnormal unit; 7.25 is halfway between
        // 7.0 and 7.5 and goes to the even mantissa, 7.0.
        assert_eq!(bytes, [0x2A, 0xC0, 0x7E, 0x81, 0x4E, 0x7F]);
        let mut out = poisoned(src.len() - 1);
        dequantize_row(&bytes[..5], &mut out);
        assert_all_written(&out);
        assert_eq!(out, [0.3125, -2.0, 448.0, -0.001953125, 7.0]);
    }

    /// The nearest finite code by exhaustive search, ties to the even mantissa, with
    /// saturation at ±448: the oracle for `encode`.
    fn nearest_code(x: f32) -> u8 {
        let mut best = 0u8;
        let mut best_err = f64::INFINITY;
        for code in 0..=255u8 {
            let v = decode(code);
            if v.is_nan() || (v == 0.0 && v.is_sign_negative() != x.is_sign_negative()) {
                continue;
            }
            let err = (v as f64 - x as f64).abs();
            if err < best_err || (err == best_err && code & 1 == 0) {
                best = code;
                best_err = err;
            }
        }
        best
    }

    proptest! {
        #[test]
        fn normal_range_error_is_at_most_one_sixteenth(x in 2f32.powi(-6)..448.0, neg: bool) {
            let x = if neg { -x } else { x };
            let y = decode(encode(x));
            // 3 mantissa bits: half an ulp is 2^-4 of the leading power of two.
            prop_assert!((y - x).abs() <= x.abs() * 2f32.powi(-4), "{x} -> {y}");
        }

        #[test]
        fn encode_is_the_nearest_code(x in prop_oneof![-500.0f32..500.0, -0.05f32..0.05]) {
            prop_assert_eq!(encode(x), nearest_code(x), "x = {}", x);
        }
    }
}
