//! Speculative decoding: guess several tokens cheaply, verify them all in one step of the
//! target model, keep what the target would have produced anyway.
//!
//! ```text
//!  text so far ──► Drafter::draft ──► g₁ … g_k          (prompt lookup, or a draft model)
//!  [last, g₁ … g_k] ──► target: ONE step, k + 1 rows of logits
//!  verify::verify ──► kept g₁ … g_a, then the next token from row a
//!  Runner::truncate ──► the rejected guesses leave the KV cache (KvManager::rollback)
//! ```
//!
//! Exactness: at temperature 0 the tokens are those of plain greedy decoding (a guess is
//! kept only when it is the row's argmax, and a step's rows are the logits the target
//! computes one token at a time); with sampling each token has the target's distribution
//! ([`verify`]). How many guesses to ask for follows the recent keep rate ([`adapt`]).
//! The serving scheduler (kiln-serve) runs the same guessers and the same verification
//! inside its batched steps.

pub mod adapt;
pub mod draft;
pub mod lookup;
pub mod verify;

use std::time::Instant;

use crate::Error;
use crate::driver::{self, GenerateRequest, Generation, StopReason, TokenEvent};
use crate::runner::{LogitsFor, Runner};
use crate::sampler::{Distribution, SamplerConfig};
use kiln_tokenizer::Tokenizer;

pub use adapt::GuessLength;
pub use draft::{DraftModel, check_vocabulary, draft_pick, draft_sampler};
pub use lookup::PromptLookup;
pub use verify::{Rule, Standard, Verdict, verify};

/// Guesses for the tokens after a text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Draft {
    pub tokens: Vec<u32>,
    /// The draft distribution each guess was drawn from; None for one-hot guesses.
    pub q: Option<Vec<Distribution>>,
}

impl Draft {
    /// Guesses with all their draft probability on themselves.
    pub fn one_hot(tokens: Vec<u32>) -> Draft {
        Draft { tokens, q: None }
    }
}

/// Something that guesses the next tokens of a text.
pub trait Drafter {
    /// `lookup` or `draft`, as reports name the method.
    fn kind(&self) -> &'static str;
    /// A generation with these sampling settings begins.
    fn start(&mut self, _sampling: &SamplerConfig) -> Result<(), Error> {
        Ok(())
    }
    /// Up to `k` guesses of the tokens after `context` (the prompt and every token
    /// generated so far).
    fn draft(&mut self, context: &[u32], k: usize) -> Result<Draft, Error>;
}

/// How speculative generation runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpecConfig {
    /// Guesses per verification step at most (the K of `--draft-n K`).
    pub k_max: usize,
    /// Adapt the number of guesses to the keep rate and to what steps cost
    /// ([`adapt`]); false: always `k_max`.
    pub adaptive: bool,
    /// Where step costs are unknown: ask for another guess while its estimated keep
    /// probability stays above this.
    pub min_keep_probability: f64,
}

impl SpecConfig {
    /// Default guesses at most of each method: prompt lookup's guesses cost nothing to
    /// make, a draft model's cost a draft step each.
    pub const LOOKUP_K_MAX: usize = 16;
    pub const DRAFT_K_MAX: usize = 4;

    pub fn new(k_max: usize) -> SpecConfig {
        SpecConfig {
            k_max,
            adaptive: true,
            min_keep_probability: 0.3,
        }
    }

    /// Logits rows a verification step needs from the target's plan.
    pub fn step_outputs(&self) -> usize {
        self.k_max + 1
    }
}

/// What speculation did in one generation (or, summed, in many).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpecStats {
    /// Decoding steps of the target after the first token (each verifies 0 or more guesses).
    pub steps: u64,
    /// Steps that carried at least one guess.
    pub verify_steps: u64,
    pub drafted: u64,
    pub accepted: u64,
    /// Tokens the decoding steps produced (kept guesses and one more each).
    pub tokens: u64,
    pub draft_seconds: f64,
    pub verify_seconds: f64,
}

impl SpecStats {
    /// Kept guesses over guesses made (0 before any).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens per decoding step of the target (1 without speculation).
    pub fn tokens_per_step(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.tokens as f64 / self.steps as f64
        }
    }

    /// One step that verified `drafted` guesses, kept `accepted` and produced `tokens`
    /// (`accepted + 1`, fewer when the generation ended inside the step).
    pub fn record(&mut self, drafted: usize, accepted: usize, tokens: usize) {
        self.steps += 1;
        self.verify_steps += u64::from(drafted > 0);
        self.drafted += drafted as u64;
        self.accepted += accepted as u64;
        self.tokens += tokens as u64;
    }

    pub fn add(&mut self, other: &SpecStats) {
        self.steps += other.steps;
        self.verify_steps += other.verify_steps;
        self.drafted += other.drafted;
        self.accepted += other.accepted;
        self.tokens += other.tokens;
        self.draft_seconds += other.draft_seconds;
        self.verify_seconds += other.verify_seconds;
    }
}

