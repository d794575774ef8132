//! Everything that can be wrong with a tokenizer's metadata or a chat template.

use kiln_gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "unsupported tokenizer model {0:?} (tokenizer.ggml.model): kiln reads \"gpt2\" (byte-level BPE)"
    )]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {name:?} (tokenizer.ggml.pre); kiln knows: {known}")]
    UnsupportedPre { name: String, known: String },
    #[error("metadata key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("duplicate token {text:?} in the vocabulary: ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("pre-tokenizer {pre:?}: regex {pattern:?} does not compile: {message}")]
    Regex {
        pre: String,
        pattern: String,
        message: String,
    },
    #[error("chat template: {0}")]
    Template(String),
}

impl TokenizerError {
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> TokenizerError {
        TokenizerError::InvalidKey {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
