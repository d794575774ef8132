//! Tests of the generic entry points: length checks, dispatch, and the f32 oracle dot.

use super::*;
use crate::quant::test_support::{assert_all_written, dot_f64, poisoned};
use proptest::collection::vec;
use proptest::prelude::*;

fn bytes_for(dtype: DType, values: usize) -> usize {
    values / dtype.block_len() * dtype.block_bytes()
}

#[test]
fn partial_blocks_are_rejected() {
    let mut out = poisoned(33);
    assert_eq!(
        dequantize_row(DType::Q4_0, &[0; 18], &mut out),
        Err(QuantError::NotBlockMultiple {
            dtype: DType::Q4_0,
            values: 33,
            block_len: 32
        })
    );
    let mut bytes = [0u8; 34];
    assert_eq!(
        quantize_row(DType::Q8_0, &[1.0; 31], &mut bytes),
        Err(QuantError::NotBlockMultiple {
            dtype: DType::Q8_0,
            values: 31,
            block_len: 32
        })
    );
    assert_eq!(
        dot_row_f32(DType::Q4_1, &[0; 40], &[1.0; 40]),
        Err(QuantError::NotBlockMultiple {
            dtype: DType::Q4_1,
            values: 40,
            block_len: 32
        })
    );
}

#[test]
fn wrong_byte_lengths_are_rejected() {
    let mut out = poisoned(3);
    assert_eq!(
        dequantize_row(DType::F16, &[0; 5], &mut out),
        Err(QuantError::ByteLength {
            dtype: DType::F16,
            values: 3,
            expected: 6,
            got: 5
        })
    );
    assert!(
        out.iter().all(|v| v.is_nan()),
        "a rejected call wrote its output"
    );
    let mut bytes = [0u8; 35];
    assert_eq!(
        quantize_row(DType::Q4_0, &[1.0; 64], &mut bytes),
        Err(QuantError::ByteLength {
            dtype: DType::Q4_0,
            values: 64,
            expected: 36,
            got: 35
        })
    );
    assert_eq!(
        dot_row_f32(DType::F32, &[0; 12], &[1.0; 4]),
        Err(QuantError::ByteLength {
            dtype: DType::F32,
            values: 4,
            expected: 16,
            got: 12
        })
    );
}

#[test]
fn error_messages_name_the_dtype_and_lengths() {
    let e = QuantError::NotBlockMultiple {
        dtype: DType::Q4_1,
        values: 40,
        block_len: 32,
    };
    assert_eq!(
        e.to_string(),
        "q4_1: 40 values is not a whole number of 32-value blocks"
    );
    let e = QuantError::ByteLength {
        dtype: DType::Q8_0,
        values: 64,
        expected: 68,
        got: 60,
    };
    assert_eq!(
        e.to_string(),
        "q8_0: a row of 64 values takes 68 bytes, got 60"
    );
    // No dtype lacks a row quantizer today; the variant is kept for future formats.
    assert_eq!(
        QuantError::Unsupported(DType::F8E4M3).to_string(),
        "f8e4m3 has no row quantizer"
    );
}

#[test]
fn module_block_sizes_match_dtype() {
    assert_eq!(
        (q4_0::BLOCK_LEN, q4_0::BLOCK_BYTES),
        (DType::Q4_0.block_len(), DType::Q4_0.block_bytes())
    );
    assert_eq!(
        (q4_1::BLOCK_LEN, q4_1::BLOCK_BYTES),
        (DType::Q4_1.block_len(), DType::Q4_1.block_bytes())
    );
    assert_eq!(
        (q8_0::BLOCK_LEN, q8_0::BLOCK_BYTES),
        (DType::Q8_0.block_len(), DType::Q8_0.block_bytes())
    );
    assert_eq!((q8_1::BLOCK_LEN, q8_1::BLOCK_BYTES), (32, 36));
    let formats = [
        (DType::Q5_0, q5_0::BLOCK_LEN, q5_0::BLOCK_BYTES),
        (DType::Q5_1, q5_1::BLOCK_LEN, q5_1::BLOCK_BYTES),
        (DType::Q4_K, q4_k::BLOCK_LEN, q4_k::BLOCK_BYTES),
        (DType::Q5_K, q5_k::BLOCK_LEN, q5_k::BLOCK_BYTES),
        (DType::Q6_K, q6_k::BLOCK_LEN, q6_k::BLOCK_BYTES),
        (DType::Q8_K, q8_k::BLOCK_LEN, q8_k::BLOCK_BYTES),
    ];
    for (dtype, len, bytes) in formats {
        assert_eq!(
            (len, bytes),
            (dtype.block_len(), dtype.block_bytes()),
            "{dtype}"
        );
    }
}

#[test]
fn empty_rows_are_fine() {
    for dtype in DType::ALL {
        assert_eq!(dequantize_row(dtype, &[], &mut []), Ok(()));
        assert_eq!(quantize_row(dtype, &[], &mut []), Ok(()));
        assert_eq!(dot_row_f32(dtype, &[], &[]), Ok(0.0));
    }
}

