//! Planning a step's batch: the chunks of the running sequences (preemption when the
//! decoding ones need more pages than there are), then the waiting requests admitted
//! while the sequence limit, the token budget and the pages allow.
//!
//! A long prompt's prefill never holds the queue behind it: while one is in progress, the
//! requests at the front of the queue whose whole prompts fit in half of what the step
//! has left after decoding are admitted in the same step, so a short request gets its
//! first token after one step, not after the long prompt's last chunk. The prefill in
//! progress keeps at least half, so a stream of short requests cannot starve it.

use super::*;

impl<'m> Scheduler<'m> {
    pub(super) fn page_size(&mut self) -> usize {
        self.compiled.kv().kv_page_size()
    }

    /// Chunks for the running sequences, or None when the decoding ones need more pages
    /// than there are (or nothing can progress): the caller preempts and asks again.
    pub(super) fn plan_running(&mut self) -> Result<Option<Vec<Chunk>>, Error> {
        let mut pages_left = self.compiled.kv().pool().available();
        let mut tokens_left = self.config.step_tokens;
        let mut chunks = Vec::new();
        let kv = self.compiled.kv();
        for (i, s) in self.running.iter().enumerate() {
            let Some(seq) = s.kv.filter(|_| s.pending() == 1) else {
                continue;
            };
            let need = kv.pages_needed(seq, 1)?;
            if need > pages_left {
                return Ok(None);
            }
            pages_left -= need;
            tokens_left -= 1;
            chunks.push(Chunk {
                seq: i,
                len: 1,
                guesses: 0,
            });
        }
        self.plan_guesses(&mut chunks, &mut pages_left, &mut tokens_left)?;
        let reserved = self.short_prompts_reserve(tokens_left)?;
        let mut tokens_left = tokens_left - reserved;
        let kv = self.compiled.kv();
        for (i, s) in self.running.iter().enumerate() {
            let Some(seq) = s.kv.filter(|_| s.pending() > 1) else {
                continue;
            };
            let len = longest_fit(kv, seq, s.pending().min(tokens_left), pages_left)?;
            if len > 0 {
                pages_left -= kv.pages_needed(seq, len)?;
                tokens_left -= len;
                chunks.push(Chunk {
                    seq: i,
                    len,
                    guesses: 0,
                });
            }
        }
        if chunks.is_empty() && !self.running.is_empty() {
            return Ok(None);
        }
        Ok(Some(chunks))
    }

    /// Admit waiting requests while the sequence limit, the token budget and the pages
    /// allow; their first chunks join `chunks`.
    pub(super) fn admit(&mut self, mut chunks: Vec<Chunk>) -> Result<Vec<Chunk>, Error> {
        let mut tokens_left =
            self.config.step_tokens - chunks.iter().map(|c| c.len + c.guesses).sum::<usize>();
        let mut promised = self.promised_pages()?;
        let kv = self.compiled.kv();
        let available = kv.pool().available();
        while self.running.len() < self.config.max_seqs && tokens_left > 0 {
            let Some(front) = self.waiting.front() else {
                break;
            };
            let shared = kv
                .cached_prefix(&front.tokens)
                .into_iter()
                .filter(|&p| kv.pool().refcount(p) > 0)
                .count();
            let need = kv.pages_for_tokens(front.tokens.len()) - shared;
            if promised + need + self.reserve_pages > available {
                let pool = kv.pool().kv_page_count();
                if self.running.is_empty() && need + self.reserve_pages > pool {
                    // Too long to ever fit again (it grew while running): end it.
                    if let Some(mut s) = self.waiting.pop_front() {
                        s.finish(FinishReason::Length);
                    }
                    continue;
                }
                break;
            }
            let Some(mut s) = self.waiting.pop_front() else {
                break;
            };
            let (seq, n_cached) = kv.create_sequence_with_prefix(&s.tokens);
            s.kv = Some(seq);
            s.computed = n_cached;
            if s.cached_tokens.is_none() {
                s.cached_tokens = Some(n_cached);
                Metrics::add(&self.metrics.prompt_tokens, s.req.prompt.len() as u64);
                Metrics::add(&self.metrics.prompt_tokens_cached, n_cached as u64);
            }
            promised += need;
            let len = s.pending().min(tokens_left);
            tokens_left -= len;
            chunks.push(Chunk {
                seq: self.running.len(),
                len,
                guesses: 0,
            });
            self.running.push(s);
        }
        Ok(chunks)
    }

    /// Pages still to come for every running sequence to hold all its tokens.
    fn promised_pages(&mut self) -> Result<usize, Error> {
        let kv = self.compiled.kv();
        let mut promised = 0;
        for s in &self.running {
            if let Some(seq) = s.kv {
                let held = kv.pages_held(seq)?;
                promised += kv.pages_for_tokens(s.tokens.len()).saturating_sub(held);
            }
        }
        Ok(promised)
    }

    /// Tokens kept from the prefill of running sequences for the short requests at the
    /// front of the queue (see the module documentation): the whole prompts of those that
    /// fit together in half of `tokens_left`, that the sequence limit lets in and that
    /// [`Self::admit`] will find pages for (counted without prefix-cache hits, so never
    /// more than it needs). 0 when no running sequence is prefilling.
    fn short_prompts_reserve(&mut self, tokens_left: usize) -> Result<usize, Error> {
        if !self
            .running
            .iter()
            .any(|s| s.kv.is_some() && s.pending() > 1)
        {
            return Ok(0);
        }
        let half = tokens_left / 2;
        let slots = self.config.max_seqs.saturating_sub(self.running.len());
        let mut promised = self.promised_pages()?;
        let kv = self.compiled.kv();
        let available = kv.pool().available();
        let mut reserved = 0;
        for s in self.waiting.iter().take(slots) {
            let need = kv.pages_for_tokens(s.tokens.len());
            if reserved + s.pending() > half || promised + need + self.reserve_pages > available {
                break;
            }
            reserved += s.pending();
            promised += need;
        }
        Ok(reserved)
    }
}

/// The longest chunk of at most `max_len` tokens that `seq` can append within
/// `pages_left` pages: a binary search, as the pages an append needs never shrink with
/// its length.
fn longest_fit(
    kv: &kiln_kv::KvManager,
    seq: SeqId,
    max_len: usize,
    pages_left: usize,
) -> Result<usize, Error> {
    let (mut fits, mut too_long) = (0, max_len + 1);
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if kv.pages_needed(seq, mid)? <= pages_left {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    Ok(fits)
}
