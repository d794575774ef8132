//! Element types of tensors, with their block geometry.

use std::fmt;

/// The element type of a tensor. Quantized types are stored in blocks of
/// [`DType::block_len`] values taking [`DType::block_bytes`] bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's names: Q4_K, Q6_K, ...
pub enum DType {
    F32,
    F16,
    BF16,
    /// 32 values: f16 scale `d`, 16 bytes of nibbles; value = (q - 8) * d.
    Q4_0,
    /// 32 values: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles; value = q * d + m.
    Q4_1,
    /// 32 values: f16 scale `d`, 32 signed bytes; value = q * d.
    Q8_0,
    /// 32 values: f16 `d`, 4 bytes of fifth bits, 16 bytes of nibbles; value = (q - 16) * d.
    Q5_0,
    /// 32 values: f16 `d`, f16 `m`, 4 bytes of fifth bits, 16 bytes of nibbles;
    /// value = q * d + m.
    Q5_1,
    /// 256 values: f16 `d`, f16 `dmin`, 12 bytes of 6-bit sub-block scales and mins
    /// (8 sub-blocks of 32), 128 bytes of nibbles; value = d * sc * q - dmin * m.
    Q4_K,
    /// 256 values: Q4_K's header, 32 bytes of fifth bits, 128 bytes of nibbles;
    /// value = d * sc * q - dmin * m with 5-bit q.
    Q5_K,
    /// 256 values: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 i8 sub-block
    /// scales (16 sub-blocks of 16), f16 `d`; value = d * sc * (q - 32).
    Q6_K,
    /// 256 values: f32 `d`, 256 signed bytes, 16 i16 sums of 16 quants; value = q * d.
    /// The activation format of the K-quant dot products.
    Q8_K,
    /// FP8 E4M3 (KV cache storage), one byte per value, scaled outside the tensor.
    F8E4M3,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::F8E4M3,
    ];

    /// Values per block (1 for plain types).
    pub const fn block_len(self) -> usize {
        match self {
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q5_0 | DType::Q5_1 => 32,
            DType::Q4_K | DType::Q5_K | DType::Q6_K | DType::Q8_K => 256,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 => 1,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 => 1,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q8_0 => 34,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
        }
    }

    pub const fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bytes taken by `n` values, or `None` when `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let block_len = self.block_len() as u64;
        if !n.is_multiple_of(block_len) {
            return None;
        }
        (n / block_len).checked_mul(self.block_bytes() as u64)
    }

    /// Lower-case name used in kernel names and messages (`q4_0`, `f16`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q8_0 => "q8_0",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
            DType::Q8_K => "q8_k",
            DType::F8E4M3 => "f8e4m3",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_whole_blocks_only() {
        assert_eq!(DType::Q4_0.bytes_for(64), Some(36));
        assert_eq!(DType::Q4_1.bytes_for(32), Some(20));
        assert_eq!(DType::Q8_0.bytes_for(96), Some(102));
        assert_eq!(DType::Q8_0.bytes_for(33), None);
        assert_eq!(DType::F16.bytes_for(3), Some(6));
        assert_eq!(DType::F32.bytes_for(u64::MAX), None);
        assert_eq!(DType::Q5_0.bytes_for(64), Some(44));
        assert_eq!(DType::Q5_1.bytes_for(32), Some(24));
        assert_eq!(DType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(DType::Q4_K.bytes_for(32), None);
        assert_eq!(DType::Q5_K.bytes_for(256), Some(176));
        assert_eq!(DType::Q6_K.bytes_for(768), Some(630));
        assert_eq!(DType::Q8_K.bytes_for(256), Some(292));
    }

    #[test]
    fn names_are_distinct_lower_case() {
        for (i, a) in DType::ALL.iter().enumerate() {
            assert_eq!(a.name(), a.name().to_lowercase());
            for b in &DType::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
