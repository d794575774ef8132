//! The hyper-parameters of a model, read from GGUF metadata: one description of every
//! family kiln runs (the Llama family, Qwen 2 and 3, Gemma 3), with what differs between
//! layers, read by the graph builder, the oracle and the KV cache alike.

use kiln_gguf::{Gguf, GgufError};
use kiln_ir::RopeMode;
use kiln_ir::kv_groups::KvGroups;
use kiln_ir::kv_layout::{KvDtype, KvLayout, KvLayoutError};

/// The `general.architecture` names kiln runs.
pub const ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gemma3"];

/// Gemma 3's layers attend in a pattern of six: five with a sliding window, then one
/// global (llama.cpp's `set_swa_pattern(6)`; the GGUF does not store it).
pub const GEMMA3_SWA_PATTERN: usize = 6;

/// Gemma 3's window layers rotate with this RoPE base and no scaling, whatever the file
/// says for the global ones (llama.cpp's `rope_freq_base_train_swa`).
pub const GEMMA3_SWA_ROPE_THETA: f32 = 10_000.0;

/// How a family's blocks are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// llama, mistral: pre-norms, SwiGLU, RoPE in ggml's normal mode; a sliding window on
    /// every layer when the file gives one (Mistral 7B).
    Llama,
    /// qwen2: the Llama block with NeoX RoPE and biases on the q, k and v projections.
    Qwen2,
    /// qwen3: the Llama block with NeoX RoPE and QK-norm (no biases).
    Qwen3,
    /// gemma3: embeddings scaled by √width, QK-norm, norms before and after each sublayer,
    /// GeGLU, NeoX RoPE, sliding-window layers.
    Gemma3,
}

/// The gated unit of the feed-forward network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// silu(gate) · up.
    SwiGlu,
    /// gelu_tanh(gate) · up.
    GeGlu,
}

