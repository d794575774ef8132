//! GGUF v2/v3: a validating reader over a memory map, and a writer.
//!
//! Layout: magic "GGUF", version u32, tensor count u64, metadata count u64, metadata
//! (key string, type u32, value), tensor infos (name, n_dims u32, dims u64 innermost
//! first, ggml type u32, offset u64), padding to `general.alignment` (default 32), data.
//! Strings are a u64 length and UTF-8 bytes. Everything is little endian.

mod error;
mod header;
mod read;
mod value;
mod write;

#[cfg(test)]
mod tests;

pub use error::GgufError;
pub use header::{Header, RawTensorInfo};
pub use read::{Gguf, TensorInfo};
pub use value::{Value, ValueType};
pub use write::{GgufWriter, TensorEntry, data_layout, encode_header};

use kiln_ir::DType;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;

/// The ggml type id of a dtype, as stored in tensor infos.
pub fn ggml_type_id(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 8,
        DType::Q5_0 => 6,
        DType::Q5_1 => 7,
        DType::Q4_K => 12,
        DType::Q5_K => 13,
        DType::Q6_K => 14,
        DType::Q8_K => 15,
        DType::BF16 => 30,
        DType::F8E4M3 => return None,
    })
}

/// The dtype of a ggml type id, or the id's ggml name when kiln cannot load it.
pub fn dtype_from_ggml(id: u32) -> Result<DType, &'static str> {
    Ok(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        8 => DType::Q8_0,
        30 => DType::BF16,
        6 => DType::Q5_0,
        7 => DType::Q5_1,
        12 => DType::Q4_K,
        13 => DType::Q5_K,
        14 => DType::Q6_K,
        15 => DType::Q8_K,
        9 => return Err("Q8_1"),
        10 => return Err("Q2_K"),
        11 => return Err("Q3_K"),
        16..=23 | 29 => return Err("IQ (i-quant)"),
        24 => return Err("I8"),
        25 => return Err("I16"),
        26 => return Err("I32"),
        27 => return Err("I64"),
        28 => return Err("F64"),
        34 | 35 => return Err("TQ (ternary)"),
        39 => return Err("MXFP4"),
        _ => return Err("unknown"),
    })
}
