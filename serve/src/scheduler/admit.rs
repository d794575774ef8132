//! Planning a step's batch: the chunks of the running sequences (preemption when the
//! decoding ones need more pages than there are), then the waiting requests admitted
//! while the sequence limit, the token budget and the pages allow.

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
        let kv = self.compiled.kv();
        for (i, s) in self.running.iter().enumerate() {
            let Some(seq) = s.kv.filter(|_| s.pending() > 1) else {
                continue;
            };
            let mut len = s.pending().min(tokens_left);
            while len > 0 && kv.pages_needed(seq, len)? > pages_left {
                len -= 1;
            }
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
        let kv = self.compiled.kv();
        let available = kv.pool().available();
        // Pages still to come for every running sequence to hold all its tokens.
        let mut promised = 0;
        for s in &self.running {
            if let Some(seq) = s.kv {
                let held = kv.pages_held(seq)?;
                promised += kv.pages_for_tokens(s.tokens.len()).saturating_sub(held);
            }
        }
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
}
