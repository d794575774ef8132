//! The hyper-parameters of a Llama-family model, read from GGUF metadata.

use kiln_gguf::{Gguf, GgufError};

/// Architectures whose GGUF layout is the Llama one (same tensor names and maths).
const LLAMA_LIKE: &[&str] = &["llama", "mistral"];

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub arch: String,
    pub n_layers: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dims: usize,
    /// Positions are multiplied by this (linear RoPE scaling; 1 = none).
    pub rope_freq_scale: f32,
}

impl LlamaConfig {
    pub fn from_gguf(gguf: &Gguf) -> Result<LlamaConfig, crate::Error> {
        let arch = gguf.get_str("general.architecture")?.to_string();
        if !LLAMA_LIKE.contains(&arch.as_str()) {
            return Err(crate::Error::UnsupportedArchitecture(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let usize_key =
            |k: &str| -> Result<usize, GgufError> { Ok(gguf.get_u64(&key(k))? as usize) };
        let optional = |k: &str| gguf.get(&key(k)).is_some();

        let n_embd = usize_key("embedding_length")?;
        let n_heads = usize_key("attention.head_count")?;
        let n_kv_heads = if optional("attention.head_count_kv") {
            usize_key("attention.head_count_kv")?
        } else {
            n_heads
        };
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || n_embd % n_heads != 0 {
            return Err(crate::Error::BadConfig(format!(
                "{n_heads} query heads, {n_kv_heads} KV heads and width {n_embd} do not divide"
            )));
        }
        let head_dim = if optional("attention.key_length") {
            usize_key("attention.key_length")?
        } else {
            n_embd / n_heads
        };
        let vocab_size = match gguf.get(&key("vocab_size")) {
            Some(v) => v.as_u64().unwrap_or(0) as usize,
            None => gguf.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let rope_freq_scale = match gguf.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / gguf.get_f64(&key("rope.scaling.factor"))? as f32,
            Some(other) => {
                return Err(crate::Error::BadConfig(format!(
                    "RoPE scaling {other:?} is not supported"
                )));
            }
        };
        let config = LlamaConfig {
            n_layers: usize_key("block_count")?,
            n_embd,
            n_heads,
            n_kv_heads,
            head_dim,
            n_ff: usize_key("feed_forward_length")?,
            vocab_size,
            context_length: usize_key("context_length")?,
            rms_norm_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            rope_theta: if optional("rope.freq_base") {
                gguf.get_f64(&key("rope.freq_base"))? as f32
            } else {
                10_000.0
            },
            rope_dims: if optional("rope.dimension_count") {
                usize_key("rope.dimension_count")?
            } else {
                head_dim
            },
            rope_freq_scale,
            arch,
        };
        if config.rope_dims > config.head_dim || !config.rope_dims.is_multiple_of(2) {
            return Err(crate::Error::BadConfig(format!(
                "RoPE dimension count {} does not fit head size {}",
                config.rope_dims, config.head_dim
            )));
        }
        if config.n_layers == 0 || config.n_ff == 0 || config.vocab_size == 0 {
            return Err(crate::Error::BadConfig(
                "zero layers, FFN width or vocabulary".into(),
            ));
        }
        Ok(config)
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all KV heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