/// [`driver::generate`] with guesses from `drafter` verified in single steps of `runner`
/// (whose plan must take `config.step_outputs()` logits rows, or verification is cut into
/// several steps). The same tokens, events and stop reasons as the plain loop at
/// temperature 0; the same distribution when sampling.
pub fn generate(
    runner: &mut dyn Runner,
    drafter: &mut dyn Drafter,
    config: &SpecConfig,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<(Generation, SpecStats), Error> {
    generate_with_rule(runner, drafter, config, &Standard, tokenizer, req, on_token)
}

/// [`generate`] with another acceptance rule (the distribution test's broken rules).
pub fn generate_with_rule(
    runner: &mut dyn Runner,
    drafter: &mut dyn Drafter,
    config: &SpecConfig,
    rule: &dyn Rule,
    tokenizer: &Tokenizer,
    req: &GenerateRequest,
    mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<(Generation, SpecStats), Error> {
    drafter.start(&req.sampler)?;
    runner.reset();
    let (mut sampler, mut emit) = driver::check(runner, tokenizer, req)?;
    let logits = runner.forward(&req.prompt_ids, LogitsFor::Last)?;
    emit.prefilled();
    let mut stats = SpecStats::default();
    let mut length = GuessLength::new(config.k_max, config.adaptive, config.min_keep_probability);
    let vocab = logits.len();
    if !emit.wants_more() {
        return Ok((emit.finish(&mut on_token), stats));
    }
    // The first token comes from the prompt's last row, as in plain decoding.
    let mut next = sampler.sample(&logits)?;
    let mut context = req.prompt_ids.clone();
    let mut done = emit.push(next, Some(&logits), &mut on_token);
    while !done {
        if runner.position() >= runner.n_ctx() {
            emit.stop(StopReason::ContextFull);
            break;
        }
        context.push(next);
        // Never guess past max_tokens or the context: every kept guess is emitted.
        let room =
            (runner.n_ctx() - runner.position() - 1).min(emit.max_tokens() - emit.generated() - 1);
        let k = length.next().min(room);
        let drafted_at = Instant::now();
        let mut draft = if k > 0 {
            drafter.draft(&context, k)?
        } else {
            Draft::default()
        };
        draft.tokens.truncate(k);
        let verify_at = Instant::now();
        stats.draft_seconds += (verify_at - drafted_at).as_secs_f64();

        let position = runner.position();
        let mut feed = Vec::with_capacity(1 + draft.tokens.len());
        feed.push(next);
        feed.extend_from_slice(&draft.tokens);
        let rows = runner.forward(&feed, LogitsFor::From(0))?;
        let verdict = verify(
            &mut sampler,
            rule,
            &rows,
            vocab,
            &draft.tokens,
            draft.q.as_deref(),
        );
        // Back into the step just appended: a runner always resumes there (even a window
        // layer still holds those pages).
        let kept = position + 1 + verdict.accepted;
        runner.truncate(kept);
        if runner.position() != kept {
            return Err(Error::Invalid(format!(
                "the runner could not keep {kept} tokens after verification"
            )));
        }
        let verify_s = verify_at.elapsed().as_secs_f64();
        let draft_s = (verify_at - drafted_at).as_secs_f64();
        stats.verify_seconds += verify_s;
        length.update(draft.tokens.len(), verdict.accepted);
        length.observe(feed.len(), verify_s, draft.tokens.len(), draft_s);

        let row = |i: usize| &rows[i * vocab..(i + 1) * vocab];
        let before = emit.generated();
        for (i, &guess) in draft.tokens[..verdict.accepted].iter().enumerate() {
            context.push(guess);
            if emit.push(guess, Some(row(i)), &mut on_token) {
                done = true;
                break;
            }
        }
        if !done {
            next = verdict.next;
            done = emit.push(next, Some(row(verdict.accepted)), &mut on_token);
        }
        stats.record(
            draft.tokens.len(),
            verdict.accepted,
            emit.generated() - before,
        );
    }
    Ok((emit.finish(&mut on_token), stats))
}

#[cfg(test)]
mod tests;