/// What may differ from one layer to the next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerConfig {
    pub rope_theta: f32,
    /// Positions are multiplied by this (linear RoPE scaling; 1 = none).
    pub rope_freq_scale: f32,
    /// Sliding window: a query at position p attends to positions > p − window only.
    pub window: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture` as the file names it.
    pub arch: String,
    pub family: Family,
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
    /// RoPE base of the full-attention layers (`rope.freq_base`).
    pub rope_theta: f32,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dims: usize,
    /// Positions are multiplied by this in full-attention layers (linear RoPE scaling).
    pub rope_freq_scale: f32,
    pub rope_mode: RopeMode,
    /// One entry per layer.
    pub layers: Vec<LayerConfig>,
    /// RMSNorm of every q and k head (its own weight each) before RoPE.
    pub qk_norm: bool,
    /// RMSNorm of each sublayer's output before the residual add (Gemma's sandwich).
    pub post_norms: bool,
    pub activation: Activation,
    /// The embeddings are multiplied by this (1 = none; √width for Gemma).
    pub embedding_scale: f32,
    /// Attention scores are q·k × this.
    pub attention_scale: f32,
}

impl ModelConfig {
    pub fn from_gguf(gguf: &Gguf) -> Result<ModelConfig, crate::Error> {
        let arch = gguf.get_str("general.architecture")?.to_string();
        let family = match arch.as_str() {
            "llama" | "mistral" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3" => Family::Gemma3,
            _ => return Err(crate::Error::UnsupportedArchitecture(arch)),
        };
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
        if optional("attention.value_length") && usize_key("attention.value_length")? != head_dim {
            return Err(crate::Error::BadConfig(format!(
                "value heads of {} for key heads of {head_dim}",
                usize_key("attention.value_length")?
            )));
        }
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
        let rope_theta = if optional("rope.freq_base") {
            gguf.get_f64(&key("rope.freq_base"))? as f32
        } else {
            10_000.0
        };
        let n_layers = usize_key("block_count")?;
        let global = LayerConfig {
            rope_theta,
            rope_freq_scale,
            window: None,
        };
        let mut config = ModelConfig {
            family,
            n_layers,
            n_embd,
            n_heads,
            n_kv_heads,
            head_dim,
            n_ff: usize_key("feed_forward_length")?,
            vocab_size,
            context_length: usize_key("context_length")?,
            rms_norm_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            rope_theta,
            rope_dims: if optional("rope.dimension_count") {
                usize_key("rope.dimension_count")?
            } else {
                head_dim
            },
            rope_freq_scale,
            rope_mode: RopeMode::Normal,
            layers: vec![global; n_layers],
            qk_norm: false,
            post_norms: false,
            activation: Activation::SwiGlu,
            embedding_scale: 1.0,
            attention_scale: kiln_ir::AttentionParams::default_scale(head_dim),
            arch: arch.clone(),
        };
        match family {
            Family::Gemma3 => config.gemma3(usize_key("attention.sliding_window")?),
            Family::Qwen2 => config.rope_mode = RopeMode::Neox,
            Family::Qwen3 => {
                config.rope_mode = RopeMode::Neox;
                config.qk_norm = true;
            }
            // Mistral 7B was trained with a window on every layer. llama.cpp's converter
            // writes none and llama.cpp ignores one for `llama` (full attention: the same
            // logits while a sequence fits in the window); a file that gives one gets it.
            Family::Llama if optional("attention.sliding_window") => {
                let window = usize_key("attention.sliding_window")?;
                for layer in &mut config.layers {
                    layer.window = Some(window);
                }
            }
            Family::Llama => {}
        }
        config.check()?;
        Ok(config)
    }

    /// What Gemma 3 adds to the keys every family shares (llama.cpp's `LLM_ARCH_GEMMA3`
    /// hyper-parameters and graph).
    fn gemma3(&mut self, window: usize) {
        self.rope_mode = RopeMode::Neox;
        self.qk_norm = true;
        self.post_norms = true;
        self.activation = Activation::GeGlu;
        // ggml_scale(inpL, sqrtf(n_embd)) in f32.
        self.embedding_scale = (self.n_embd as f32).sqrt();
        // Gemma scales queries by query_pre_attn_scalar^-1/2: the head size, except for the
        // 27B (62 layers), where it is width / heads. llama.cpp tells them apart the same way.
        let scalar = if self.n_layers == 62 {
            self.n_embd / self.n_heads
        } else {
            self.head_dim
        };
        self.attention_scale = 1.0 / (scalar as f32).sqrt();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            if l % GEMMA3_SWA_PATTERN < GEMMA3_SWA_PATTERN - 1 {
                *layer = LayerConfig {
                    rope_theta: GEMMA3_SWA_ROPE_THETA,
                    rope_freq_scale: 1.0,
                    window: Some(window),
                };
            }
        }
    }

    fn check(&self) -> Result<(), crate::Error> {
        if self.rope_dims > self.head_dim || !self.rope_dims.is_multiple_of(2) {
            return Err(crate::Error::BadConfig(format!(
                "RoPE dimension count {} does not fit head size {}",
                self.rope_dims, self.head_dim
            )));
        }
        if self.n_layers == 0 || self.n_ff == 0 || self.vocab_size == 0 {
            return Err(crate::Error::BadConfig(
                "zero layers, FFN width or vocabulary".into(),
            ));
        }
        if self.layers.iter().any(|l| l.window == Some(0)) {
            return Err(crate::Error::BadConfig(
                "a sliding window of 0 positions".into(),
            ));
        }
        Ok(())
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all KV heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Which layers share KV pages: one group per kind of attention (see
    /// `kiln_ir::kv_groups`).
    pub fn kv_groups(&self) -> KvGroups {
        let windows: Vec<Option<usize>> = self.layers.iter().map(|l| l.window).collect();
        KvGroups::new(&windows).expect("checked: layers exist, windows are positive")
    }

    /// The page geometry of the model's KV cache in `dtype`.
    pub fn kv_layout(&self, dtype: KvDtype) -> Result<KvLayout, KvLayoutError> {
        self.kv_groups()
            .layout(self.n_kv_heads, self.head_dim)?
            .with_dtype(dtype)
    }

    /// The sliding window of the model's window layers, if it has any.
    pub fn sliding_window(&self) -> Option<usize> {
        self.layers.iter().filter_map(|l| l.window).max()
    }
}
