//! The streaming driver: prompt ids in, tokens and text out as soon as each is decoded,
//! with the timings users compare engines by.

use std::time::Instant;

use kiln_ir::step::Candidate;

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
    /// The row's most likely tokens, as many as the sampler looks at, chosen by the runner.
    Candidates(Vec<Candidate>),
}

/// A grammar over the vocabulary (kiln-structured's constraint, adapted by the caller):
/// the tokens it disallows are masked before every sample.
pub trait TokenMask {
    /// Set the logits of disallowed tokens to −∞.
    fn apply(&mut self, logits: &mut [f32]) -> Result<(), String>;
    /// Advance past the sampled token.
    fn accept(&mut self, id: u32) -> Result<(), String>;
    /// Nothing more is allowed: the answer is complete.
    fn is_finished(&self) -> bool;
}

/// [`generate`] with every token sampled under `mask` (always from a row of logits: the
/// device's greedy pick cannot see the mask). A complete grammar ends the generation as
/// an end-of-generation token does.
pub fn generate_masked(
    runner: &mut dyn Runner,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mask: &mut dyn TokenMask,
    on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<Generation, Error> {
    runner.reset();
    run(runner, tokenizer, req, Some(mask), on_token)
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
    on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<Generation, Error> {
    run(runner, tokenizer, req, None, on_token)
}

fn run(
    runner: &mut dyn Runner,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mut mask: Option<&mut dyn TokenMask>,
    mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<Generation, Error> {
    let (mut sampler, mut emit) = check(runner, tokenizer, req)?;
    // Without log-probabilities or a mask, the sampler needs only the chosen id (greedy)
    // or the row's top k (a top-k filter): the runner may pick them on the device
    // (Runner::forward_greedy, Runner::forward_top_k) instead of returning a row of logits.
    let top = req.logprobs == 0 && mask.is_none();
    let greedy = top && req.sampler.temperature <= 0.0;
    let top_k = (top && req.sampler.top_k > 0).then_some(req.sampler.top_k);
    let forward = |runner: &mut dyn Runner, tokens: &[u32]| -> Result<Next, Error> {
        Ok(if greedy {
            Next::Token(runner.forward_greedy(tokens)?)
        } else if let Some(k) = top_k {
            Next::Candidates(runner.forward_top_k(tokens, k)?)
        } else {
            Next::Logits(runner.forward(tokens, LogitsFor::Last)?)
        })
    };
    let mut next = forward(runner, &req.prompt_ids)?;
    emit.prefilled();
    while emit.wants_more() {
        let (id, logits) = match (&next, mask.as_deref_mut()) {
            (Next::Token(id), _) => (*id, None),
            (Next::Candidates(cand), _) => (sampler.sample_candidates(cand)?, None),
            (Next::Logits(logits), None) => (sampler.sample(logits)?, Some(logits.as_slice())),
            (Next::Logits(logits), Some(mask)) => {
                let constraint = |e: String| Error::Invalid(format!("constraint: {e}"));
                let mut masked = logits.clone();
                mask.apply(&mut masked).map_err(constraint)?;
                let id = sampler.sample(&masked)?;
                mask.accept(id).map_err(constraint)?;
                (id, Some(logits.as_slice()))
            }
        };
        if emit.push(id, logits, &mut on_token) {
            break;
        }
        if mask.as_deref().is_some_and(|m| m.is_finished()) {
            emit.stop(StopReason::EndOfGeneration);
            break;
        }
        if runner.position() >= runner.n_ctx() {
            emit.stop(StopReason::ContextFull);
            break;
        }
        next = forward(runner, &[id])?;
    }
    Ok(emit.finish(&mut on_token))
}

/// Checks the request against what the runner holds and returns the sampler and the
/// emitter that times and records the tokens; the prompt's prefill is timed from here
/// to [`Emitter::prefilled`]. Shared with [`crate::speculative::generate`].
pub(crate) fn check<'t>(
    runner: &dyn Runner,
    tokenizer: &'t Tokenizer,
    req: &GenerateRequest,
) -> Result<(Sampler, Emitter<'t>), Error> {
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
    let sampler = Sampler::new(req.sampler.clone())?;
    let start = Instant::now();
    let emit = Emitter {
        decoder: StreamDecoder::new(tokenizer),
        tokenizer,
        max_tokens: req.max_tokens,
        ignore_eos: req.ignore_eos,
        logprobs: req.logprobs,
        start,
        first_token_at: None,
        out: Generation {
            prompt_tokens: req.prompt_ids.len(),
            tokens: Vec::new(),
            text: String::new(),
            logprobs: Vec::new(),
            stop_reason: StopReason::Length,
            ttft_ms: 0.0,
            prefill_tok_s: 0.0,
            decode_tok_s: 0.0,
        },
    };
    Ok((sampler, emit))
}

/// Turns sampled ids into text, events and the [`Generation`], and decides when to stop:
/// the plain loop and speculative decoding share it, so both stop on exactly the same
/// conditions.
pub(crate) struct Emitter<'t> {
    tokenizer: &'t Tokenizer,
    decoder: StreamDecoder<'t>,
    max_tokens: usize,
    ignore_eos: bool,
    logprobs: usize,
    start: Instant,
    first_token_at: Option<Instant>,
    out: Generation,
}

impl Emitter<'_> {
    /// The prompt has run: its prefill rate is known.
    pub(crate) fn prefilled(&mut self) {
        let prefill_s = self.start.elapsed().as_secs_f64();
        self.out.prefill_tok_s = self.out.prompt_tokens as f64 / prefill_s.max(1e-9);
    }

    /// Whether another token may be generated (`max_tokens` not reached).
    pub(crate) fn wants_more(&self) -> bool {
        self.out.tokens.len() < self.max_tokens
    }

    /// Tokens generated so far.
    pub(crate) fn generated(&self) -> usize {
        self.out.tokens.len()
    }

    pub(crate) fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Records `id`, drawn from the distribution of `logits` (None: the runner chose it
    /// greedily and no log-probabilities were asked for), and reports it. True when the
    /// generation ends with it (end of generation, the callback, `max_tokens`).
    pub(crate) fn push(
        &mut self,
        id: u32,
        logits: Option<&[f32]>,
        on_token: &mut impl FnMut(TokenEvent<'_>) -> bool,
    ) -> bool {
        let top = logits
            .filter(|_| self.logprobs > 0)
            .map(|logits| top_logprobs(logits, self.logprobs));
        self.first_token_at.get_or_insert_with(Instant::now);
        self.out.tokens.push(id);
        let eog = self.tokenizer.is_eog(id) && !self.ignore_eos;
        let text = if eog {
            String::new()
        } else {
            self.decoder.push(id)
        };
        self.out.text.push_str(&text);
        let keep_going = on_token(TokenEvent {
            id,
            text: &text,
            logprobs: top.as_deref(),
            tail: false,
        });
        if let Some(top) = top {
            self.out.logprobs.push(top);
        }
        if eog {
            self.out.stop_reason = StopReason::EndOfGeneration;
            return true;
        }
        if !keep_going {
            self.out.stop_reason = StopReason::Cancelled;
            return true;
        }
        self.out.tokens.len() == self.max_tokens
    }

    pub(crate) fn stop(&mut self, reason: StopReason) {
        self.out.stop_reason = reason;
    }

    /// Flushes the text the decoder still holds and computes the timings.
    pub(crate) fn finish(
        mut self,
        on_token: &mut impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Generation {
        let tail = self.decoder.finish();
        if !tail.is_empty() {
            self.out.text.push_str(&tail);
            on_token(TokenEvent {
                id: *self.out.tokens.last().unwrap_or(&0),
                text: &tail,
                logprobs: None,
                tail: true,
            });
        }
        if let Some(first) = self.first_token_at {
            self.out.ttft_ms = first.duration_since(self.start).as_secs_f64() * 1e3;
            let decode_s = first.elapsed().as_secs_f64();
            if self.out.tokens.len() > 1 {
                self.out.decode_tok_s = (self.out.tokens.len() - 1) as f64 / decode_s.max(1e-9);
            }
        }
        self.out
    }
}
