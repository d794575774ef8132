//! Speculative decoding inside continuous batching.
//!
//! Before a step, each decoding sequence that speculates gets its guesses: prompt lookup
//! over its own text (a request's `lookup`), or the server's draft model, which runs
//! batched over every such sequence (one draft step per guess round, its own paged KV
//! cache). The step then carries `[last token, g₁ … g_k]` for those sequences next to the
//! one-token entries of plain sequences and the prefill chunks, with k + 1 logits rows
//! each; the scheduler verifies the guesses (`kiln_engine::speculative::verify`), rolls
//! the rejected ones out of the KV cache (`KvManager::rollback`) and accepts the kept
//! tokens one by one, so stop strings, lengths and the context end exactly where they
//! would without guesses. A draft that fails (out of its pages) only costs the guesses.

use kiln_engine::Error;
use kiln_engine::compiled::{BatchEntry, Compiled};
use kiln_engine::sampler::Sampler;
use kiln_engine::speculative::{
    Draft, GuessLength, PromptLookup, SpecConfig, Standard, Verdict, draft_pick, draft_sampler,
    verify,
};
use kiln_kv::SeqId;

use super::super::metrics::Metrics;
use super::super::{FinishReason, Request};
use super::{Chunk, Scheduler, Sequence, StepOutcome};

/// Where a sequence's guesses come from.
#[derive(Debug)]
enum Method {
    Lookup(PromptLookup),
    /// The server's draft model: this sequence's KV sequence there (while admitted) and
    /// its generator for sampled drafts.
    Draft {
        seq: Option<SeqId>,
        sampler: Option<Sampler>,
        /// Tokens of the text the draft sequence held as of the last step (the text only
        /// grows): only what follows is compared, so a step's host work does not grow
        /// with the context.
        synced: usize,
    },
}

/// A sequence's speculation.
#[derive(Debug)]
pub(super) struct SeqSpec {
    method: Method,
    length: GuessLength,
    /// Guesses for the coming step (none: a plain decoding step).
    pub(super) guesses: Draft,
}

impl SeqSpec {
    /// What `req` asks for on a server with (or without) a draft model; None: no guesses.
    pub(super) fn for_request(
        req: &Request,
        has_draft: bool,
        k_max: usize,
    ) -> Result<Option<SeqSpec>, Error> {
        let method = match req.lookup {
            _ if k_max == 0 => return Ok(None),
            // Guesses are not drawn under the grammar's mask, nor report log-probabilities.
            _ if req.constraint.is_some() || req.logprobs.is_some() => return Ok(None),
            Some(0) => return Ok(None),
            Some(n) => Method::Lookup(PromptLookup::new(n)?),
            None if has_draft => Method::Draft {
                seq: None,
                sampler: draft_sampler(&req.sampler)?,
                synced: 0,
            },
            None => return Ok(None),
        };
        let config = SpecConfig::new(k_max);
        Ok(Some(SeqSpec {
            method,
            length: GuessLength::new(k_max, config.adaptive, config.min_keep_probability),
            guesses: Draft::default(),
        }))
    }

    /// Keeps only the first `n` guesses (the step had room for no more).
    pub(super) fn keep_guesses(&mut self, n: usize) {
        self.guesses.tokens.truncate(n);
        if let Some(q) = &mut self.guesses.q {
            q.truncate(n);
        }
    }
}

/// The scheduler's speculation: the guess limit and the draft model, if any.
#[derive(Debug)]
pub(super) struct Speculator<'m> {
    draft: Option<Compiled<'m>>,
    pub(super) k_max: usize,
}

