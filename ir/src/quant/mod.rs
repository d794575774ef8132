//! Tensor block formats: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants
//! Q4_K, Q5_K, Q6_K, Q8_K (GGUF layouts), plus the Q8_1 activation blocks and FP8 E4M3
//! values used by kernels. Activations are dotted as Q8_0 with Q4_0/Q5_0/Q8_0 weights,
//! Q8_1 with Q4_1/Q5_1, and Q8_K (256 values, f32 scale, block sums) with the K-quants.
//!
//! Every format has: `dequantize_row`, a reference quantizer as llama.cpp defines it,
//! and block dot products. The generic entry points below dispatch on [`DType`] and
//! check lengths; the per-format functions take lengths as the caller's precondition
//! (checked only by debug assertions) because they sit in hot loops.
//!
//! Blocks are read from plain byte slices, one field at a time: no alignment is assumed
//! and no `unsafe` is needed.

use crate::DType;

pub mod float;
pub mod fp8;
pub mod k_common;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
#[cfg(target_arch = "x86_64")]
mod q8_avx2;
pub mod q8_k;

#[cfg(test)]
mod test_support;

pub use float::dot_f32;
pub use q4_0::vec_dot_q4_0_q8_0;
pub use q4_1::vec_dot_q4_1_q8_1;
pub use q4_k::vec_dot_q4_k_q8_k;
pub use q5_0::vec_dot_q5_0_q8_0;
pub use q5_1::vec_dot_q5_1_q8_1;
pub use q5_k::vec_dot_q5_k_q8_k;
pub use q6_k::vec_dot_q6_k_q8_k;
pub use q8_0::vec_dot_q8_0_q8_0;
pub use q8_k::vec_dot_q8_k_q8_k;

/// A bad length or an unsupported conversion in a block-format routine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("{dtype}: {values} values is not a whole number of {block_len}-value blocks")]
    NotBlockMultiple {
        dtype: DType,
        values: usize,
        block_len: usize,
    },
    #[error("{dtype}: a row of {values} values takes {expected} bytes, got {got}")]
    ByteLength {
        dtype: DType,
        values: usize,
        expected: usize,
        got: usize,
    },
    #[error("{0} has no row quantizer")]
    Unsupported(DType),
}

/// Dequantizes one row of `dst.len()` values stored as `dtype` in `src`.
/// F8E4M3 is decoded unscaled.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_row(dtype, dst.len(), src.len())?;
    dequantize_unchecked(dtype, src, dst);
    Ok(())
}

/// Quantizes one row of `src.len()` values into `dst` as `dtype`, with llama.cpp's
/// reference quantizers for the block formats. F8E4M3 is encoded unscaled (saturating).
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_row(dtype, src.len(), dst.len())?;
    match dtype {
        DType::F32 => float::quantize_row_f32(src, dst),
        DType::F16 => float::quantize_row_f16(src, dst),
        DType::BF16 => float::quantize_row_bf16(src, dst),
        DType::Q4_0 => q4_0::quantize_row(src, dst),
        DType::Q4_1 => q4_1::quantize_row(src, dst),
        DType::Q8_0 => q8_0::quantize_row(src, dst),
        DType::Q5_0 => q5_0::quantize_row(src, dst),
        DType::Q5_1 => q5_1::quantize_row(src, dst),
        DType::Q4_K => q4_k::quantize_row(src, dst),
        DType::Q5_K => q5_k::quantize_row(src, dst),
        DType::Q6_K => q6_k::quantize_row(src, dst),
        DType::Q8_K => q8_k::quantize_row(src, dst),
        DType::F8E4M3 => fp8::quantize_row(src, dst),
    }
    Ok(())
}

/// Values dequantized at a time by [`dot_row_f32`]: 8 blocks of 32 or one super-block
/// of 256, 1 KiB of stack.
const DOT_CHUNK: usize = 256;
const _: () = assert!(DOT_CHUNK.is_multiple_of(q4_0::BLOCK_LEN));
const _: () = assert!(DOT_CHUNK.is_multiple_of(k_common::QK_K));

