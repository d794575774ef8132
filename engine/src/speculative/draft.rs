//! A draft model: a smaller model (any GGUF with the same vocabulary, on any runner)
//! guesses by decoding ahead of the target.
//!
//! The draft keeps its own context in step with the text: before guessing it keeps the
//! longest common prefix of what it holds and the text (its runner truncated there, the
//! rejected guesses gone) and runs the rest, usually the last verified token or two.
//! Greedy generation drafts greedily (one-hot guesses); sampled generation draws each
//! guess from the draft's own distribution q under the same sampling settings, and hands
//! q to verification.

use super::{Draft, Drafter};
use crate::Error;
use crate::model::Model;
use crate::runner::{LogitsFor, Runner};
use crate::sampler::{Distribution, Sampler, SamplerConfig, argmax};
use kiln_tokenizer::Tokenizer;

/// Added to the request's seed for the draft's own generator, so its draws are not the
/// verifier's.
const DRAFT_SEED_OFFSET: u64 = 0xd7af_7000_0000_0001;

/// The draft-model guesser.
pub struct DraftModel<'m> {
    runner: Box<dyn Runner + 'm>,
    /// The tokens whose keys and values the draft runner holds, position 0 first.
    held: Vec<u32>,
    /// Tokens of the last context drafted after (all held): within a generation the
    /// context only grows, so only what follows them is compared with `held`, and a
    /// step's host work does not grow with the context.
    synced: usize,
    /// None: greedy drafting.
    sampler: Option<Sampler>,
}

impl std::fmt::Debug for DraftModel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel")
            .field("runner", &self.runner.name())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

/// Checks that `draft` can guess for `target`: the same vocabulary, token for token.
pub fn check_vocabulary(target: &Model, draft: &Model) -> Result<(), Error> {
    if target.config.vocab_size != draft.config.vocab_size {
        return Err(vocabulary_sizes(
            target.config.vocab_size,
            draft.config.vocab_size,
        ));
    }
    check_tokenizers(&target.tokenizer, &draft.tokenizer)
}

fn vocabulary_sizes(target: usize, draft: usize) -> Error {
    Error::Invalid(format!(
        "the draft model's vocabulary has {draft} tokens, the target's {target}: a draft must share the target's vocabulary"
    ))
}

/// The tokenizers' vocabularies are the same, token for token.
fn check_tokenizers(target: &Tokenizer, draft: &Tokenizer) -> Result<(), Error> {
    if target.vocab_size() != draft.vocab_size() {
        return Err(vocabulary_sizes(target.vocab_size(), draft.vocab_size()));
    }
    match (0..target.vocab_size() as u32).find(|&id| target.token_text(id) != draft.token_text(id))
    {
        None => Ok(()),
        Some(id) => Err(Error::Invalid(format!(
            "the draft model's token {id} is {:?}, the target's {:?}: a draft must share the target's vocabulary",
            draft.token_text(id),
            target.token_text(id)
        ))),
    }
}

/// The draft's own generator for sampled drafting (None at temperature 0: greedy drafts),
/// seeded from the request's seed but not equal to the verifier's.
pub fn draft_sampler(sampling: &SamplerConfig) -> Result<Option<Sampler>, Error> {
    if sampling.temperature <= 0.0 {
        return Ok(None);
    }
    Ok(Some(Sampler::new(SamplerConfig {
        seed: sampling.seed.wrapping_add(DRAFT_SEED_OFFSET),
        ..sampling.clone()
    })?))
}

/// The guess a draft makes from one row of its logits, and the distribution it was drawn
/// from (None for a greedy draft).
pub fn draft_pick(sampler: Option<&mut Sampler>, logits: &[f32]) -> (u32, Option<Distribution>) {
    match sampler {
        None => (argmax(logits), None),
        Some(sampler) => {
            let q = sampler.distribution(logits);
            (sampler.draw(&q), Some(q))
        }
    }
}

impl<'m> DraftModel<'m> {
    /// A drafter running on `runner` (a model with the target's vocabulary: see
    /// [`check_vocabulary`]).
    pub fn new(runner: Box<dyn Runner + 'm>) -> DraftModel<'m> {
        DraftModel {
            runner,
            held: Vec::new(),
            synced: 0,
            sampler: None,
        }
    }

    /// The runner the draft runs on.
    pub fn runner(&self) -> &dyn Runner {
        self.runner.as_ref()
    }
}

impl Drafter for DraftModel<'_> {
    fn kind(&self) -> &'static str {
        "draft"
    }

    fn start(&mut self, sampling: &SamplerConfig) -> Result<(), Error> {
        self.runner.reset();
        self.held.clear();
        self.synced = 0;
        self.sampler = draft_sampler(sampling)?;
        Ok(())
    }

    fn draft(&mut self, context: &[u32], k: usize) -> Result<Draft, Error> {
        let n_ctx = self.runner.n_ctx();
        // Room for the context and k - 1 guesses fed back (the last is never run).
        let k = k.min((n_ctx + 1).saturating_sub(context.len()));
        if k == 0 || context.is_empty() {
            return Ok(Draft::default());
        }
        // At least the last token runs, for the logits of the first guess.
        let synced = self.synced.min(context.len()).min(self.held.len());
        let keep = (synced
            + self.held[synced..]
                .iter()
                .zip(&context[synced..])
                .take_while(|(a, b)| a == b)
                .count())
        .min(context.len() - 1);
        self.runner.truncate(keep);
        // A runner that cannot resume at `keep` (a window layer gave its pages back)
        // starts over: it holds what its position says.
        let keep = self.runner.position();
        self.held.truncate(keep);
        let mut logits = self.runner.forward(&context[keep..], LogitsFor::Last)?;
        self.held.extend_from_slice(&context[keep..]);
        self.synced = context.len();
        let mut draft = Draft::default();
        let mut q = Vec::with_capacity(k);
        for i in 0..k {
            let (guess, dist) = draft_pick(self.sampler.as_mut(), &logits);
            draft.tokens.push(guess);
            q.extend(dist);
            if i + 1 == k {
                break;
            }
            logits = self.runner.forward(&[guess], LogitsFor::Last)?;
            self.held.push(guess);
        }
        if self.sampler.is_some() {
            draft.q = Some(q);
        }
        Ok(draft)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{tokenizer, tokenizer_of};
    use super::*;

    #[test]
    fn a_draft_must_share_the_vocabulary() {
        let target = tokenizer();
        assert!(check_tokenizers(&target, &tokenizer()).is_ok());
        let other = tokenizer_of(&["a", "b", "x", "d", "e", "<eos>"]);
        let e = check_tokenizers(&target, &other).unwrap_err().to_string();
        assert!(e.contains("token 2 is \"x\""), "{e}");
        let shorter = tokenizer_of(&["a", "b", "c", "d", "<eos>"]);
        let e = check_tokenizers(&target, &shorter).unwrap_err().to_string();
        assert!(e.contains("5 tokens, the target's 6"), "{e}");
    }
}
