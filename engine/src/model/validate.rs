//! What a model file means, checked before anything is sized from it.
//!
//! The GGUF reader guarantees structure (every length inside the file, tensors laid out
//! without overlap); these checks guarantee meaning, so that a damaged file is one error
//! naming the key or tensor at fault, never an allocation sized by a corrupt number nor
//! a model that loads and produces garbage:
//! - [`metadata`], before the config is read: hyper-parameters finite and in range, head
//!   counts that divide, a RoPE width that fits the head, special token ids inside the
//!   vocabulary, tokenizer arrays of one length;
//! - [`against_config`], before the weights are read: `block_count` equals the layers the
//!   tensor table holds (so per-layer state is bounded by the file), every layer holds the
//!   same tensors and no tensor would be ignored, the tokenizer, the config and the
//!   embedding agree on the vocabulary, and vectors (norms) hold finite numbers.
//!
//! Tensor shapes against the config are checked where the weights are read
//! (`weights.rs`), which knows what each architecture needs.

use std::collections::BTreeMap;

use kiln_gguf::{Gguf, TensorInfo, Value};

use super::ModelConfig;

/// Tensors outside the layers that a model of the Llama family may hold.
const TOP_LEVEL_TENSORS: &[&str] = &[
    "token_embd.weight",
    "output_norm.weight",
    "output.weight",
    "rope_freqs.weight",
];

/// Keys (after `<arch>.`) holding counts that must be at least 1 when present.
const POSITIVE_COUNTS: &[&str] = &[
    "block_count",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "rope.dimension_count",
    "vocab_size",
];

/// Keys (after `<arch>.`) holding floats that must be finite and positive when present;
/// every other float under `<arch>.` must be finite.
const POSITIVE_FLOATS: &[&str] = &[
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "rope.freq_base",
    "rope.freq_base_swa",
    "rope.scaling.factor",
    "attn_logit_softcapping",
    "final_logit_softcapping",
];

/// Normalisation epsilons are small: at 1 or more the norm no longer normalises.
const EPSILON_KEYS: &[&str] = &[
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
];

const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
/// Tokenizer arrays with one entry per token.
const PER_TOKEN_ARRAYS: &[&str] = &["tokenizer.ggml.token_type", "tokenizer.ggml.scores"];

/// Everything that can be wrong with what a model file means.
#[derive(Debug, thiserror::Error)]
pub enum InvalidModel {
    #[error("{key} is {value}: {requirement}")]
    Hyperparameter {
        key: String,
        value: String,
        requirement: String,
    },
    #[error("{key} is {value}, but the file holds tensors for {present}")]
    TooFewLayers {
        key: String,
        value: u64,
        present: String,
    },
    #[error(
        "{key} is {value}, but the file also holds layer {layer} ({tensor:?}), which would be ignored"
    )]
    IgnoredLayer {
        key: String,
        value: usize,
        layer: u64,
        tensor: String,
    },
    #[error("layer {layer} has no tensors (no blk.{layer}.*), but the layers after it do")]
    MissingLayer { layer: u64 },
    #[error(
        "tensor {tensor:?} has no counterpart blk.{other}.{suffix} in layer {other}: every layer holds the same tensors"
    )]
    UnevenLayers {
        tensor: String,
        other: u64,
        suffix: String,
    },
    #[error("tensor {tensor:?} is not part of a {arch} model: kiln would ignore it")]
    UnknownTensor { tensor: String, arch: String },
    #[error("{key} is {id}, outside the vocabulary of {vocab} tokens (ids 0 to {})", vocab - 1)]
    TokenIdOutOfRange { key: String, id: i64, vocab: usize },
    #[error("the tokenizer has {tokens} tokens ({TOKENS_KEY}), but {other}")]
    VocabMismatch { tokens: usize, other: String },
    #[error("tensor {tensor:?}: value {index} is {value}, and weights must be finite")]
    NonFinite {
        tensor: String,
        index: usize,
        value: f32,
    },
}

fn hyperparameter(key: &str, value: impl ToString, requirement: impl Into<String>) -> InvalidModel {
    InvalidModel::Hyperparameter {
        key: key.to_string(),
        value: value.to_string(),
        requirement: requirement.into(),
    }
}

