//! Random-weight GGUF models of known shapes (`kiln synth`), for benchmarks without
//! downloads.
//!
//! A synthesized file is what llama.cpp's converter would write for a Llama (or Gemma 3)
//! model of that shape: GGUF v3, the standard `general.*` / `llama.*` (`gemma3.*`) keys and
//! tensor names,
//! norms in F32, matrices in the chosen quant, and every `tokenizer.*` key copied from a
//! reference model so that prompts tokenize as they would for a real one.
//!
//! Values are realistic, never constant: matrices are N(0, 1/sqrt(fan_in)) and norms
//! 1 + N(0, 0.05), drawn by Box-Muller from a xoshiro256++ stream seeded per row from
//! (seed, tensor name, row), then quantized with llama.cpp's reference quantizers. Rows
//! are generated in parallel and the result does not depend on the schedule: the same
//! seed gives the same bytes. Tensors are streamed to the file a chunk of rows at a
//! time, so memory stays bounded whatever the model's size.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use kiln_ir::DType;
use kiln_ir::quant::{QuantError, quantize_row};
use rayon::prelude::*;

use kiln_gguf::{DEFAULT_ALIGNMENT, Gguf, GgufError, TensorEntry, Value, encode_header};
use kiln_tokenizer::{Tokenizer, TokenizerError};

mod random;
mod shapes;
mod write;

use random::{Rng, fnv1a};
pub use shapes::{
    Arch, CUSTOM, CUSTOM_DEFAULT_CONTEXT, SHAPES, Shape, file_type, llama3_rope_factors,
    parse_quant, quant_name, shape_names,
};
#[cfg(test)]
use write::{data_layout, gguf_header};
pub use write::{synthesize, synthesize_with_template};

/// Where `kiln synth` takes its tokenizer from unless told otherwise.
pub const DEFAULT_TOKENIZER_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The alignment written to `general.alignment`.
pub const ALIGNMENT: u64 = DEFAULT_ALIGNMENT;

/// Standard deviation of the norm weights around 1.
pub const NORM_STD: f32 = 0.05;

/// Standard deviation of the q/k/v biases (Qwen 2's are of the order of the projections'
/// outputs, which are about N(0, 1) here).
pub const BIAS_STD: f32 = 0.5;

/// The quants a synthesized model's matrices can be stored in. A matrix whose rows are
/// not whole 256-value super-blocks of a K-quant takes llama-quantize's fallback
/// ([`row_dtype`]).
pub const QUANTS: [DType; 9] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::F16,
];

/// The dtype a matrix of `cols`-value rows is stored in for `quant`: the quant itself,
/// or, when the rows are not whole blocks of it, llama-quantize's fallback (Q4_K →
/// Q5_0, Q5_K → Q5_1, Q6_K → Q8_0).
pub fn row_dtype(quant: DType, cols: usize) -> DType {
    if cols.is_multiple_of(quant.block_len()) {
        return quant;
    }
    match quant {
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        _ => DType::Q8_0,
    }
}

/// Rows are generated this many bytes (of quantized output) at a time.
const CHUNK_BYTES: usize = 16 << 20;

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, std) (a matrix: std = 1 / sqrt(fan_in)).
    Normal { std: f32 },
    /// 1 + N(0, [`NORM_STD`]) (an RMSNorm weight).
    Norm,
    /// Llama 3.1's RoPE divisors for this RoPE base ([`llama3_rope_factors`]): computed,
    /// not drawn.
    Llama3RopeFactors { theta: f32 },
}

/// One tensor of a synthesized model, before its data exists.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthTensor {
    pub name: String,
    /// Innermost first, as stored in GGUF.
    pub dims: Vec<u64>,
    pub dtype: DType,
    pub init: Init,
}

impl SynthTensor {
    fn matrix(name: String, rows: usize, cols: usize, dtype: DType) -> SynthTensor {
        SynthTensor {
            name,
            dims: vec![cols as u64, rows as u64],
            dtype: row_dtype(dtype, cols),
            init: Init::Normal {
                std: 1.0 / (cols as f32).sqrt(),
            },
        }
    }

    fn norm(name: String, len: usize) -> SynthTensor {
        SynthTensor {
            name,
            dims: vec![len as u64],
            dtype: DType::F32,
            init: Init::Norm,
        }
    }

