//! The named model shapes `kiln synth` knows, and quant names.

use kiln_ir::DType;

use super::{QUANTS, SynthError};

/// The architecture a shape is written as (`general.architecture` and its tensors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: pre-norms, SwiGLU.
    #[default]
    Llama,
    /// `llama` with Llama 3.1's RoPE frequency scaling, stored as llama.cpp's converter
    /// stores it: a `rope_freqs.weight` of per-frequency divisors ([`llama3_rope_factors`]).
    Llama3,
    /// `llama` with a sliding window on every layer (Mistral 7B's `attention.sliding_window`).
    Mistral,
    /// `qwen2`: the Llama block with NeoX RoPE and biases on the q, k and v projections.
    Qwen2,
    /// `qwen3`: the Llama block with NeoX RoPE and QK-norms.
    Qwen3,
    /// `gemma3`: QK-norms, norms after each sublayer too, GeGLU, sliding windows on five
    /// layers of six (the window in `sliding_window`).
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 6] = [
        Arch::Llama,
        Arch::Llama3,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Gemma3,
    ];

    /// The name `kiln synth --arch` takes.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Llama3 => "llama3",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// The `general.architecture` written (Llama 3 and Mistral are `llama` files, as
    /// llama.cpp's converter writes them).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Llama3 | Arch::Mistral => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Whether the shape's `sliding_window` is used.
    pub fn has_window(self) -> bool {
        matches!(self, Arch::Mistral | Arch::Gemma3)
    }

    /// By name (`llama`, `llama3`, `mistral`, `qwen2`, `qwen3`, `gemma3`), case-insensitively.
    pub fn parse(name: &str) -> Result<Arch, SynthError> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                SynthError::BadShape(format!(
                    "unknown architecture {name:?} ({})",
                    Arch::ALL.map(Arch::name).join(", ")
                ))
            })
    }
}

/// Llama 3.1's RoPE scaling as llama.cpp's converter bakes it into `rope_freqs.weight`:
/// the divisor of each of the head's `head_dim / 2` frequencies (factor 8, low and high
/// frequency factors 1 and 4, original context 8192): 1 for short wavelengths, 8 for long
/// ones, a smooth blend between.
pub fn llama3_rope_factors(theta: f32, head_dim: usize) -> Vec<f32> {
    let (factor, low, high, old_context) = (8.0f32, 1.0f32, 4.0f32, 8192.0f32);
    let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// The hyper-parameters of a model shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub arch: Arch,
    pub n_layers: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Head size when it is not width / heads (Gemma 3 270M: 256 for width 640 and 4
    /// heads); 0 for width / heads.
    pub key_length: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    /// The LM head is the token embedding (no `output.weight`); the embedding is then
    /// stored in Q8_0 like the reference model's (F16 when the quant is F16).
    pub tied_embeddings: bool,
    /// Gemma 3, Mistral: the window of the sliding-window layers
    /// (`attention.sliding_window`).
    pub sliding_window: usize,
}

/// The named shapes, in one place. Vocabularies of the Llama shapes are the reference
/// tokenizer's (49,152), so they run with the SmolLM2 tokenizer; gemma3-270m is the real
/// shape with the real vocabulary (262,144): its tokenizer is Gemma's
/// (`--tokenizer-from models/gemma-3-270m-q4_k_m.gguf`). The `-tiny` shapes are each
/// family's block at a size every backend runs in a moment (the families' comparisons
/// with llama.cpp use them), with the reference tokenizer's vocabulary.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "smollm2-135m",
        arch: Arch::Llama,
        n_layers: 30,
        n_embd: 576,
        n_heads: 9,
        n_kv_heads: 3,
        key_length: 0,
        n_ff: 1536,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 100_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
        sliding_window: 0,
    },
    Shape {
        name: "llama3-1b",
        arch: Arch::Llama,
        n_layers: 16,
        n_embd: 2048,
        n_heads: 32,
        n_kv_heads: 8,
        key_length: 0,
        n_ff: 8192,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
        sliding_window: 0,
    },
    Shape {
        name: "llama3-8b",
        arch: Arch::Llama,
        n_layers: 32,
        n_embd: 4096,
        n_heads: 32,
        n_kv_heads: 8,
        key_length: 0,
        n_ff: 14336,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
        sliding_window: 0,
    },
    Shape {
        name: "gemma3-270m",
        arch: Arch::Gemma3,
        n_layers: 18,
        n_embd: 640,
        n_heads: 4,
        n_kv_heads: 1,
        key_length: 256,
        n_ff: 2048,
        vocab_size: 262_144,
        context_length: 32_768,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: 512,
    },
    Shape {
        name: "llama3-tiny",
        arch: Arch::Llama3,
        n_layers: 4,
        n_embd: 256,
        n_heads: 4,
        n_kv_heads: 2,
        key_length: 0,
        n_ff: 768,
        vocab_size: 49152,
        context_length: 4096,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
        sliding_window: 0,
    },
    Shape {
        name: "mistral-tiny",
        arch: Arch::Mistral,
        n_layers: 4,
        n_embd: 256,
        n_heads: 8,
        n_kv_heads: 2,
        key_length: 0,
        n_ff: 768,
        vocab_size: 49152,
        context_length: 4096,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
        sliding_window: 4096,
    },
    Shape {
        name: "qwen2-tiny",
        arch: Arch::Qwen2,
        n_layers: 4,
        n_embd: 256,
        n_heads: 4,
        n_kv_heads: 2,
        key_length: 0,
        n_ff: 768,
        vocab_size: 49152,
        context_length: 4096,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: 0,
    },
    Shape {
        name: "qwen3-tiny",
        arch: Arch::Qwen3,
        n_layers: 4,
        n_embd: 256,
        n_heads: 4,
        n_kv_heads: 2,
        key_length: 128,
        n_ff: 768,
        vocab_size: 49152,
        context_length: 4096,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        tied_embeddings: true,
        sliding_window: 0,
    },
];

