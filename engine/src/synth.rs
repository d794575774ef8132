//! Random-weight GGUF models of known shapes (`kiln synth`), for benchmarks without
//! downloads.
//!
//! A synthesized file is what llama.cpp's converter would write for a Llama model of
//! that shape: GGUF v3, the standard `general.*` / `llama.*` keys and tensor names,
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

use crate::gguf::{DEFAULT_ALIGNMENT, Gguf, GgufError, TensorEntry, Value, encode_header};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Where `kiln synth` takes its tokenizer from unless told otherwise.
pub const DEFAULT_TOKENIZER_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The alignment written to `general.alignment`.
pub const ALIGNMENT: u64 = DEFAULT_ALIGNMENT;

/// Standard deviation of the norm weights around 1.
pub const NORM_STD: f32 = 0.05;

/// The quants a synthesized model's matrices can be stored in.
pub const QUANTS: [DType; 4] = [DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::F16];

/// Rows are generated this many bytes (of quantized output) at a time.
const CHUNK_BYTES: usize = 16 << 20;

/// The hyper-parameters of a Llama-family model shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub n_layers: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    /// The LM head is the token embedding (no `output.weight`); the embedding is then
    /// stored in Q8_0 like the reference model's (F16 when the quant is F16).
    pub tied_embeddings: bool,
}

/// The named shapes, in one place. Vocabularies are the reference tokenizer's (49,152),
/// so every shape runs with the SmolLM2 tokenizer.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "smollm2-135m",
        n_layers: 30,
        n_embd: 576,
        n_heads: 9,
        n_kv_heads: 3,
        n_ff: 1536,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 100_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: true,
    },
    Shape {
        name: "llama3-1b",
        n_layers: 16,
        n_embd: 2048,
        n_heads: 32,
        n_kv_heads: 8,
        n_ff: 8192,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
    },
    Shape {
        name: "llama3-8b",
        n_layers: 32,
        n_embd: 4096,
        n_heads: 32,
        n_kv_heads: 8,
        n_ff: 14336,
        vocab_size: 49152,
        context_length: 8192,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        tied_embeddings: false,
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
            n_layers,
            n_embd,
            n_heads,
            n_kv_heads,
            n_ff,
            vocab_size,
            context_length,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tied_embeddings: false,
        };
        shape.validate()?;
        Ok(shape)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_heads.max(1)
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
        if !s.n_embd.is_multiple_of(s.n_heads) {
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
            return bad(format!(
                "head size {} (width / heads) must be even for RoPE",
                s.head_dim()
            ));
        }
        for (what, n) in [("width", s.n_embd), ("FFN width", s.n_ff)] {
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

/// A quant given by name, case-insensitively: Q4_0, Q4_1, Q8_0 or F16.
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
        DType::BF16 => 32,
        DType::F8E4M3 => return None,
    })
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, std) (a matrix: std = 1 / sqrt(fan_in)).
    Normal { std: f32 },
    /// 1 + N(0, [`NORM_STD`]) (an RMSNorm weight).
    Norm,
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
            dtype,
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
    let q_dim = s.n_heads * s.head_dim();
    let mut out = vec![SynthTensor::matrix(
        "token_embd.weight".into(),
        s.vocab_size,
        s.n_embd,
        embedding_dtype(s, quant),
    )];
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
        out.push(SynthTensor::matrix(
            name("attn_output"),
            s.n_embd,
            q_dim,
            quant,
        ));
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

