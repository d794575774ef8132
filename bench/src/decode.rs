//! One end-to-end decode step of a random-weight model (`kiln_tools::synth`), through
//! `Compiled::step`: all the launches of a model, as `kiln run` makes them.
//!
//! The tokenizer (and so the vocabulary) comes from the reference model, so a machine
//! without `models/SmolLM2-135M-Instruct.Q4_1.gguf` skips the suite.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_engine::compiled::{BatchEntry, CompileOptions, Compiled};
use kiln_engine::gguf::Gguf;
use kiln_engine::kv::SeqId;
use kiln_engine::model::Model;
use kiln_ir::DType;
use kiln_ir::kv_layout::KvLayout;
use kiln_tools::synth::{self, Shape, SynthConfig};

use crate::{Constructor, Rng};

/// The model whose tokenizer synthesized models copy.
pub fn reference_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(synth::DEFAULT_TOKENIZER_MODEL)
}

/// Synthesize `shape` in `quant` into `dir` unless a previous run left it there (synth
/// renames a finished file into place, so a file present is whole).
pub fn synth_model(shape: Shape, quant: DType, seed: u64, dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join(format!(
        "{}-{}-seed{seed}.gguf",
        shape.name,
        synth::quant_name(quant)
    ));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = SynthConfig {
        shape,
        quant,
        seed,
        tokenizer_from: reference_model(),
    };
    synth::synthesize(&config, &path, |_| {}).map_err(|e| e.to_string())?;
    Ok(path)
}

/// `copies` models from the bytes of one file, each in its own memory, for a rotation
/// of weights larger than the last-level cache.
pub fn load_copies(path: &Path, copies: usize) -> Result<Vec<Model>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    (0..copies.max(1))
        .map(|_| {
            let gguf = Gguf::from_bytes(bytes.clone()).map_err(|e| e.to_string())?;
            Model::from_gguf(gguf).map_err(|e| e.to_string())
        })
        .collect()
}

/// Weight bytes one decode step of `shape` in `quant` reads: every tensor, except that
/// an untied embedding gives one row (the LM head then has its own matrix).
pub fn step_weight_bytes(shape: &Shape, quant: DType) -> u64 {
    synth::tensors(shape, quant)
        .iter()
        .map(|t| match (t.name.as_str(), shape.tied_embeddings) {
            ("token_embd.weight", false) => t.row_bytes() as u64,
            _ => t.n_bytes(),
        })
        .sum()
}

/// Positions a decode step at context `ctx` attends to, all layers together (a window
/// layer reads its window only).
fn attended_positions(shape: &Shape, ctx: usize) -> u64 {
    shape
        .layer_windows()
        .iter()
        .map(|w| w.map_or(ctx, |w| w.min(ctx)) as u64)
        .sum()
}

/// Bytes a decode step at context `ctx` reads: weights and the (FP8) KV of `ctx`
/// positions (of the window, in a window layer).
pub fn step_bytes(shape: &Shape, quant: DType, ctx: usize) -> u64 {
    let kv_per_layer = KvLayout::new(1, shape.n_kv_heads, shape.head_dim())
        .map(|l| l.bytes_per_token() as u64)
        .unwrap_or(0);
    step_weight_bytes(shape, quant) + attended_positions(shape, ctx) * kv_per_layer
}

/// FLOPs of a decode step: 2 a matrix weight (the LM head included, not the embedding
/// lookup) and 4 a (head, position, dimension) of attention.
pub fn step_flops(shape: &Shape, quant: DType, ctx: usize) -> u64 {
    let matrices: u64 = synth::tensors(shape, quant)
        .iter()
        .filter(|t| t.rows() > 1 && (shape.tied_embeddings || t.name != "token_embd.weight"))
        .map(|t| t.n_elements())
        .sum();
    2 * matrices + 4 * attended_positions(shape, ctx) * (shape.n_heads * shape.head_dim()) as u64
}