    fn vector(name: String, len: usize, init: Init) -> SynthTensor {
        SynthTensor {
            name,
            dims: vec![len as u64],
            dtype: DType::F32,
            init,
        }
    }

    pub fn cols(&self) -> usize {
        self.dims[0] as usize
    }

    pub fn rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn row_bytes(&self) -> usize {
        self.dtype
            .bytes_for(self.cols() as u64)
            .expect("validated shapes have whole blocks") as usize
    }

    pub fn n_bytes(&self) -> u64 {
        self.row_bytes() as u64 * self.rows() as u64
    }
}

/// The storage type of the token embedding.
pub fn embedding_dtype(shape: &Shape, quant: DType) -> DType {
    if shape.tied_embeddings && quant != DType::F16 {
        DType::Q8_0
    } else {
        quant
    }
}

/// Every tensor of the model, in file order (llama.cpp's names).
pub fn tensors(shape: &Shape, quant: DType) -> Vec<SynthTensor> {
    let s = shape;
    let q_dim = s.q_dim();
    let gemma = s.arch == Arch::Gemma3;
    let qk_norm = matches!(s.arch, Arch::Gemma3 | Arch::Qwen3);
    let bias = |name: String, len| SynthTensor::vector(name, len, Init::Normal { std: BIAS_STD });
    let mut out = vec![SynthTensor::matrix(
        "token_embd.weight".into(),
        s.vocab_size,
        s.n_embd,
        embedding_dtype(s, quant),
    )];
    if s.arch == Arch::Llama3 {
        let theta = s.rope_theta;
        let init = Init::Llama3RopeFactors { theta };
        out.push(SynthTensor::vector(
            "rope_freqs.weight".into(),
            s.head_dim() / 2,
            init,
        ));
    }
    for i in 0..s.n_layers {
        let name = |t: &str| format!("blk.{i}.{t}.weight");
        out.push(SynthTensor::norm(name("attn_norm"), s.n_embd));
        out.push(SynthTensor::matrix(name("attn_q"), q_dim, s.n_embd, quant));
        out.push(SynthTensor::matrix(
            name("attn_k"),
            s.kv_dim(),
            s.n_embd,
            quant,
        ));
        out.push(SynthTensor::matrix(
            name("attn_v"),
            s.kv_dim(),
            s.n_embd,
            quant,
        ));
        if s.arch == Arch::Qwen2 {
            let bias_name = |t: &str| format!("blk.{i}.{t}.bias");
            out.push(bias(bias_name("attn_q"), q_dim));
            out.push(bias(bias_name("attn_k"), s.kv_dim()));
            out.push(bias(bias_name("attn_v"), s.kv_dim()));
        }
        if qk_norm {
            out.push(SynthTensor::norm(name("attn_q_norm"), s.head_dim()));
            out.push(SynthTensor::norm(name("attn_k_norm"), s.head_dim()));
        }
        out.push(SynthTensor::matrix(
            name("attn_output"),
            s.n_embd,
            q_dim,
            quant,
        ));
        if gemma {
            out.push(SynthTensor::norm(name("post_attention_norm"), s.n_embd));
        }
        out.push(SynthTensor::norm(name("ffn_norm"), s.n_embd));
        out.push(SynthTensor::matrix(
            name("ffn_gate"),
            s.n_ff,
            s.n_embd,
            quant,
        ));
        out.push(SynthTensor::matrix(name("ffn_up"), s.n_ff, s.n_embd, quant));
        out.push(SynthTensor::matrix(
            name("ffn_down"),
            s.n_embd,
            s.n_ff,
            quant,
        ));
        if gemma {
            out.push(SynthTensor::norm(name("post_ffw_norm"), s.n_embd));
        }
    }
    out.push(SynthTensor::norm("output_norm.weight".into(), s.n_embd));
    if !s.tied_embeddings {
        out.push(SynthTensor::matrix(
            "output.weight".into(),
            s.vocab_size,
            s.n_embd,
            quant,
        ));
    }
    out
}