/// The checks that need only the metadata: run before the config is read from it.
pub fn metadata(gguf: &Gguf) -> Result<(), InvalidModel> {
    // Without an architecture the config reports the missing key.
    let Some(arch) = gguf.get("general.architecture").and_then(Value::as_str) else {
        return Ok(());
    };
    let key = |k: &str| format!("{arch}.{k}");
    let count = |k: &str| gguf.get(&key(k)).and_then(Value::as_i64);
    for &k in POSITIVE_COUNTS {
        if let Some(n) = count(k).filter(|&n| n < 1) {
            return Err(hyperparameter(&key(k), n, "it must be at least 1"));
        }
    }
    // Counts past i64 (as_i64 gives None for them) are caught below as unsigned.
    let unsigned = |k: &str| gguf.get(&key(k)).and_then(Value::as_u64);
    // Positions are 32-bit in a step.
    if let Some(n) = unsigned("context_length").filter(|&n| n > u64::from(u32::MAX)) {
        return Err(hyperparameter(
            &key("context_length"),
            n,
            format!("kiln's positions are 32-bit: at most {}", u32::MAX),
        ));
    }
    // Per-layer state is sized by the layer count: the tensor table must back it before
    // the config reads it.
    if let Some(n) = unsigned("block_count") {
        too_few_layers(gguf, &key("block_count"), n)?;
    }
    if let (Some(heads), Some(kv_heads)) = (
        count("attention.head_count"),
        count("attention.head_count_kv"),
    ) && heads % kv_heads != 0
    {
        return Err(hyperparameter(
            &key("attention.head_count_kv"),
            kv_heads,
            format!(
                "the {heads} query heads ({}) must be a multiple of it",
                key("attention.head_count")
            ),
        ));
    }
    // The head size as the config derives it: key_length, else the width over the heads.
    let head_dim = count("attention.key_length").or_else(|| {
        let (width, heads) = (count("embedding_length")?, count("attention.head_count")?);
        (width % heads == 0).then_some(width / heads)
    });
    if let (Some(v_len), Some(head_dim)) = (count("attention.value_length"), head_dim)
        && v_len != head_dim
    {
        return Err(hyperparameter(
            &key("attention.value_length"),
            v_len,
            format!("kiln needs it equal to the key head size {head_dim}"),
        ));
    }
    if let (Some(rope), Some(head_dim)) = (count("rope.dimension_count"), head_dim)
        && (rope > head_dim || rope % 2 != 0)
    {
        return Err(hyperparameter(
            &key("rope.dimension_count"),
            rope,
            format!(
                "RoPE rotates pairs of dimensions: it must be even and at most the head size {head_dim}"
            ),
        ));
    }
    for (k, value) in gguf.metadata() {
        let Some(suffix) = k.strip_prefix(arch).and_then(|s| s.strip_prefix('.')) else {
            continue;
        };
        let Some(v) = value.as_f64() else { continue };
        let positive = POSITIVE_FLOATS.contains(&suffix);
        // The config holds them as f32: an f64 that rounds to 0 or overflows is no better.
        let used = v as f32;
        if !used.is_finite() || (positive && used <= 0.0) {
            let requirement = if positive {
                "it must be a finite number above 0"
            } else {
                "it must be a finite number"
            };
            return Err(hyperparameter(k, v, requirement));
        }
        if EPSILON_KEYS.contains(&suffix) && v >= 1.0 {
            return Err(hyperparameter(k, v, "a normalisation epsilon is below 1"));
        }
    }
    tokenizer_metadata(gguf)
}

/// Special token ids inside the vocabulary, and per-token arrays as long as it.
fn tokenizer_metadata(gguf: &Gguf) -> Result<(), InvalidModel> {
    // Without tokens the tokenizer reports the missing key.
    let Some(tokens) = gguf.get(TOKENS_KEY).and_then(Value::as_array) else {
        return Ok(());
    };
    let n = tokens.len();
    for (key, value) in gguf.metadata() {
        let is_id = key
            .strip_prefix("tokenizer.ggml.")
            .is_some_and(|k| k.ends_with("_token_id"));
        if !is_id {
            continue;
        }
        let Some(id) = value.as_i64() else {
            return Err(hyperparameter(
                key,
                value.summary(),
                "a token id is an integer",
            ));
        };
        if usize::try_from(id).map_or(true, |id| id >= n) {
            return Err(InvalidModel::TokenIdOutOfRange {
                key: key.clone(),
                id,
                vocab: n,
            });
        }
    }
    for &key in PER_TOKEN_ARRAYS {
        if let Some(len) = gguf.get(key).and_then(Value::as_array).map(<[Value]>::len)
            && len != n
        {
            return Err(InvalidModel::VocabMismatch {
                tokens: n,
                other: format!("{key} has {len} entries"),
            });
        }
    }
    Ok(())
}

/// The checks of the tensor table against the config: run before the weights are read,
/// so that nothing is sized by a count the tensors do not back.
pub fn against_config(gguf: &Gguf, config: &ModelConfig) -> Result<(), InvalidModel> {
    layers(gguf, config)?;
    vocabulary(gguf, config)?;
    finite_vectors(gguf)
}

/// `blk.<i>.<suffix>` as (i, suffix).
fn layer_of(name: &str) -> Option<(u64, &str)> {
    let (index, suffix) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((index.parse().ok()?, suffix))
}