/// Compiled copies of a model, each with one sequence of `ctx − 1` random tokens; a
/// timed step appends one token (context `ctx`) and is then truncated away.
pub struct Decoder<'m> {
    compiled: Vec<(Compiled<'m>, SeqId)>,
    ctx: usize,
    tokens: Vec<u32>,
    cursor: usize,
    pub timed: Duration,
    pub timed_steps: u64,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("copies", &self.compiled.len())
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl<'m> Decoder<'m> {
    pub fn new(models: &'m [Model], make: Constructor, ctx: usize) -> Result<Decoder<'m>, String> {
        let mut rng = Rng::new(ctx as u64);
        let mut compiled = Vec::with_capacity(models.len());
        for model in models {
            let vocab = model.config.vocab_size;
            let prompt: Vec<u32> = (0..ctx - 1).map(|_| rng.below(vocab) as u32).collect();
            let mut c = Compiled::new(model, make()?, CompileOptions::new(ctx + 16))
                .map_err(|e| e.to_string())?;
            let seq = c.kv().create_sequence();
            c.step(&[BatchEntry {
                seq,
                tokens: &prompt,
                logits_from: None,
            }])
            .map_err(|e| format!("prefill: {e}"))?;
            compiled.push((c, seq));
        }
        let vocab = models.first().map_or(1, |m| m.config.vocab_size);
        let tokens = (0..64).map(|_| rng.below(vocab) as u32).collect();
        Ok(Decoder {
            compiled,
            ctx,
            tokens,
            cursor: 0,
            timed: Duration::ZERO,
            timed_steps: 0,
        })
    }

    /// Time `iters` decode steps, copies in turn; each step waits for the backend before
    /// the clock is read, and its token is truncated away outside the timing.
    pub fn time(&mut self, iters: u64) -> Result<Duration, String> {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let i = self.cursor;
            self.cursor += 1;
            let n = self.compiled.len();
            let (c, seq) = &mut self.compiled[i % n];
            let token = [self.tokens[i % self.tokens.len()]];
            let start = Instant::now();
            let logits = c
                .step(&[BatchEntry::last(*seq, &token)])
                .map_err(|e| e.to_string())?;
            c.backend().synchronize().map_err(|e| e.to_string())?;
            total += start.elapsed();
            if logits.iter().any(|v| !v.is_finite()) {
                return Err("non-finite logits".into());
            }
            c.kv()
                .truncate(*seq, self.ctx - 1)
                .map_err(|e| e.to_string())?;
        }
        self.timed += total;
        self.timed_steps += iters;
        Ok(total)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-layer model with the reference tokenizer, or None (printed) without it.
    pub(crate) fn tiny_model() -> Option<Model> {
        if !reference_model().exists() {
            println!(
                "skipping: {} is absent (scripts/fetch-model.sh)",
                reference_model().display()
            );
            return None;
        }
        let shape = Shape::custom(2, 64, 4, 2, 128, 49152, 256).expect("a valid shape");
        let dir = std::env::temp_dir().join(format!("kiln-bench-test-{}", std::process::id()));
        let path = synth_model(shape, DType::Q4_0, 7, &dir).expect("synthesize");
        let model = load_copies(&path, 1).expect("load").pop();
        let _ = std::fs::remove_dir_all(&dir);
        model
    }

    #[test]
    fn step_figures_count_the_weights() {
        let shape = Shape::named("smollm2-135m").expect("a named shape");
        let weights = step_weight_bytes(&shape, DType::Q4_1);
        // Tied: the Q8_0 embedding (the LM head) is read whole.
        assert!(weights > 49152 * 576 * 34 / 32, "{weights}");
        assert!(step_bytes(&shape, DType::Q4_1, 64) > weights);
        // About 2 FLOPs a parameter: 135M parameters.
        let flops = step_flops(&shape, DType::Q4_1, 64);
        assert!((250_000_000..300_000_000).contains(&flops), "{flops}");
    }
}