/// The `general.*` and `<arch>.*` keys (without the tokenizer's).
pub fn model_metadata(shape: &Shape, quant: DType, seed: u64) -> Vec<(String, Value)> {
    let s = shape;
    let u32_of = |n: usize| Value::U32(n as u32);
    let name = if s.name == CUSTOM {
        format!(
            "kiln synth custom {} {}L {}d {}h {}kv ffn{} {} seed {seed}",
            s.arch.name(),
            s.n_layers,
            s.n_embd,
            s.n_heads,
            s.n_kv_heads,
            s.n_ff,
            quant_name(quant)
        )
    } else {
        format!("kiln synth {} {} seed {seed}", s.name, quant_name(quant))
    };
    let arch = s.arch.gguf_name();
    let key = |k: &str| format!("{arch}.{k}");
    let mut keys = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name)),
        ("general.alignment".into(), Value::U32(ALIGNMENT as u32)),
        (
            "general.file_type".into(),
            Value::U32(file_type(quant).expect("a synth quant")),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        (key("context_length"), u32_of(s.context_length)),
        (key("embedding_length"), u32_of(s.n_embd)),
        (key("block_count"), u32_of(s.n_layers)),
        (key("feed_forward_length"), u32_of(s.n_ff)),
        (key("attention.head_count"), u32_of(s.n_heads)),
        (key("attention.head_count_kv"), u32_of(s.n_kv_heads)),
        (
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(s.rms_norm_eps),
        ),
        (key("rope.freq_base"), Value::F32(s.rope_theta)),
    ];
    match s.arch {
        Arch::Llama | Arch::Llama3 => keys.extend([
            (key("rope.dimension_count"), u32_of(s.head_dim())),
            (key("vocab_size"), u32_of(s.vocab_size)),
        ]),
        Arch::Mistral => keys.extend([
            (key("rope.dimension_count"), u32_of(s.head_dim())),
            (key("vocab_size"), u32_of(s.vocab_size)),
            (key("attention.sliding_window"), u32_of(s.sliding_window)),
        ]),
        // As llama.cpp's converter writes Qwen: Qwen 3's head size apart from the width.
        Arch::Qwen2 => {}
        Arch::Qwen3 => keys.extend([
            (key("attention.key_length"), u32_of(s.head_dim())),
            (key("attention.value_length"), u32_of(s.head_dim())),
        ]),
        // As llama.cpp's converter writes Gemma 3: key and value lengths, the window; the
        // vocabulary is the tokenizer's.
        Arch::Gemma3 => keys.extend([
            (key("attention.key_length"), u32_of(s.head_dim())),
            (key("attention.value_length"), u32_of(s.head_dim())),
            (key("attention.sliding_window"), u32_of(s.sliding_window)),
        ]),
    }
    keys
}

/// What to synthesize.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub shape: Shape,
    /// Storage of the matrices: one of [`QUANTS`].
    pub quant: DType,
    pub seed: u64,
    /// A GGUF model whose `tokenizer.*` keys are copied.
    pub tokenizer_from: PathBuf,
}

/// Where the writing stands, reported once the header is written (the output file
/// exists and every input has been checked) and after each chunk of rows.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// The tensor being written.
    pub tensor: &'a str,
    /// Its index and the number of tensors.
    pub index: usize,
    pub n_tensors: usize,
    /// Bytes of the file written so far and in all.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthSummary {
    /// Size of the file.
    pub bytes: u64,
    pub tensors: usize,
    pub params: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown shape {name:?} (known: {known})")]
    UnknownShape { name: String, known: String },
    #[error("unknown quant {name:?} (choose one of {known})")]
    UnknownQuant { name: String, known: String },
    #[error("bad shape: {0}")]
    BadShape(String),
    #[error(
        "cannot take the tokenizer from {}: {source} (kiln synth copies the tokenizer of a GGUF model: pass --tokenizer-from MODEL, or run scripts/fetch-model.sh for the default)",
        path.display()
    )]
    TokenizerSource { path: PathBuf, source: GgufError },
    #[error("the tokenizer of {}: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        source: TokenizerError,
    },
    #[error(
        "shape {shape} has a vocabulary of {shape_vocab}, but the tokenizer of {} has {tokenizer_vocab} tokens (they must be equal)",
        path.display()
    )]
    VocabMismatch {
        shape: String,
        shape_vocab: usize,
        tokenizer_vocab: usize,
        path: PathBuf,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot read the chat template {}: {source}", path.display())]
    ChatTemplate { path: PathBuf, source: io::Error },
    #[error("tensor {tensor:?}: {source}")]
    Quant { tensor: String, source: QuantError },
}