/// Dot product of one stored row (`x.len()` values as `dtype`) with f32 activations.
///
/// The reference path: it dequantizes a few blocks at a time into a stack buffer and
/// dots them with [`dot_f32`], so no matrix is ever dequantized as a whole.
pub fn dot_row_f32(dtype: DType, row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    check_row(dtype, x.len(), row.len())?;
    // (DOT_CHUNK,) the dequantized values of the current chunk of the row
    let mut buf = [0.0f32; DOT_CHUNK];
    let chunk_bytes = DOT_CHUNK / dtype.block_len() * dtype.block_bytes();
    let mut sum = 0.0f32;
    for (bytes, xs) in row.chunks(chunk_bytes).zip(x.chunks(DOT_CHUNK)) {
        let w = &mut buf[..xs.len()];
        dequantize_unchecked(dtype, bytes, w);
        sum += dot_f32(w, xs);
    }
    Ok(sum)
}

/// Checks that `values` values of `dtype` are whole blocks taking exactly `bytes` bytes.
fn check_row(dtype: DType, values: usize, bytes: usize) -> Result<(), QuantError> {
    let block_len = dtype.block_len();
    if !values.is_multiple_of(block_len) {
        return Err(QuantError::NotBlockMultiple {
            dtype,
            values,
            block_len,
        });
    }
    // Cannot overflow: `values` is the length of an f32 slice and no format takes more
    // than 4 bytes a value.
    let expected = values / block_len * dtype.block_bytes();
    if bytes != expected {
        return Err(QuantError::ByteLength {
            dtype,
            values,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

fn dequantize_unchecked(dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => float::dequantize_row_f32(src, dst),
        DType::F16 => float::dequantize_row_f16(src, dst),
        DType::BF16 => float::dequantize_row_bf16(src, dst),
        DType::Q4_0 => q4_0::dequantize_row(src, dst),
        DType::Q4_1 => q4_1::dequantize_row(src, dst),
        DType::Q8_0 => q8_0::dequantize_row(src, dst),
        DType::Q5_0 => q5_0::dequantize_row(src, dst),
        DType::Q5_1 => q5_1::dequantize_row(src, dst),
        DType::Q4_K => q4_k::dequantize_row(src, dst),
        DType::Q5_K => q5_k::dequantize_row(src, dst),
        DType::Q6_K => q6_k::dequantize_row(src, dst),
        DType::Q8_K => q8_k::dequantize_row(src, dst),
        DType::F8E4M3 => fp8::dequantize_row(src, dst),
    }
}

/// `v.round() as i8` (C's `roundf`: halves away from zero, then Rust's saturating cast)
/// without the libm call `round` compiles to on x86-64 without SSE4.1: truncate, then
/// look at the exact remainder. Same result for every input, NaN included.
#[inline]
fn round_to_i8(v: f32) -> i8 {
    // Below 2^23 in magnitude (false for NaN), `v - trunc(v)` is exact. No branches on
    // the remainder: quantized values are noise to a branch predictor.
    if v.abs() < 8_388_608.0 {
        let t = v as i32;
        let frac = v - t as f32;
        let r = t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5);
        r.clamp(-128, 127) as i8
    } else {
        v.round() as i8
    }
}

/// Reads the little-endian f16 at byte `at` of a block, widened to f32.
#[inline(always)]
fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Debug-build check of a per-format function's length precondition.
#[inline(always)]
fn debug_check_blocks(values: usize, bytes: usize, block_len: usize, block_bytes: usize) {
    debug_assert!(
        values.is_multiple_of(block_len) && bytes == values / block_len * block_bytes,
        "{values} values in {bytes} bytes are not whole {block_len}-value blocks of {block_bytes} bytes"
    );
}

#[cfg(test)]
mod ggml_vectors;
#[cfg(test)]
mod tests;