/// The name of the shape given by flags rather than by the table.
pub const CUSTOM: &str = "custom";

/// Context length of a custom shape unless given.
pub const CUSTOM_DEFAULT_CONTEXT: usize = 4096;

impl Shape {
    /// A named shape from [`SHAPES`] (case-insensitive).
    pub fn named(name: &str) -> Result<Shape, SynthError> {
        SHAPES
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| SynthError::UnknownShape {
                name: name.to_string(),
                known: shape_names(),
            })
    }

    /// A custom shape: untied embeddings, RoPE theta 10,000 and eps 1e-5 unless changed.
    pub fn custom(
        n_layers: usize,
        n_embd: usize,
        n_heads: usize,
        n_kv_heads: usize,
        n_ff: usize,
        vocab_size: usize,
        context_length: usize,
    ) -> Result<Shape, SynthError> {
        let shape = Shape {
            name: CUSTOM,
            arch: Arch::Llama,
            n_layers,
            n_embd,
            n_heads,
            n_kv_heads,
            key_length: 0,
            n_ff,
            vocab_size,
            context_length,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tied_embeddings: false,
            sliding_window: 0,
        };
        shape.validate()?;
        Ok(shape)
    }

    /// The same shape as a Gemma 3 model with sliding windows of `window` positions
    /// (tied embeddings, RoPE base 1e6 for the global layers, eps 1e-6, as Gemma's).
    pub fn gemma3(self, window: usize) -> Result<Shape, SynthError> {
        let shape = Shape {
            arch: Arch::Gemma3,
            sliding_window: window,
            tied_embeddings: true,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            ..self
        };
        shape.validate()?;
        Ok(shape)
    }

    pub fn head_dim(&self) -> usize {
        match self.key_length {
            0 => self.n_embd / self.n_heads.max(1),
            d => d,
        }
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim()
    }

    /// The same shape written as another architecture, with sliding windows of `window`
    /// positions where it has them (Gemma 3: as [`Shape::gemma3`]; Mistral: every layer).
    pub fn with_arch(self, arch: Arch, window: usize) -> Result<Shape, SynthError> {
        if arch == Arch::Gemma3 {
            return self.gemma3(window);
        }
        let shape = Shape {
            arch,
            sliding_window: if arch.has_window() { window } else { 0 },
            ..self
        };
        shape.validate()?;
        Ok(shape)
    }

    /// Each layer's sliding window (None: full attention): Gemma 3's five window layers
    /// of every six, Mistral's every layer.
    pub fn layer_windows(&self) -> Vec<Option<usize>> {
        (0..self.n_layers)
            .map(|l| {
                let windowed = match self.arch {
                    Arch::Gemma3 => l % 6 != 5,
                    Arch::Mistral => true,
                    _ => false,
                };
                windowed.then_some(self.sliding_window)
            })
            .collect()
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Checks that the numbers make a model kiln and llama.cpp can load: heads divide
    /// the width, KV heads divide the heads, head size even (RoPE pairs), inner
    /// dimensions whole 32-value blocks.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |msg: String| Err(SynthError::BadShape(msg));
        let s = self;
        if s.n_layers == 0 || s.n_embd == 0 || s.n_heads == 0 || s.n_kv_heads == 0 {
            return bad("layers, width, heads and KV heads must all be at least 1".into());
        }
        if s.n_ff == 0 || s.vocab_size == 0 || s.context_length == 0 {
            return bad("FFN width, vocabulary and context length must all be at least 1".into());
        }
        if s.key_length == 0 && !s.n_embd.is_multiple_of(s.n_heads) {
            return bad(format!(
                "width {} is not a multiple of the {} heads",
                s.n_embd, s.n_heads
            ));
        }
        if !s.n_heads.is_multiple_of(s.n_kv_heads) {
            return bad(format!(
                "{} heads is not a multiple of the {} KV heads",
                s.n_heads, s.n_kv_heads
            ));
        }
        if !s.head_dim().is_multiple_of(2) {
            return bad(format!("head size {} must be even for RoPE", s.head_dim()));
        }
        if s.arch.has_window() && s.sliding_window == 0 {
            return bad(format!(
                "a {} shape needs a sliding window of at least 1",
                s.arch.name()
            ));
        }
        for (what, n) in [
            ("width", s.n_embd),
            ("FFN width", s.n_ff),
            ("query width (heads × head size)", s.q_dim()),
        ] {
            if !n.is_multiple_of(32) {
                return bad(format!(
                    "{what} {n} is not a multiple of 32 (the quant block length)"
                ));
            }
        }
        Ok(())
    }
}

/// The names of [`SHAPES`] and `custom`, comma-separated, for messages.
pub fn shape_names() -> String {
    let mut names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
    names.push(CUSTOM);
    names.join(", ")
}

/// The upper-case name used on the command line (`Q4_0`, `F16`, ...).
pub fn quant_name(dtype: DType) -> String {
    dtype.name().to_ascii_uppercase()
}

/// A quant given by name, case-insensitively: one of [`QUANTS`] (Q4_0, Q4_K, F16, ...).
pub fn parse_quant(name: &str) -> Result<DType, SynthError> {
    QUANTS
        .iter()
        .find(|d| d.name().eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| SynthError::UnknownQuant {
            name: name.to_string(),
            known: QUANTS.map(quant_name).join(", "),
        })
}

/// ggml's `LLAMA_FTYPE` number (`general.file_type`) for a model mostly in `quant`.
pub fn file_type(quant: DType) -> Option<u32> {
    Some(match quant {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        // Mostly Q4_K / Q5_K (the _S mixes), Q6_K.
        DType::Q4_K => 14,
        DType::Q5_K => 16,
        DType::Q6_K => 18,
        DType::BF16 => 32,
        DType::Q8_K | DType::F8E4M3 => return None,
    })
}
