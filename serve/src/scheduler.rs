//! Iteration-level continuous batching over one compiled model.
//!
//! Every [`Scheduler::step`] builds one batch: each running sequence that is decoding
//! brings its one new token, sequences still prefilling bring a chunk of their prompt, and
//! waiting requests are admitted, oldest first, while the step's token budget, the
//! sequence limit and the free KV pages allow. One [`Compiled::step`] runs the batch; the
//! rows of logits are sampled, detokenized and sent to each request's channel.
//!
//! - Admission counts pages: a request is admitted when the pages it needs (its whole
//!   prompt, less the prefix-cache pages other sequences already hold), plus the pages
//!   promised to sequences still prefilling, plus a small reserve, are free or evictable.
//!   While a long prompt prefills, short requests at the front of the queue still get in
//!   at once: up to half of a step's prefill budget is kept for whole prompts that fit in
//!   it ([`admit`]).
//! - When decoding sequences need more pages than there are, the newest running sequence is
//!   preempted: its pages are freed (full ones stay in the prefix cache) and it goes back to
//!   the front of the queue to recompute its prompt and what it generated so far. A
//!   sequence alone that can no longer grow ends with `length`. Nothing panics.
//! - A sequence whose client went away (its channel is closed) is dropped before the step.
//! - Greedy output does not depend on the batch: every backend computes each token of a
//!   step as it would alone (the CPU backend's tests check it), and a preempted sequence
//!   keeps its sampler state.
//! - Speculative decoding ([`speculate`]): a decoding sequence may bring guesses after its
//!   token (prompt lookup, or the server's draft model), verified in the same step as
//!   every other sequence's tokens; guesses take only the tokens, logits rows and pages
//!   left once every sequence has its one token, and rejected ones leave the KV cache.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

mod admit;
mod speculate;

use speculate::{SeqSpec, Speculator};

use super::api::ApiError;
use super::metrics::Metrics;
use super::response::{PromptDetails, Usage};
use super::stop::StopMatcher;
use super::{Event, FinishReason, Request, TokenLogprob};
use kiln_engine::Error;
use kiln_engine::compiled::{BatchEntry, Compiled};
use kiln_engine::runner::Runner;
use kiln_engine::sampler::{Sampler, log_softmax, top_logprobs};
use kiln_ir::step::Candidate;
use kiln_kv::{KvError, KvStats, SeqId};
use kiln_structured::Constraint;
use kiln_tokenizer::{StreamDecoder, Tokenizer};

/// How the scheduler fills a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences in the batch at most (the plan must take this many logits rows).
    pub max_seqs: usize,
    /// Tokens in one step at most (the plan must take this many tokens).
    pub step_tokens: usize,
    /// Guesses per speculating sequence and step at most (0: no speculation). The plan's
    /// logits rows beyond one per sequence bound the guesses of a step.
    pub spec_k_max: usize,
}

/// What one step did (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Tokens run through the model.
    pub tokens: usize,
    /// Sequences in the batch.
    pub sequences: usize,
    /// Tokens sampled.
    pub sampled: usize,
    pub preempted: usize,
    pub finished: usize,
    /// Sequences that brought guesses, and the guesses verified.
    pub speculating: usize,
    pub guessed: usize,
}

/// A request and where it stands.
#[derive(Debug)]
struct Sequence<'m> {
    req: Request,
    /// The prompt, then every generated token.
    tokens: Vec<u32>,
    /// Its KV sequence while admitted.
    kv: Option<SeqId>,
    /// Tokens of `tokens` whose K/V are in the cache.
    computed: usize,
    sampler: Sampler,
    decoder: StreamDecoder<'m>,
    stop: StopMatcher,
    /// Prompt tokens the prefix cache served at the first admission.
    cached_tokens: Option<usize>,
    last_token_at: Option<Instant>,
    /// A stop sequence ended it: text after the stop is never sent.
    stopped: bool,
    /// Its speculative decoding, if it speculates.
    spec: Option<SeqSpec>,
}

impl Sequence<'_> {
    fn generated(&self) -> usize {
        self.tokens.len() - self.req.prompt.len()
    }

    /// Tokens to run before the next sample.
    fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    fn send(&self, event: Event) {
        // A closed channel means the client left; the next step drops the sequence.
        let _ = self.req.events.send(event);
    }

    /// Send the text still held back (none after a stop sequence) and `Done`.
    fn finish(&mut self, finish: FinishReason) {
        if !self.stopped {
            let tail = self.decoder.finish();
            let (mut text, _) = self.stop.push(&tail);
            text.push_str(&self.stop.flush());
            if !text.is_empty() {
                self.send(Event::Text(text));
            }
        }
        self.send(Event::Done {
            finish,
            usage: self.usage(),
        });
    }

    fn usage(&self) -> Usage {
        let prompt_tokens = self.req.prompt.len();
        let completion_tokens = self.generated();
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: self.cached_tokens.unwrap_or(0),
            },
        }
    }
}