fn layers(gguf: &Gguf, config: &ModelConfig) -> Result<(), InvalidModel> {
    let key = format!("{}.block_count", config.arch);
    let mut by_layer: BTreeMap<u64, Vec<&TensorInfo>> = BTreeMap::new();
    for t in gguf.tensors() {
        match layer_of(&t.name) {
            Some((i, _)) => by_layer.entry(i).or_default().push(t),
            None if TOP_LEVEL_TENSORS.contains(&t.name.as_str()) => {}
            None => {
                return Err(InvalidModel::UnknownTensor {
                    tensor: t.name.clone(),
                    arch: config.arch.clone(),
                });
            }
        }
    }
    let n_layers = config.n_layers;
    too_few_layers(gguf, &key, n_layers as u64)?;
    if let Some((&layer, tensors)) = by_layer.range(n_layers as u64..).next() {
        return Err(InvalidModel::IgnoredLayer {
            key,
            value: n_layers,
            layer,
            tensor: tensors[0].name.clone(),
        });
    }
    if let Some(missing) = (0u64..).zip(by_layer.keys()).find(|(i, k)| i != *k) {
        return Err(InvalidModel::MissingLayer { layer: missing.0 });
    }
    // Every layer holds what layer 0 holds, and nothing else.
    let suffixes = |i: u64| -> Vec<&str> {
        let mut s: Vec<&str> = by_layer[&i]
            .iter()
            .filter_map(|t| layer_of(&t.name).map(|(_, s)| s))
            .collect();
        s.sort_unstable();
        s
    };
    let first = suffixes(0);
    for &i in by_layer.keys().skip(1) {
        let these = suffixes(i);
        if let Some(extra) = these.iter().find(|s| first.binary_search(s).is_err()) {
            return Err(InvalidModel::UnevenLayers {
                tensor: format!("blk.{i}.{extra}"),
                other: 0,
                suffix: (*extra).to_string(),
            });
        }
        if let Some(lacking) = first.iter().find(|s| these.binary_search(s).is_err()) {
            return Err(InvalidModel::UnevenLayers {
                tensor: format!("blk.0.{lacking}"),
                other: i,
                suffix: (*lacking).to_string(),
            });
        }
    }
    Ok(())
}

/// `n_layers` (the value of `key`) must not exceed the layers the tensor table holds:
/// layers are distinct indices, so the highest one + 1 bounds the count.
fn too_few_layers(gguf: &Gguf, key: &str, n_layers: u64) -> Result<(), InvalidModel> {
    let highest = gguf
        .tensors()
        .iter()
        .filter_map(|t| layer_of(&t.name).map(|(i, _)| i))
        .max();
    if highest.is_none_or(|h| n_layers > h + 1) {
        let present = match highest {
            None => "no layer (no blk.* tensors)".to_string(),
            Some(h) => format!("{} layers (blk.0 to blk.{h})", h + 1),
        };
        return Err(InvalidModel::TooFewLayers {
            key: key.to_string(),
            value: n_layers,
            present,
        });
    }
    Ok(())
}

/// The embedding is as wide as the model, and the tokenizer, the config and the
/// embedding (and LM head) agree on the vocabulary.
fn vocabulary(gguf: &Gguf, config: &ModelConfig) -> Result<(), InvalidModel> {
    if let Some(t) = gguf.tensor("token_embd.weight")
        && t.dims.first() != Some(&(config.n_embd as u64))
    {
        return Err(hyperparameter(
            &format!("{}.embedding_length", config.arch),
            config.n_embd,
            format!(
                "tensor \"token_embd.weight\" has rows of {} values (dims {:?})",
                t.dims.first().copied().unwrap_or(0),
                t.dims
            ),
        ));
    }
    let Some(tokens) = gguf.get(TOKENS_KEY).and_then(Value::as_array) else {
        return Ok(());
    };
    let n = tokens.len();
    let mismatch = |other: String| Err(InvalidModel::VocabMismatch { tokens: n, other });
    if config.vocab_size != n {
        return mismatch(format!(
            "{}.vocab_size is {}",
            config.arch, config.vocab_size
        ));
    }
    for name in ["token_embd.weight", "output.weight"] {
        if let Some(t) = gguf.tensor(name) {
            let rows = t.dims.get(1).copied().unwrap_or(1);
            if rows != n as u64 {
                return mismatch(format!(
                    "tensor {name:?} has {rows} rows (one per token, dims {:?})",
                    t.dims
                ));
            }
        }
    }
    Ok(())
}

/// Vectors (norm weights, RoPE factors) are small: each is read and must be finite.
fn finite_vectors(gguf: &Gguf) -> Result<(), InvalidModel> {
    let mut values = Vec::new();
    for t in gguf.tensors().iter().filter(|t| t.dims.len() == 1) {
        values.resize(t.dims[0] as usize, 0.0f32);
        // A dtype that cannot be read is reported where the weights are read.
        if kiln_ir::quant::dequantize_row(t.dtype, gguf.tensor_data(t), &mut values).is_err() {
            continue;
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(InvalidModel::NonFinite {
                tensor: t.name.clone(),
                index,
                value,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