/// The `general.*` and `llama.*` keys (without the tokenizer's).
pub fn model_metadata(shape: &Shape, quant: DType, seed: u64) -> Vec<(String, Value)> {
    let s = shape;
    let u32_of = |n: usize| Value::U32(n as u32);
    let name = if s.name == CUSTOM {
        format!(
            "kiln synth custom {}L {}d {}h {}kv ffn{} {} seed {seed}",
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
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name)),
        ("general.alignment".into(), Value::U32(ALIGNMENT as u32)),
        (
            "general.file_type".into(),
            Value::U32(file_type(quant).expect("a synth quant")),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        ("llama.context_length".into(), u32_of(s.context_length)),
        ("llama.embedding_length".into(), u32_of(s.n_embd)),
        ("llama.block_count".into(), u32_of(s.n_layers)),
        ("llama.feed_forward_length".into(), u32_of(s.n_ff)),
        ("llama.attention.head_count".into(), u32_of(s.n_heads)),
        ("llama.attention.head_count_kv".into(), u32_of(s.n_kv_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(s.rms_norm_eps),
        ),
        ("llama.rope.freq_base".into(), Value::F32(s.rope_theta)),
        ("llama.rope.dimension_count".into(), u32_of(s.head_dim())),
        ("llama.vocab_size".into(), u32_of(s.vocab_size)),
    ]
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

/// Writes a random-weight model to `out` (through a `.part` file renamed at the end, so
/// a failed run leaves no half-written model behind).
pub fn synthesize(
    config: &SynthConfig,
    out: &Path,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<SynthSummary, SynthError> {
    config.shape.validate()?;
    if !QUANTS.contains(&config.quant) {
        return Err(SynthError::UnknownQuant {
            name: config.quant.name().to_string(),
            known: QUANTS.map(quant_name).join(", "),
        });
    }
    let (tokenizer_keys, tokenizer_vocab) = tokenizer_metadata(&config.tokenizer_from)?;
    if tokenizer_vocab != config.shape.vocab_size {
        return Err(SynthError::VocabMismatch {
            shape: config.shape.name.to_string(),
            shape_vocab: config.shape.vocab_size,
            tokenizer_vocab,
            path: config.tokenizer_from.clone(),
        });
    }
    let mut metadata = model_metadata(&config.shape, config.quant, config.seed);
    metadata.extend(tokenizer_keys);
    let tensors = tensors(&config.shape, config.quant);

    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let io_err = |source| SynthError::Io {
        path: part.clone(),
        source,
    };
    let result = File::create(&part)
        .map_err(io_err)
        .and_then(|file| {
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let bytes = write_model(
                &mut w,
                &part,
                &metadata,
                &tensors,
                config.seed,
                &mut progress,
            )?;
            let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
            file.sync_all().map_err(io_err)?;
            Ok(bytes)
        })
        .and_then(|bytes| {
            std::fs::rename(&part, out).map_err(|source| SynthError::Io {
                path: out.to_path_buf(),
                source,
            })?;
            Ok(bytes)
        });
    match result {
        Ok(bytes) => Ok(SynthSummary {
            bytes,
            tensors: tensors.len(),
            params: tensors.iter().map(SynthTensor::n_elements).sum(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Writes header and data; returns the bytes written.
fn write_model<W: Write>(
    out: &mut W,
    path: &Path,
    metadata: &[(String, Value)],
    tensors: &[SynthTensor],
    seed: u64,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<u64, SynthError> {
    let io_err = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let header = gguf_header(metadata, tensors, ALIGNMENT);
    let data_bytes = data_layout(tensors, ALIGNMENT).1;
    let bytes_total = header.len() as u64 + data_bytes;
    out.write_all(&header).map_err(io_err)?;
    let mut written = header.len() as u64;
    if let Some(first) = tensors.first() {
        progress(Progress {
            tensor: &first.name,
            index: 0,
            n_tensors: tensors.len(),
            bytes_done: written,
            bytes_total,
        });
    }
    let mut buf: Vec<u8> = Vec::new();
    for (index, t) in tensors.iter().enumerate() {
        let row_bytes = t.row_bytes();
        let rows_per_chunk = (CHUNK_BYTES / row_bytes).max(1);
        let tensor_key = fnv1a(t.name.as_bytes());
        let mut row = 0;
        while row < t.rows() {
            let n = rows_per_chunk.min(t.rows() - row);
            buf.resize(n * row_bytes, 0);
            fill_rows(t, tensor_key, seed, row, &mut buf)?;
            out.write_all(&buf).map_err(io_err)?;
            written += buf.len() as u64;
            row += n;
            progress(Progress {
                tensor: &t.name,
                index,
                n_tensors: tensors.len(),
                bytes_done: written,
                bytes_total,
            });
        }
        let pad = written.next_multiple_of(ALIGNMENT) - written;
        if index + 1 < tensors.len() && pad > 0 {
            out.write_all(&[0u8; ALIGNMENT as usize][..pad as usize])
                .map_err(io_err)?;
            written += pad;
        }
    }
    out.flush().map_err(io_err)?;
    debug_assert_eq!(written, bytes_total);
    Ok(written)
}

/// Generates and quantizes rows `first..` of `t` into `dst` (whole rows), in parallel.
fn fill_rows(
    t: &SynthTensor,
    tensor_key: u64,
    seed: u64,
    first: usize,
    dst: &mut [u8],
) -> Result<(), SynthError> {
    let cols = t.cols();
    dst.par_chunks_mut(t.row_bytes())
        .enumerate()
        .try_for_each_init(
            || vec![0.0f32; cols],
            |values, (i, out)| {
                let mut rng = Rng::for_row(seed, tensor_key, (first + i) as u64);
                match t.init {
                    Init::Normal { std } => rng.fill_normal(values, 0.0, std),
                    Init::Norm => rng.fill_normal(values, 1.0, NORM_STD),
                }
                quantize_row(t.dtype, values, out).map_err(|source| SynthError::Quant {
                    tensor: t.name.clone(),
                    source,
                })
            },
        )
}

/// The header entries of the tensors (for the shared GGUF header encoder).
fn entries(tensors: &[SynthTensor]) -> Vec<TensorEntry<'_>> {
    tensors
        .iter()
        .map(|t| TensorEntry {
            name: &t.name,
            dims: &t.dims,
            dtype: t.dtype,
            n_bytes: t.n_bytes(),
        })
        .collect()
}

/// Each tensor's data offset (relative to the data section) and the section's length.
fn data_layout(tensors: &[SynthTensor], alignment: u64) -> (Vec<u64>, u64) {
    crate::gguf::data_layout(&entries(tensors), alignment)
}

/// The GGUF v3 header, encoded exactly as [`crate::gguf::GgufWriter`] does.
fn gguf_header(metadata: &[(String, Value)], tensors: &[SynthTensor], alignment: u64) -> Vec<u8> {
    encode_header(metadata, &entries(tensors), alignment)
        .expect("synth dtypes are GGUF types")
        .0
}

/// 64-bit FNV-1a, to key a tensor's random stream by its name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256++, one stream per (seed, tensor, row).
struct Rng([u64; 4]);

impl Rng {
    fn for_row(seed: u64, tensor_key: u64, row: u64) -> Rng {
        let mut sm = seed;
        let a = splitmix64(&mut sm);
        let mut sm = a ^ tensor_key;
        let b = splitmix64(&mut sm);
        let mut sm = b ^ row;
        Rng([
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Fills `out` with N(mean, std) by Box-Muller in Marsaglia's polar form (two
    /// values per accepted draw, no trigonometry).
    fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        const SCALE: f32 = 2.0 / (1u32 << 24) as f32;
        for pair in out.chunks_mut(2) {
            let (u, v, s) = loop {
                let r = self.next_u64();
                // Two uniforms in [-1, 1) from 24 bits each.
                let u = (r >> 40) as f32 * SCALE - 1.0;
                let v = ((r >> 16) & 0xff_ffff) as f32 * SCALE - 1.0;
                let s = u * u + v * v;
                if s > 0.0 && s < 1.0 {
                    break (u, v, s);
                }
            };
            let f = (-2.0 * s.ln() / s).sqrt() * std;
            pair[0] = mean + u * f;
            if let Some(second) = pair.get_mut(1) {
                *second = mean + v * f;
            }
        }
    }
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
    fn shapes_in_the_table_are_valid_and_named_uniquely() {
        for (i, s) in SHAPES.iter().enumerate() {
            s.validate().unwrap();
            assert_eq!(Shape::named(&s.name.to_uppercase()).unwrap(), *s);
            assert!(SHAPES[..i].iter().all(|o| o.name != s.name));
            assert_ne!(s.name, CUSTOM);
        }
    }
}