/// The `tokenizer.*` keys of a model, checked to make a tokenizer kiln can load.
/// Returns them with the vocabulary size.
pub fn tokenizer_metadata(path: &Path) -> Result<(Vec<(String, Value)>, usize), SynthError> {
    let gguf = Gguf::open(path).map_err(|source| SynthError::TokenizerSource {
        path: path.to_path_buf(),
        source,
    })?;
    let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|source| SynthError::Tokenizer {
        path: path.to_path_buf(),
        source,
    })?;
    let keys = gguf
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .cloned()
        .collect();
    Ok((keys, tokenizer.vocab_size()))
}

/// The number of tokens of a model's vocabulary (`tokenizer.ggml.tokens`), for a
/// custom shape's default vocabulary.
pub fn tokenizer_vocab_size(path: &Path) -> Result<usize, SynthError> {
    let source = |source| SynthError::TokenizerSource {
        path: path.to_path_buf(),
        source,
    };
    let gguf = Gguf::open(path).map_err(source)?;
    let tokens = gguf.get_array("tokenizer.ggml.tokens").map_err(source)?;
    Ok(tokens.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_have_the_asked_moments() {
        let mut rng = Rng::for_row(7, fnv1a(b"x"), 3);
        let mut v = vec![0.0f32; 1 << 16];
        rng.fill_normal(&mut v, 1.0, 0.5);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn data_offsets_are_aligned_and_headers_padded() {
        let shape = Shape::custom(2, 64, 4, 2, 96, 100, 128).unwrap();
        let ts = tensors(&shape, DType::Q4_1);
        let (offsets, end) = data_layout(&ts, ALIGNMENT);
        assert!(offsets.iter().all(|o| o % ALIGNMENT == 0));
        assert_eq!(end, offsets.last().unwrap() + ts.last().unwrap().n_bytes());
        let header = gguf_header(&model_metadata(&shape, DType::Q4_1, 0), &ts, ALIGNMENT);
        assert_eq!(header.len() as u64 % ALIGNMENT, 0);
    }

    #[test]
    fn llama3_rope_factors_cover_the_three_regimes() {
        // Llama 3.1 8B's heads (128, base 500,000): short wavelengths kept, long ones
        // divided by 8, a blend between, never decreasing.
        let f = llama3_rope_factors(500_000.0, 128);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.iter().any(|&x| x > 1.0 && x < 8.0));
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn families_write_their_tensors_and_keys() {
        let names = |name: &str| -> Vec<String> {
            let shape = Shape::named(name).unwrap();
            tensors(&shape, DType::Q8_0)
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        let has = |name: &str, tensor: &str| names(name).iter().any(|t| t == tensor);
        assert!(has("qwen2-tiny", "blk.3.attn_v.bias"));
        assert!(!has("qwen2-tiny", "blk.0.attn_q_norm.weight"));
        assert!(has("qwen3-tiny", "blk.0.attn_k_norm.weight"));
        assert!(!has("qwen3-tiny", "blk.0.attn_q.bias"));
        assert!(has("llama3-tiny", "rope_freqs.weight"));
        assert!(!has("mistral-tiny", "rope_freqs.weight"));
        let mistral = Shape::named("mistral-tiny").unwrap();
        let keys = model_metadata(&mistral, DType::Q8_0, 0);
        let key = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            key("general.architecture"),
            Some(Value::String("llama".into()))
        );
        assert_eq!(
            key("llama.attention.sliding_window"),
            Some(Value::U32(4096))
        );
        assert!(mistral.layer_windows().iter().all(|w| *w == Some(4096)));
        let qwen3 = Shape::named("qwen3-tiny").unwrap();
        assert_eq!(qwen3.q_dim(), 512);
        assert_eq!(Arch::parse("QWEN2").unwrap(), Arch::Qwen2);
        assert!(Arch::parse("qwen9").is_err());
    }

    #[test]
    fn shapes_in_the_table_are_valid_and_named_uniquely() {
        for (i, s) in SHAPES.iter().enumerate() {
            s.validate().unwrap();
            assert_eq!(Shape::named(&s.name.to_uppercase()).unwrap(), *s);
            assert!(SHAPES[..i].iter().all(|o| o.name != s.name));
            assert_ne!(s.name, CUSTOM);
        }
    }
}
