//! Perplexity by llama.cpp's llama-perplexity method, so that the figures compare:
//! the text is tokenized once (BOS only if the model asks for one), cut into
//! floor(n_tokens / n_ctx) chunks of n_ctx tokens, each evaluated from an empty context,
//! and only the second half of each chunk is scored: the tokens at positions
//! n_ctx/2+1 .. n_ctx-1, predicted from the logits at n_ctx/2 .. n_ctx-2.

use crate::Error;
use crate::runner::{LogitsFor, Runner};
use crate::sampler::log_softmax;
use kiln_tokenizer::Tokenizer;

#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    pub ppl: f64,
    /// llama.cpp's ± estimate: ppl · stddev(nll) / sqrt(count - 1).
    pub ppl_plus_minus: f64,
    /// Tokens the chunks cover (n_chunks · n_ctx).
    pub tokens: usize,
    /// Predictions scored.
    pub scored: usize,
    pub chunks: usize,
    pub n_ctx: usize,
}

/// llama.cpp's `-f` reader drops one trailing newline; do the same.
pub fn prepare_text(text: &str) -> &str {
    text.strip_suffix('\n').unwrap_or(text)
}

/// Perplexity of `text` with chunks of `n_ctx` tokens; `on_chunk(i, n_chunks, running_ppl)`
/// after each.
pub fn perplexity(
    runner: &mut dyn Runner,
    tokenizer: &Tokenizer,
    text: &str,
    n_ctx: usize,
    mut on_chunk: impl FnMut(usize, usize, f64),
) -> Result<Perplexity, Error> {
    if n_ctx < 4 {
        return Err(Error::Invalid(format!(
            "context {n_ctx} is too small for perplexity"
        )));
    }
    if n_ctx > runner.n_ctx() {
        return Err(Error::ContextFull {
            needed: n_ctx,
            n_ctx: runner.n_ctx(),
        });
    }
    let tokens = tokenizer.encode(prepare_text(text), true, false);
    if tokens.len() < 2 * n_ctx {
        return Err(Error::Invalid(format!(
            "the text has {} tokens; perplexity with context {n_ctx} needs at least {}",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let add_bos = tokenizer.add_bos();
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    for chunk in 0..n_chunks {
        let mut ids = tokens[chunk * n_ctx..(chunk + 1) * n_ctx].to_vec();
        if add_bos {
            ids[0] = tokenizer.bos();
        }
        runner.reset();
        let logits = runner.forward(&ids, LogitsFor::From(first))?; // (n_ctx - first, vocab)
        let vocab = logits.len() / (n_ctx - first);
        for j in first..n_ctx - 1 {
            let row = &logits[(j - first) * vocab..(j - first + 1) * vocab];
            let lp = f64::from(log_softmax(row)[ids[j + 1] as usize]);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        on_chunk(chunk, n_chunks, (nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        ppl_plus_minus: ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt(),
        tokens: n_chunks * n_ctx,
        scored: count,
        chunks: n_chunks,
        n_ctx,
    })
}