#[test]
fn dispatch_reaches_each_format() {
    // 256 values, mixed signs and magnitudes.
    let src: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 64) as f32 - 30.0) * 0.173)
        .collect();
    type Formats = (DType, fn(&[f32], &mut [u8]), fn(&[u8], &mut [f32]));
    let formats: [Formats; 13] = [
        (
            DType::F32,
            float::quantize_row_f32,
            float::dequantize_row_f32,
        ),
        (
            DType::F16,
            float::quantize_row_f16,
            float::dequantize_row_f16,
        ),
        (
            DType::BF16,
            float::quantize_row_bf16,
            float::dequantize_row_bf16,
        ),
        (DType::Q4_0, q4_0::quantize_row, q4_0::dequantize_row),
        (DType::Q4_1, q4_1::quantize_row, q4_1::dequantize_row),
        (DType::Q8_0, q8_0::quantize_row, q8_0::dequantize_row),
        (DType::Q5_0, q5_0::quantize_row, q5_0::dequantize_row),
        (DType::Q5_1, q5_1::quantize_row, q5_1::dequantize_row),
        (DType::Q4_K, q4_k::quantize_row, q4_k::dequantize_row),
        (DType::Q5_K, q5_k::quantize_row, q5_k::dequantize_row),
        (DType::Q6_K, q6_k::quantize_row, q6_k::dequantize_row),
        (DType::Q8_K, q8_k::quantize_row, q8_k::dequantize_row),
        (DType::F8E4M3, fp8::quantize_row, fp8::dequantize_row),
    ];
    for (dtype, quantize, dequantize) in formats {
        let n_bytes = bytes_for(dtype, src.len());
        let mut direct = vec![0u8; n_bytes];
        quantize(&src, &mut direct);
        let mut generic = vec![0xA5u8; n_bytes];
        quantize_row(dtype, &src, &mut generic).unwrap();
        assert_eq!(generic, direct, "{dtype}");

        let mut want = poisoned(src.len());
        dequantize(&direct, &mut want);
        let mut got = poisoned(src.len());
        dequantize_row(dtype, &direct, &mut got).unwrap();
        assert_all_written(&got);
        assert_eq!(got, want, "{dtype}");
    }
}

/// A dtype and a row for it: lengths up to 48 blocks (past several 256-value chunks of
/// `dot_row_f32`), including the model's widths 576 and 1536 (rounded up to whole
/// super-blocks for the K-quants).
fn dtype_and_rows() -> impl Strategy<Value = (DType, Vec<f32>, Vec<f32>)> {
    let n = prop_oneof![
        Just(576usize),
        Just(1536),
        (1usize..=48).prop_map(|b| b * 32)
    ];
    (
        0..DType::ALL.len(),
        n,
        prop_oneof![Just(0.02f32), Just(1.0), Just(30.0)],
    )
        .prop_flat_map(|(i, n, scale)| {
            let n = n.next_multiple_of(DType::ALL[i].block_len());
            (
                Just(DType::ALL[i]),
                vec(-scale..scale, n),
                vec(-2.0f32..2.0, n),
            )
        })
}

proptest! {
    #[test]
    fn dot_row_f32_equals_dequantize_then_dot((dtype, w, x) in dtype_and_rows()) {
        let mut row = vec![0u8; bytes_for(dtype, w.len())];
        quantize_row(dtype, &w, &mut row).unwrap();
        let mut wd = poisoned(w.len());
        dequantize_row(dtype, &row, &mut wd).unwrap();
        assert_all_written(&wd);
        let (exact, magnitude) = dot_f64(&wd, &x);
        let got = dot_row_f32(dtype, &row, &x).unwrap() as f64;
        // f32 rounding of the products and of the partial sums.
        prop_assert!((got - exact).abs() <= 1e-5 * magnitude + 1e-30, "{dtype}: {got} vs {exact}");
    }

    #[test]
    fn bad_lengths_give_errors_not_panics(i in 0..DType::ALL.len(), values in 0usize..100, bytes in 0usize..200) {
        let dtype = DType::ALL[i];
        let ok = values % dtype.block_len() == 0 && bytes == bytes_for(dtype, values);
        let mut out = poisoned(values);
        prop_assert_eq!(dequantize_row(dtype, &vec![0x3C; bytes], &mut out).is_ok(), ok);
        prop_assert_eq!(quantize_row(dtype, &vec![0.5; values], &mut vec![0; bytes]).is_ok(), ok);
        prop_assert_eq!(dot_row_f32(dtype, &vec![0x3C; bytes], &vec![0.5; values]).is_ok(), ok);
    }
}

#[test]
fn round_to_i8_is_round_then_cast() {
    let edges = [
        0.0f32,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.49999997,
        -0.49999997,
        126.5,
        127.49999,
        127.5,
        -128.5,
        -127.5,
        1e6,
        -1e6,
        8_388_607.5,
        8_388_608.0,
        3e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
    ];
    for v in edges {
        assert_eq!(super::round_to_i8(v), v.round() as i8, "{v}");
    }
}

proptest! {
    #[test]
    fn round_to_i8_matches_round_everywhere(bits in any::<u32>()) {
        let v = f32::from_bits(bits);
        prop_assert_eq!(super::round_to_i8(v), v.round() as i8);
        // The quantizer's range, densely: multiples of 1/64 around every integer.
        let w = (bits % 20_000) as f32 / 64.0 - 150.0;
        prop_assert_eq!(super::round_to_i8(w), w.round() as i8);
    }
}