/// What a step hands back for its output rows.
enum Rows {
    /// (outputs, vocab) logits.
    Logits(Vec<f32>),
    /// (outputs, k) of each row's most likely tokens (`Compiled::step_top_k`).
    Top(usize, Vec<Candidate>),
}

/// One sequence's part of the step being planned.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    /// Index into `running`.
    seq: usize,
    len: usize,
    /// Guesses verified after a decoding sequence's token.
    guesses: usize,
}

/// Continuous batching over one [`Compiled`] model; see the module documentation.
#[derive(Debug)]
pub struct Scheduler<'m> {
    compiled: Compiled<'m>,
    tokenizer: &'m Tokenizer,
    config: SchedulerConfig,
    n_ctx: usize,
    /// Pages kept free at admission, for running sequences to grow into.
    reserve_pages: usize,
    waiting: VecDeque<Sequence<'m>>,
    /// Oldest admission first; the last one is preempted first.
    running: Vec<Sequence<'m>>,
    metrics: Arc<Metrics>,
    spec: Speculator<'m>,
}

impl<'m> Scheduler<'m> {
    /// `compiled` must take steps of `config.step_tokens` tokens and `config.max_seqs`
    /// logits rows (see [`super::engine::compile_options`]).
    pub fn new(
        compiled: Compiled<'m>,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Scheduler<'m>, Error> {
        let plan = compiled.plan();
        // A memory budget may have compiled smaller steps than asked for.
        let config = SchedulerConfig {
            step_tokens: config.step_tokens.min(plan.max_tokens),
            ..config
        };
        if config.max_seqs == 0
            || config.step_tokens < config.max_seqs
            || plan.max_outputs < config.max_seqs
        {
            return Err(Error::Invalid(format!(
                "a scheduler of {} sequences needs steps of at least one token and one logits row per sequence (the plan takes {} tokens and {} rows)",
                config.max_seqs, plan.max_tokens, plan.max_outputs
            )));
        }
        let tokenizer = &compiled.model().tokenizer;
        let n_ctx = compiled.n_ctx();
        let mut s = Scheduler {
            compiled,
            tokenizer,
            config,
            n_ctx,
            reserve_pages: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            metrics,
            spec: Speculator::new(None, config.spec_k_max),
        };
        // vLLM's watermark: 1% of the pool, at least one page.
        s.reserve_pages = s.kv_stats().kv_page_count.div_ceil(100).max(1);
        s.publish();
        Ok(s)
    }

    /// Speculate with `draft` (a model with the target's vocabulary, compiled for steps of
    /// `config.step_tokens` tokens and `config.max_seqs` rows) for every request that asks
    /// for no prompt lookup.
    pub fn with_draft(mut self, draft: Compiled<'m>) -> Scheduler<'m> {
        self.spec = Speculator::new(Some(draft), self.config.spec_k_max);
        self
    }

    /// Tokens one sequence can hold at most: the context, or what admission lets the pool
    /// give one sequence, whichever is smaller.
    pub fn max_sequence_tokens(&mut self) -> usize {
        let pages = self
            .kv_stats()
            .kv_page_count
            .saturating_sub(self.reserve_pages);
        // Admission counts every KV group's pages in full (`pages_for_tokens`).
        let groups = self.compiled.kv().n_groups();
        (pages / groups * self.page_size()).min(self.n_ctx)
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn backend_name(&self) -> &'static str {
        self.compiled.name()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The draft model's KV cache, when the server has one.
    pub fn draft_kv_stats(&mut self) -> Option<KvStats> {
        self.spec.draft_kv_stats()
    }

    pub fn kv_stats(&mut self) -> KvStats {
        self.compiled.kv().stats()
    }

    pub fn n_running(&self) -> usize {
        self.running.len()
    }

    /// Free the newest running sequence's pages behind the scheduler's back, so that its
    /// own free of them fails (what a test of that failure needs).
    #[cfg(test)]
    pub(crate) fn free_newest_behind_its_back(&mut self) -> Result<(), Error> {
        let seq = self.running.last().and_then(|s| s.kv);
        let seq = seq.ok_or_else(|| Error::Invalid("no running sequence with pages".into()))?;
        Ok(self.compiled.kv().free(seq)?)
    }

    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Queue a request. One that can never run gets its error event at once.
    pub fn submit(&mut self, req: Request) {
        let sampler = match Sampler::new(req.sampler.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = req
                    .events
                    .send(Event::Failed(ApiError::invalid(None, e.to_string())));
                return;
            }
        };
        let spec = match SeqSpec::for_request(&req, self.spec.has_draft(), self.spec.k_max) {
            Ok(spec) => spec,
            Err(e) => {
                let _ = req.events.send(Event::Failed(ApiError::invalid(
                    Some("lookup"),
                    e.to_string(),
                )));
                return;
            }
        };
        let limit = self.max_sequence_tokens();
        if req.prompt.is_empty() || req.prompt.len() > limit {
            let message = format!(
                "the prompt has {} tokens; a sequence holds 1 to {limit}",
                req.prompt.len()
            );
            let error =
                ApiError::invalid(Some("prompt"), message).with_code("context_length_exceeded");
            let _ = req.events.send(Event::Failed(error));
            return;
        }
        self.waiting.push_back(Sequence {
            tokens: req.prompt.clone(),
            kv: None,
            computed: 0,
            sampler,
            decoder: StreamDecoder::new(self.tokenizer),
            stop: StopMatcher::new(req.stop.clone()),
            cached_tokens: None,
            last_token_at: None,
            stopped: false,
            spec,
            req,
        });
    }

    /// Run one batched step; Ok with an empty outcome when there was nothing to run.
    /// A failing backend fails the requests of that step (500) and returns the error.
    pub fn step(&mut self) -> Result<StepOutcome, Error> {
        let mut outcome = StepOutcome::default();
        self.drop_cancelled()?;
        self.spec
            .guess(&mut self.running, self.n_ctx, &self.metrics);
        let chunks = loop {
            match self.plan_running()? {
                Some(chunks) => break chunks,
                None => {
                    self.preempt_newest()?;
                    outcome.preempted += 1;
                }
            }
        };
        let chunks = self.admit(chunks)?;
        if chunks.is_empty() {
            self.publish();
            return Ok(outcome);
        }

        // A speculating sequence's token and guesses, one slice for its entry.
        let feeds: Vec<Vec<u32>> = chunks
            .iter()
            .filter(|c| c.guesses > 0)
            .map(|c| {
                let s = &self.running[c.seq];
                let mut feed = vec![s.tokens[s.computed]];
                feed.extend(s.spec.iter().flat_map(|p| &p.guesses.tokens));
                feed
            })
            .collect();
        let mut feeds_iter = feeds.iter();
        let entries: Vec<BatchEntry> = chunks
            .iter()
            .filter_map(|c| {
                let s = &self.running[c.seq];
                if c.guesses > 0 {
                    return Some(BatchEntry {
                        seq: s.kv?,
                        tokens: feeds_iter.next()?,
                        logits_from: Some(0),
                    });
                }
                let tokens = &s.tokens[s.computed..s.computed + c.len];
                let last = s.computed + c.len == s.tokens.len();
                Some(BatchEntry {
                    seq: s.kv?,
                    tokens,
                    logits_from: last.then_some(c.len - 1),
                })
            })
            .collect();
        outcome.tokens = entries.iter().map(|e| e.tokens.len()).sum();
        outcome.sequences = entries.len();
        outcome.speculating = chunks.iter().filter(|c| c.guesses > 0).count();
        outcome.guessed = chunks.iter().map(|c| c.guesses).sum();
        // Rows whose samplers need only their top k (greedy, a top-k filter; no grammar,
        // no log-probabilities, no guesses to verify) ask the backend for the top k of the
        // largest such k, chosen on the device where it can: k candidates a row come back
        // instead of the vocabulary's logits.
        let vocab = self.compiled.model().config.vocab_size;
        let top_k = chunks
            .iter()
            .filter(|c| {
                let s = &self.running[c.seq];
                s.computed + c.len == s.tokens.len()
            })
            .map(|c| {
                let s = &self.running[c.seq];
                let k = s.sampler.candidates(vocab);
                let only_top = c.guesses == 0
                    && s.req.constraint.is_none()
                    && s.req.logprobs.is_none()
                    && k < vocab;
                only_top.then_some(k)
            })
            .try_fold(0, |max, k| k.map(|k| max.max(k)))
            .filter(|&k| k > 0);
        let result = match top_k {
            Some(k) => self
                .compiled
                .step_top_k(&entries, k)
                .map(|c| Rows::Top(k, c)),
            None => self.compiled.step(&entries).map(Rows::Logits),
        };
        drop(entries);
        Metrics::add(&self.metrics.steps, 1);
        let rows = match result {
            Ok(rows) => rows,
            Err(Error::Kv(KvError::OutOfPages { .. })) => {
                // Planning counts pages, so this is not expected; recover all the same.
                self.preempt_newest()?;
                outcome.preempted += 1;
                self.publish();
                return Ok(outcome);
            }
            Err(e) => {
                Metrics::add(&self.metrics.step_errors, 1);
                let failed: Vec<usize> = chunks.iter().map(|c| c.seq).collect();
                for &i in &failed {
                    self.running[i].send(Event::Failed(ApiError::internal(e.to_string())));
                }
                self.retire(|i, _| failed.contains(&i))?;
                self.publish();
                return Err(e);
            }
        };

        let mut row = 0;
        let mut finished = vec![false; self.running.len()];
        for c in &chunks {
            let s = &mut self.running[c.seq];
            s.computed += c.len;
            if s.computed < s.tokens.len() {
                continue; // a prefill chunk that is not the last: no logits
            }
            // The sampled token, and the row's logits where the step read them back (the
            // log-probabilities need them; a top-k step serves no row that asks for them).
            let (sampled, logits) = match &rows {
                Rows::Top(k, cand) => {
                    let cand = &cand[row * k..(row + 1) * k];
                    row += 1;
                    (
                        s.sampler.sample_candidates(cand).map_err(|e| e.to_string()),
                        None,
                    )
                }
                Rows::Logits(all) if c.guesses > 0 => {
                    let rows = &all[row * vocab..(row + 1 + c.guesses) * vocab];
                    row += 1 + c.guesses;
                    let finish = self.accept_verified(c.seq, rows, vocab, &mut outcome)?;
                    if let Some(finish) = finish {
                        self.finish(c.seq, finish);
                        finished[c.seq] = true;
                        outcome.finished += 1;
                    }
                    continue;
                }
                Rows::Logits(all) => {
                    let logits = &all[row * vocab..(row + 1) * vocab];
                    row += 1;
                    let sampled = match &mut s.req.constraint {
                        None => s.sampler.sample(logits).map_err(|e| e.to_string()),
                        Some(constraint) => sample_constrained(&mut s.sampler, constraint, logits),
                    };
                    (sampled, Some(logits))
                }
            };
            let id = match sampled {
                Ok(id) => id,
                Err(e) => {
                    // NaN logits (or a grammar that allows nothing): this request fails,
                    // the others go on.
                    s.send(Event::Failed(ApiError::internal(e)));
                    finished[c.seq] = true;
                    continue;
                }
            };
            outcome.sampled += 1;
            // The end-of-generation token is not part of the answer's logprobs.
            let eog = self.tokenizer.is_eog(id) && !s.req.ignore_eos;
            if let (Some(k), Some(logits)) = (s.req.logprobs.filter(|_| !eog), logits) {
                s.send(Event::Logprob(token_logprob(self.tokenizer, logits, id, k)));
            }
            if let Some(finish) = self.accept(c.seq, id) {
                self.finish(c.seq, finish);
                finished[c.seq] = true;
                outcome.finished += 1;
            }
        }
        self.retire(|i, _| finished[i])?;
        self.publish();
        Ok(outcome)
    }

    /// End every open request: running ones finish with `reason` (their streams close
    /// normally), waiting ones fail with `error`.
    pub fn end_all(&mut self, reason: FinishReason, error: &ApiError) -> Result<(), Error> {
        for s in self.waiting.drain(..) {
            s.send(Event::Failed(error.clone()));
        }
        for i in 0..self.running.len() {
            self.finish(i, reason);
        }
        self.retire(|_, _| true)?;
        self.publish();
        Ok(())
    }

    /// Waiting requests fail with `error` (shutdown); running ones go on.
    pub fn reject_waiting(&mut self, error: &ApiError) {
        for s in self.waiting.drain(..) {
            s.send(Event::Failed(error.clone()));
        }
        self.publish();
    }

    /// Take the sampled token `id` for running sequence `i`; Some when it ends there.
    fn accept(&mut self, i: usize, id: u32) -> Option<FinishReason> {
        let s = &mut self.running[i];
        let now = Instant::now();
        match s.last_token_at {
            None => self
                .metrics
                .time_to_first_token
                .observe(now - s.req.arrived),
            Some(last) => self.metrics.inter_token_latency.observe(now - last),
        }
        s.last_token_at = Some(now);
        Metrics::add(&self.metrics.generation_tokens, 1);
        s.tokens.push(id);
        // The grammar complete: nothing else may follow, the answer ends here.
        let complete = s.req.constraint.as_ref().is_some_and(|c| c.is_finished());
        let eog = self.tokenizer.is_eog(id) && !s.req.ignore_eos;
        let piece = if eog {
            String::new()
        } else {
            s.decoder.push(id)
        };
        let (text, stopped) = s.stop.push(&piece);
        if !text.is_empty() {
            s.send(Event::Text(text));
        }
        if stopped {
            s.stopped = true;
        }
        if eog || stopped || complete {
            return Some(FinishReason::Stop);
        }
        (s.generated() >= s.req.max_tokens || s.computed >= self.n_ctx)
            .then_some(FinishReason::Length)
    }

    /// Send running sequence `i` its last text and `Done`; the caller retires it.
    fn finish(&mut self, i: usize, finish: FinishReason) {
        self.running[i].finish(finish);
    }

    /// Remove the running sequences `pick` selects, freeing their pages.
    fn retire(&mut self, pick: impl Fn(usize, &Sequence<'m>) -> bool) -> Result<(), Error> {
        let mut kept = Vec::with_capacity(self.running.len());
        let mut first_error = None;
        for (i, mut s) in std::mem::take(&mut self.running).into_iter().enumerate() {
            if !pick(i, &s) {
                kept.push(s);
                continue;
            }
            if let Some(spec) = &mut s.spec {
                self.spec.forget(spec);
            }
            // Every picked sequence goes, and every other stays, whatever a free says: an
            // error here once dropped the whole batch, each stream ending without a word.
            if let Some(seq) = s.kv
                && let Err(e) = self.compiled.kv().free(seq)
            {
                s.send(Event::Failed(ApiError::internal(format!(
                    "freeing the request's KV pages: {e}"
                ))));
                first_error.get_or_insert(Error::from(e));
            }
        }
        self.running = kept;
        first_error.map_or(Ok(()), Err)
    }

    /// Drop sequences whose client went away.
    fn drop_cancelled(&mut self) -> Result<(), Error> {
        let before = self.waiting.len() + self.running.len();
        self.waiting.retain(|s| !s.req.events.is_closed());
        self.retire(|_, s| s.req.events.is_closed())?;
        let dropped = before - self.waiting.len() - self.running.len();
        Metrics::add(&self.metrics.cancellations, dropped as u64);
        Ok(())
    }

    /// Free the newest running sequence's pages and queue it first, to recompute later;
    /// a sequence alone that cannot grow ends with `length` instead.
    fn preempt_newest(&mut self) -> Result<(), Error> {
        let Some(mut s) = self.running.pop() else {
            return Ok(());
        };
        if let Some(spec) = &mut s.spec {
            self.spec.forget(spec);
        }
        if let Some(seq) = s.kv.take()
            && let Err(e) = self.compiled.kv().free(seq)
        {
            let why = format!("freeing the request's KV pages: {e}");
            s.send(Event::Failed(ApiError::internal(why)));
            return Err(e.into());
        }
        if self.running.is_empty() {
            self.running.push(s);
            let last = self.running.len() - 1;
            self.finish(last, FinishReason::Length);
            self.running.clear();
            return Ok(());
        }
        s.computed = 0;
        Metrics::add(&self.metrics.preemptions, 1);
        self.waiting.push_front(s);
        Ok(())
    }

    fn publish(&mut self) {
        let kv = self.kv_stats();
        self.metrics
            .set_gauges(self.running.len(), self.waiting.len(), kv);
    }
}

/// Sample under `constraint`'s mask and advance it past the token.
fn sample_constrained(
    sampler: &mut Sampler,
    constraint: &mut Constraint,
    logits: &[f32],
) -> Result<u32, String> {
    let mut masked = logits.to_vec();
    constraint.apply(&mut masked).map_err(|e| e.to_string())?;
    if masked.iter().all(|l| *l == f32::NEG_INFINITY) {
        return Err("the grammar allows no token of this vocabulary".into());
    }
    let id = sampler.sample(&masked).map_err(|e| e.to_string())?;
    constraint.accept(id).map_err(|e| e.to_string())?;
    Ok(id)
}

/// The log-probability of `id` in `logits` and the `k` most likely tokens.
fn token_logprob(tokenizer: &Tokenizer, logits: &[f32], id: u32, k: usize) -> TokenLogprob {
    let piece = |id: u32| {
        let bytes = tokenizer.token_piece(id, false);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let lp = log_softmax(logits);
    let (token, bytes) = piece(id);
    TokenLogprob {
        token,
        bytes,
        logprob: lp.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY),
        top: top_logprobs(logits, k)
            .into_iter()
            .map(|(t, l)| {
                let (text, bytes) = piece(t);
                (text, bytes, l)
            })
            .collect(),
    }
}
