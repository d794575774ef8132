//! The engine's error type: every way a request can fail, with the context to act on it.

use kiln_ir::{DType, QuantError};

use kiln_ir::IrError;
use kiln_ir::backend::BackendError;

use kiln_gguf::GgufError;
use kiln_kv::KvError;
use kiln_tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    MemoryBudget(#[from] crate::memory::BudgetError),
    #[error(transparent)]
    DeviceMemory(#[from] crate::memory::DeviceMemoryError),
    #[error(transparent)]
    InvalidModel(#[from] crate::model::validate::InvalidModel),
    #[error("unsupported model architecture {0:?} (kiln runs llama, mistral and gemma3)")]
    UnsupportedArchitecture(String),
    #[error("bad model config: {0}")]
    BadConfig(String),
    #[error("tensor {tensor:?}: expected dimensions {expected:?}, found {found:?}")]
    TensorShape {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {tensor:?}: type {dtype} cannot be used for weights")]
    UnsupportedTensorType { tensor: String, dtype: DType },
    #[error("tensor {tensor:?}: {source}")]
    Quant { tensor: String, source: QuantError },
    #[error("the context is full: {needed} positions needed, the context holds {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error(
        "logit {index} is {value}: the model computed a non-number, so no token can be chosen (its weights or this backend are broken)"
    )]
    NonFiniteLogits { index: usize, value: f32 },
    #[error(
        "the model computed a non-number (NaN or +inf) among its logits, so no token can be chosen (its weights or this backend are broken)"
    )]
    NonFiniteRow,
    #[error("bad sampling parameter: {0}")]
    BadSampling(String),
    #[error("{0}")]
    Invalid(String),
}
