//! The streaming driver: prompt ids in, tokens and text out as soon as each is decoded,
//! with the timings users compare engines by.

use std::time::Instant;

use crate::Error;
use crate::runner::{LogitsFor, Runner};
use crate::sampler::{Sampler, SamplerConfig, top_logprobs};
use kiln_tokenizer::{StreamDecoder, Tokenizer};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    /// Stop after this many generated tokens.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Keep going through end-of-generation tokens (benchmarks need exactly max_tokens).
    pub ignore_eos: bool,
    /// Record the k most likely tokens of every distribution drawn from (0 = none).
    pub logprobs: usize,
}

/// One generated token, handed to the caller as soon as it is sampled.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    pub id: u32,
    /// Text completed by this token (empty while a UTF-8 character is still split, and
    /// for end-of-generation tokens).
    pub text: &'a str,
    /// The k most likely (id, log-probability) of the distribution it was drawn from.
    pub logprobs: Option<&'a [(u32, f32)]>,
    /// True for the one extra event after the last token that carries text the decoder
    /// still held (an incomplete UTF-8 character at the end); `id` then repeats the last
    /// token, which was already reported.
    pub tail: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token was sampled.
    EndOfGeneration,
    /// `max_tokens` were generated.
    Length,
    /// The context is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration => "eog",
            StopReason::Length => "length",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// The whole result of a generation, with its timings.
#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Generated ids, including a final end-of-generation token if one was sampled.
    pub tokens: Vec<u32>,
    pub text: String,
    /// Per generated token, its distribution's top-k (empty when not requested).
    pub logprobs: Vec<Vec<(u32, f32)>>,
    pub stop_reason: StopReason,
    /// From the start of prefill to the first sampled token.
    pub ttft_ms: f64,
    pub prefill_tok_s: f64,
    /// Tokens after the first, over the time after the first (0 when only one was made).
    pub decode_tok_s: f64,
}

/// What a forward step hands the sampler.
enum Next {
    Logits(Vec<f32>),
    /// The greedy token, chosen by the runner.
    Token(u32),
}

/// Generate from `req.prompt_ids` on an empty context, calling `on_token` for every
/// token; `on_token` returns false to stop early.
pub fn generate(
    runner: &mut dyn Runner,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<Generation, Error> {
    runner.reset();
    extend(runner, tokenizer, req, on_token)
}

/// Append `req.prompt_ids` to whatever context the runner holds (a conversation's earlier
/// turns) and generate, as [`generate`] does. Every generated token but the last is in the
/// context afterwards; `prompt_tokens` and the prefill rate count only the appended ids.
pub fn extend(
    runner: &mut dyn Runner,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<Generation, Error> {
    if req.prompt_ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let needed = runner.position() + req.prompt_ids.len();
    if needed > runner.n_ctx() {
        return Err(Error::ContextFull {
            needed,
            n_ctx: runner.n_ctx(),
        });
    }
    let mut sampler = Sampler::new(req.sampler.clone())?;
    let mut decoder = StreamDecoder::new(tokenizer);

    // Greedy without log-probabilities needs only the chosen id: the runner may pick it
    // on the device (Runner::forward_greedy) instead of returning a row of logits.
    let greedy = req.sampler.temperature <= 0.0 && req.logprobs == 0;
    let forward = |runner: &mut dyn Runner, tokens: &[u32]| -> Result<Next, Error> {
        Ok(if greedy {
            Next::Token(runner.forward_greedy(tokens)?)
        } else {
            Next::Logits(runner.forward(tokens, LogitsFor::Last)?)
        })
    };
    let start = Instant::now();
    let mut next = forward(runner, &req.prompt_ids)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let mut first_token_at = None;

    let mut out = Generation {
        prompt_tokens: req.prompt_ids.len(),
        tokens: Vec::new(),
        text: String::new(),
        logprobs: Vec::new(),
        stop_reason: StopReason::Length,
        ttft_ms: 0.0,
        prefill_tok_s: req.prompt_ids.len() as f64 / prefill_s.max(1e-9),
        decode_tok_s: 0.0,
    };
    while out.tokens.len() < req.max_tokens {
        let (id, top) = match &next {
            Next::Token(id) => (*id, None),
            Next::Logits(logits) => (
                sampler.sample(logits)?,
                (req.logprobs > 0).then(|| top_logprobs(logits, req.logprobs)),
            ),
        };
        first_token_at.get_or_insert_with(Instant::now);
        out.tokens.push(id);
        let eog = tokenizer.is_eog(id) && !req.ignore_eos;
        let text = if eog { String::new() } else { decoder.push(id) };
        out.text.push_str(&text);
        let keep_going = on_token(TokenEvent {
            id,
            text: &text,
            logprobs: top.as_deref(),
            tail: false,
        });
        if let Some(top) = top {
            out.logprobs.push(top);
        }
        if eog {
            out.stop_reason = StopReason::EndOfGeneration;
            break;
        }
        if !keep_going {
            out.stop_reason = StopReason::Cancelled;
            break;
        }
        if out.tokens.len() == req.max_tokens {
            break;
        }
        if runner.position() >= runner.n_ctx() {
            out.stop_reason = StopReason::ContextFull;
            break;
        }
        next = forward(runner, &[id])?;
    }
    let tail = decoder.finish();
    if !tail.is_empty() {
        out.text.push_str(&tail);
        on_token(TokenEvent {
            id: *out.tokens.last().unwrap_or(&0),
            text: &tail,
            logprobs: None,
            tail: true,
        });
    }
    if let Some(first) = first_token_at {
        out.ttft_ms = first.duration_since(start).as_secs_f64() * 1e3;
        let decode_s = first.elapsed().as_secs_f64();
        if out.tokens.len() > 1 {
            out.decode_tok_s = (out.tokens.len() - 1) as f64 / decode_s.max(1e-9);
        }
    }
    Ok(out)
}
