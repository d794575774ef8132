//! Everything that can be wrong with a GGUF file, each with enough context to act on.

use std::path::PathBuf;

use super::ValueType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {kind}, not a regular file: a model must be a GGUF file on disk")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("not a GGUF file: magic bytes are {0:02x?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (kiln reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error(
        "file is truncated: {what} at byte {offset} needs {needed} bytes, {available} are left"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error(
        "{what} declares {count} entries, more than the rest of the file can hold (truncated or corrupt file)"
    )]
    CountTooLarge { what: String, count: u64 },
    #[error("metadata key {key:?}: unknown value type id {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata key {key:?}: arrays nested deeper than {max_depth} levels")]
    NestingTooDeep { key: String, max_depth: usize },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("general.alignment must be a power of two u32, got {0}")]
    BadAlignment(String),
    #[error("tensor {tensor:?}: {n_dims} dimensions (at most {max} are allowed)")]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        max: usize,
    },
    #[error("tensor {tensor:?}: dimensions {dims:?} overflow the element count")]
    DimensionOverflow { tensor: String, dims: Vec<u64> },
    #[error("tensor {tensor:?}: unknown or unsupported tensor type id {type_id} ({type_name})")]
    UnknownTensorType {
        tensor: String,
        type_id: u32,
        type_name: &'static str,
    },
    #[error(
        "tensor {tensor:?}: row length {row_len} is not a multiple of the {dtype} block of {block_len}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        dtype: kiln_ir::DType,
        row_len: u64,
        block_len: usize,
    },
    #[error(
        "tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error(
        "tensor {tensor:?}: {bytes} bytes at data offset {offset} run past the end of the file's {data_len}-byte data section"
    )]
    TensorOutOfRange {
        tensor: String,
        offset: u64,
        bytes: u64,
        data_len: u64,
    },
    #[error(
        "tensor {tensor:?} at data offset {offset} {relation} {previous}; it should start at {expected}: a type, shape or offset in the tensor table is wrong"
    )]
    TensorLayout {
        tensor: String,
        offset: u64,
        relation: &'static str,
        previous: String,
        expected: u64,
    },
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: ValueType,
    },
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
}
