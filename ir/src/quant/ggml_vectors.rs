//! The new block formats against ggml itself: 64 pseudo-random rows of 1024 values
//! (four scales, outliers, constant runs, all-positive rows) quantized by kiln must give
//! the bytes ggml's reference quantizers gave, and dequantized, the floats ggml's
//! `dequantize_row_*` gave. Both are recorded as FNV-1a hashes.
//!
//! Recorded 2026-12-04 with llama.cpp 0c1e570 (the vendored tree of the PyPI sdist
//! `llama_cpp_python==0.3.36`): a small C program linked against `libggml-base` (built
//! without `-march`, so without FP contraction), generating the rows with the splitmix64
//! stream below, quantizing them with `ggml_quantize_chunk` (no importance matrix, i.e.
//! `quantize_row_*_ref`) or `quantize_row_q8_K_ref`, and dequantizing ggml's own bytes
//! with the type's `to_float` (`dequantize_row_q8_K` for Q8_K). The same program found
//! every tensor of Gemma 3 270M Q4_K_M (Q4_K, Q5_0, Q6_K, Q8_0) dequantized bit for bit
//! alike by kiln and ggml.

use super::{dequantize_row, quantize_row};
use crate::DType;

const ROWS: usize = 64;
const COLS: usize = 1024;

/// ggml's `(bytes, dequantized)` hashes per format.
const GGML: [(DType, u64, u64); 6] = [
    (DType::Q5_0, 0xfb45_7adc_556d_88a5, 0x08e4_863a_cad4_de63),
    (DType::Q5_1, 0xdab8_034a_86bf_4620, 0x747b_c6e4_2309_2b8b),
    (DType::Q4_K, 0x517f_26e8_b130_0cc6, 0xf57c_76ae_6934_a199),
    (DType::Q5_K, 0x8896_9d93_8a24_03c2, 0x44f4_cd6a_638f_6af2),
    (DType::Q6_K, 0xa32f_1154_e19b_5c38, 0x7940_2688_87f1_8c4e),
    (DType::Q8_K, 0x9373_eb22_bf43_6eda, 0x08cd_07fa_d8f3_5151),
];

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The C program's rows, value for value.
fn rows() -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f64 / (1u64 << 23) as f64) as f32 - 1.0
    };
    let mut x = vec![0.0f32; ROWS * COLS];
    for (r, row) in x.chunks_exact_mut(COLS).enumerate() {
        let scale = [0.01f32, 1.0, 40.0, 3e-4][r % 4];
        for v in row.iter_mut() {
            *v = rnd() * scale;
        }
        if r % 5 == 0 {
            row[(r * 7) % COLS] = 25.0 * scale;
        }
        if r % 9 == 0 {
            row[256..512].fill(-0.7 * scale);
        }
        if r % 11 == 0 {
            for v in row.iter_mut() {
                *v = v.abs() + scale;
            }
        }
    }
    x
}

#[test]
fn quantizers_and_dequantizers_match_ggml_bit_for_bit() {
    let x = rows();
    for (dtype, bytes_hash, values_hash) in GGML {
        let row_bytes = COLS / dtype.block_len() * dtype.block_bytes();
        let mut q = vec![0u8; ROWS * row_bytes];
        for (src, dst) in x.chunks_exact(COLS).zip(q.chunks_exact_mut(row_bytes)) {
            quantize_row(dtype, src, dst).unwrap();
        }
        assert_eq!(
            fnv1a(q.iter().copied()),
            bytes_hash,
            "{dtype}: quantized bytes"
        );
        let mut v = vec![f32::NAN; ROWS * COLS];
        dequantize_row(dtype, &q, &mut v).unwrap();
        let v_hash = fnv1a(v.iter().flat_map(|v| v.to_le_bytes()));
        assert_eq!(v_hash, values_hash, "{dtype}: dequantized values");
    }
}