impl<'m> Speculator<'m> {
    pub(super) fn new(draft: Option<Compiled<'m>>, k_max: usize) -> Speculator<'m> {
        Speculator { draft, k_max }
    }

    pub(super) fn has_draft(&self) -> bool {
        self.draft.is_some()
    }

    pub(super) fn draft_kv_stats(&mut self) -> Option<kiln_kv::KvStats> {
        self.draft.as_mut().map(|d| d.kv().stats())
    }

    /// Gives each decoding sequence of `running` that speculates its guesses for the
    /// step: never past its `max_tokens` or the context `n_ctx`.
    pub(super) fn guess(&mut self, running: &mut [Sequence<'m>], n_ctx: usize, metrics: &Metrics) {
        let mut jobs = Vec::new(); // (index into running, guesses wanted)
        for (i, s) in running.iter_mut().enumerate() {
            let decoding = s.kv.is_some() && s.pending() == 1;
            let room = n_ctx
                .saturating_sub(s.computed + 1)
                .min(s.req.max_tokens.saturating_sub(s.generated() + 1));
            let Some(spec) = &mut s.spec else { continue };
            spec.guesses = Draft::default();
            let k = spec.length.next().min(room).min(self.k_max);
            if !decoding || k == 0 {
                continue;
            }
            match &spec.method {
                Method::Lookup(lookup) => spec.guesses = Draft::one_hot(lookup.guess(&s.tokens, k)),
                Method::Draft { .. } => jobs.push((i, k)),
            }
        }
        if let Some(draft) = &mut self.draft
            && !jobs.is_empty()
            && draft_all(draft, running, &jobs, metrics).is_err()
        {
            // Out of draft pages (or a failing draft backend): no guesses this step, and
            // the draft sequences start again from the prefix cache next time.
            for &(i, _) in &jobs {
                if let Some(spec) = &mut running[i].spec {
                    spec.guesses = Draft::default();
                    forget_draft(draft, spec);
                }
            }
        }
    }

    /// Frees what `spec` holds in the draft model (the sequence retires or is preempted).
    pub(super) fn forget(&mut self, spec: &mut SeqSpec) {
        spec.guesses = Draft::default();
        if let Some(draft) = &mut self.draft {
            forget_draft(draft, spec);
        }
    }
}

fn forget_draft(draft: &mut Compiled<'_>, spec: &mut SeqSpec) {
    if let Method::Draft { seq, .. } = &mut spec.method
        && let Some(seq) = seq.take()
    {
        // A sequence the draft's manager knows: freeing it cannot fail.
        let _ = draft.kv().free(seq);
    }
}

/// Runs the draft model over the sequences of `jobs` together: each draft sequence is
/// brought to its text (rolled back to the common prefix, the rest run in chunks), then
/// one batched step per guess round.
fn draft_all(
    draft: &mut Compiled<'_>,
    running: &mut [Sequence<'_>],
    jobs: &[(usize, usize)],
    metrics: &Metrics,
) -> Result<(), Error> {
    let max_tokens = draft.plan().max_tokens;
    let max_rows = draft.plan().max_outputs;
    let vocab = draft.model().config.vocab_size;
    // Per job: its draft sequence and how much of its text the draft holds.
    let mut seqs = Vec::with_capacity(jobs.len());
    let mut held = Vec::with_capacity(jobs.len());
    for &(i, _) in jobs {
        let s = &mut running[i];
        let Some(SeqSpec {
            method: Method::Draft { seq, synced, .. },
            ..
        }) = &mut s.spec
        else {
            return Err(Error::Invalid(
                "a draft job without a draft sequence".into(),
            ));
        };
        let id = match *seq {
            Some(id) => id,
            None => {
                let (id, n_cached) = draft.kv().create_sequence_with_prefix(&s.tokens);
                *synced = n_cached;
                *seq.insert(id)
            }
        };
        let kv = draft.kv();
        let drafted = kv.tokens(id)?;
        let from = (*synced).min(drafted.len()).min(s.tokens.len());
        let keep = (from
            + drafted[from..]
                .iter()
                .zip(&s.tokens[from..])
                .take_while(|(a, b)| a == b)
                .count())
        .min(s.tokens.len() - 1);
        kv.rollback(id, keep)?;
        // Once caught up below, the draft holds the whole text.
        *synced = s.tokens.len();
        seqs.push(id);
        held.push(keep);
    }
    let mut guesses: Vec<Vec<u32>> = vec![Vec::new(); seqs.len()];
    // Catch up: every draft sequence runs the rest of its text; the first guess comes
    // from the row of its last token.
    while held
        .iter()
        .zip(jobs)
        .any(|(&h, &(i, _))| h < running[i].tokens.len())
    {
        let (mut budget, mut rows) = (max_tokens, max_rows);
        let mut entries = Vec::new();
        let mut ends = Vec::new(); // jobs whose chunk ends their text, in entry order
        for (j, &(i, _)) in jobs.iter().enumerate() {
            let text = &running[i].tokens;
            let n = (text.len() - held[j]).min(budget);
            if n == 0 || (held[j] + n == text.len() && rows == 0) {
                continue;
            }
            let last = held[j] + n == text.len();
            entries.push(BatchEntry {
                seq: seqs[j],
                tokens: &text[held[j]..held[j] + n],
                logits_from: last.then_some(n - 1),
            });
            if last {
                ends.push(j);
                rows -= 1;
            }
            held[j] += n;
            budget -= n;
        }
        let logits = draft.step(&entries)?;
        drop(entries);
        Metrics::add(&metrics.spec_draft_steps, 1);
        for (row, &j) in ends.iter().enumerate() {
            guesses[j].push(pick(
                running,
                jobs[j].0,
                &logits[row * vocab..(row + 1) * vocab],
            ));
        }
    }
    // Guess rounds: each job's last guess in, the next out.
    loop {
        let round: Vec<usize> = (0..jobs.len())
            .filter(|&j| guesses[j].len() < jobs[j].1)
            .collect();
        if round.is_empty() {
            break;
        }
        let entries: Vec<BatchEntry> = round
            .iter()
            .map(|&j| BatchEntry::last(seqs[j], &guesses[j][guesses[j].len() - 1..]))
            .collect();
        let logits = draft.step(&entries)?;
        drop(entries);
        Metrics::add(&metrics.spec_draft_steps, 1);
        for (row, &j) in round.iter().enumerate() {
            let guess = pick(running, jobs[j].0, &logits[row * vocab..(row + 1) * vocab]);
            guesses[j].push(guess);
        }
    }
    for (j, tokens) in guesses.into_iter().enumerate() {
        if let Some(spec) = &mut running[jobs[j].0].spec {
            spec.guesses.tokens = tokens;
        }
    }
    Ok(())
}

/// A guess of sequence `i` from one row of the draft's logits (its distribution kept for
/// sampled verification).
fn pick(running: &mut [Sequence<'_>], i: usize, row: &[f32]) -> u32 {
    let Some(spec) = &mut running[i].spec else {
        return 0;
    };
    let Method::Draft { sampler, .. } = &mut spec.method else {
        return 0;
    };
    let (guess, q) = draft_pick(sampler.as_mut(), row);
    if let Some(q) = q {
        spec.guesses.q.get_or_insert_with(Vec::new).push(q);
    }
    guess
}

/// Judges sequence `s`'s guesses against its `guesses + 1` rows of the step.
pub(super) fn verify_guesses(s: &mut Sequence<'_>, rows: &[f32], vocab: usize) -> Verdict {
    let Some(spec) = &mut s.spec else {
        return verify(&mut s.sampler, &Standard, rows, vocab, &[], None);
    };
    let verdict = verify(
        &mut s.sampler,
        &Standard,
        rows,
        vocab,
        &spec.guesses.tokens,
        spec.guesses.q.as_deref(),
    );
    spec.length
        .update(spec.guesses.tokens.len(), verdict.accepted);
    verdict
}

impl Scheduler<'_> {
    /// Gives the decoding chunks of `chunks` their guesses: what is left once every
    /// decoding sequence has its token (tokens, logits rows beyond one per sequence,
    /// pages); guesses that do not fit are dropped from the end.
    pub(super) fn plan_guesses(
        &mut self,
        chunks: &mut [Chunk],
        pages_left: &mut usize,
        tokens_left: &mut usize,
    ) -> Result<(), Error> {
        let mut rows_left = self
            .compiled
            .plan()
            .max_outputs
            .saturating_sub(self.config.max_seqs);
        let kv = self.compiled.kv();
        for c in chunks.iter_mut() {
            let s = &mut self.running[c.seq];
            let (Some(seq), Some(spec)) = (s.kv, &mut s.spec) else {
                continue;
            };
            let base = kv.pages_needed(seq, 1)?;
            let mut g = spec.guesses.tokens.len().min(*tokens_left).min(rows_left);
            while g > 0 && kv.pages_needed(seq, 1 + g)? - base > *pages_left {
                g -= 1;
            }
            spec.keep_guesses(g);
            *pages_left -= kv.pages_needed(seq, 1 + g)? - base;
            *tokens_left -= g;
            rows_left -= g;
            c.guesses = g;
        }
        Ok(())
    }

    /// Verify running sequence `i`'s guesses against its rows of the step (its token's
    /// K/V and the guesses' are in the cache), roll the rejected ones back and accept the
    /// kept tokens and the next one, each as if decoded alone; Some when it ends.
    pub(super) fn accept_verified(
        &mut self,
        i: usize,
        rows: &[f32],
        vocab: usize,
        outcome: &mut StepOutcome,
    ) -> Result<Option<FinishReason>, Error> {
        let s = &mut self.running[i];
        let verdict = verify_guesses(s, rows, vocab);
        let Some(seq) = s.kv else {
            return Ok(None);
        };
        // `computed` counts the step's token; the kept guesses follow it.
        let base = s.computed;
        self.compiled.kv().rollback(seq, base + verdict.accepted)?;
        let guesses = s
            .spec
            .as_ref()
            .map_or_else(Vec::new, |p| p.guesses.tokens.clone());
        Metrics::add(&self.metrics.spec_verify_steps, 1);
        Metrics::add(&self.metrics.spec_drafted, guesses.len() as u64);
        Metrics::add(&self.metrics.spec_accepted, verdict.accepted as u64);
        for (j, &id) in guesses[..verdict.accepted].iter().enumerate() {
            self.running[i].computed = base + j;
            outcome.sampled += 1;
            if let Some(finish) = self.accept(i, id) {
                return Ok(Some(finish));
            }
        }
        self.running[i].computed = base + verdict.accepted;
        outcome.sampled += 1;
        Ok(self.accept(i, verdict.next))
    }
}
