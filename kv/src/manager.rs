//! Sequences and their block tables on top of the page pool: append with copy-on-write,
//! fork, truncate, free, and reuse of cached prefix pages.

use std::collections::BTreeMap;

use super::prefix::{ROOT_PAGE_HASH, page_hash};
use super::{Appended, KvError, KvLayout, KvStats, PageCopy, PageId, PagePool, SeqId, Slot};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sequence {
    /// Every token of the sequence, position 0 first: what names its full pages.
    pub(crate) tokens: Vec<u32>,
    /// Page `i` holds positions `i * kv_page_size ..`; `ceil(len / kv_page_size)` entries.
    pub(crate) block_table: Vec<PageId>,
    /// Chain hash of each full page, registered in the prefix cache or not:
    /// `len / kv_page_size` entries.
    pub(crate) page_hashes: Vec<u64>,
}

/// What an append of some tokens would take from the pool.
struct AppendPlan {
    /// The partial last page, if other sequences hold it too and it must be copied first.
    copy_from: Option<PageId>,
    /// Pages to add at the end of the block table.
    new_pages: usize,
}

impl AppendPlan {
    fn pages_needed(&self) -> usize {
        self.new_pages + usize::from(self.copy_from.is_some())
    }
}

/// The KV cache's bookkeeping: which pages each sequence's tokens live in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvManager {
    layout: KvLayout,
    pool: PagePool,
    sequences: BTreeMap<SeqId, Sequence>,
    next_seq: u64,
    prefix_lookups: u64,
    prefix_hits: u64,
    prefix_prompt_tokens: u64,
    prefix_cached_tokens: u64,
}

impl KvManager {
    pub fn new(layout: KvLayout, kv_page_count: usize) -> Result<Self, KvError> {
        Ok(KvManager {
            layout,
            pool: PagePool::new(kv_page_count)?,
            sequences: BTreeMap::new(),
            next_seq: 0,
            prefix_lookups: 0,
            prefix_hits: 0,
            prefix_prompt_tokens: 0,
            prefix_cached_tokens: 0,
        })
    }

    /// As many pages as fit in `budget_bytes` of backend memory.
    pub fn with_budget(layout: KvLayout, budget_bytes: usize) -> Result<Self, KvError> {
        Self::new(layout, layout.pages_for_budget(budget_bytes))
    }

    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }

    pub fn kv_page_size(&self) -> usize {
        self.layout.kv_page_size()
    }

    pub fn pool(&self) -> &PagePool {
        &self.pool
    }

    pub fn stats(&self) -> KvStats {
        KvStats {
            kv_page_count: self.pool.kv_page_count(),
            pages_free: self.pool.free_count(),
            pages_in_use: self.pool.held_count(),
            pages_cached: self.pool.cached_count(),
            pages_evicted: self.pool.evictions(),
            sequences: self.sequences.len(),
            prefix_lookups: self.prefix_lookups,
            prefix_hits: self.prefix_hits,
            prefix_prompt_tokens: self.prefix_prompt_tokens,
            prefix_cached_tokens: self.prefix_cached_tokens,
        }
    }

    /// An empty sequence. Takes no page until tokens are appended.
    pub fn create_sequence(&mut self) -> SeqId {
        self.insert(Sequence::default())
    }

    /// A sequence that starts with the longest run of cached full pages matching the start
    /// of `tokens` (their reference counts go up; nothing is allocated). Returns it with the
    /// number of tokens it already holds; the caller appends `tokens[n_cached..]`.
    ///
    /// The match stops one token short of the whole prompt: the model must still run on the
    /// last prompt token to produce the logits of the first new one.
    pub fn create_sequence_with_prefix(&mut self, tokens: &[u32]) -> (SeqId, usize) {
        let page_size = self.kv_page_size();
        let max_pages = tokens.len().saturating_sub(1) / page_size;
        let mut seq = Sequence::default();
        let mut parent = ROOT_PAGE_HASH;
        for page_tokens in tokens.chunks_exact(page_size).take(max_pages) {
            let hash = page_hash(parent, page_tokens);
            let Some(page) = self.pool.lookup(hash, parent, page_tokens) else {
                break;
            };
            // Registered pages are held or cached, so this succeeds; stop cleanly if not.
            if self.pool.retain(page).is_err() {
                break;
            }
            seq.block_table.push(page);
            seq.page_hashes.push(hash);
            seq.tokens.extend_from_slice(page_tokens);
            parent = hash;
        }
        let n_cached = seq.tokens.len();
        self.prefix_lookups += 1;
        self.prefix_hits += u64::from(n_cached > 0);
        self.prefix_prompt_tokens += tokens.len() as u64;
        self.prefix_cached_tokens += n_cached as u64;
        (self.insert(seq), n_cached)
    }

    /// The cached pages that [`Self::create_sequence_with_prefix`] would reuse for `tokens`,
    /// without taking them or counting a lookup (admission control asks this first).
    pub fn cached_prefix(&self, tokens: &[u32]) -> Vec<PageId> {
        let page_size = self.kv_page_size();
        let max_pages = tokens.len().saturating_sub(1) / page_size;
        let mut pages = Vec::new();
        let mut parent = ROOT_PAGE_HASH;
        for page_tokens in tokens.chunks_exact(page_size).take(max_pages) {
            let hash = page_hash(parent, page_tokens);
            let Some(page) = self.pool.lookup(hash, parent, page_tokens) else {
                break;
            };
            pages.push(page);
            parent = hash;
        }
        pages
    }

    /// A new sequence sharing every page of `seq` (parallel sampling, beam search). The first
    /// append to a shared partial page copies it.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvError> {
        let child = self.sequence(seq)?.clone();
        for &page in &child.block_table {
            self.pool.retain(page)?; // held by `seq`, so this cannot fail
        }
        Ok(self.insert(child))
    }

    /// Reserves one slot per token, allocating pages as needed. If the last page is partial
    /// and shared, it is replaced by a fresh page and the returned [`Appended::copies`] says
    /// what the backend must copy before writing. All or nothing: on
    /// [`KvError::OutOfPages`] the sequence and the pool are unchanged.
    pub fn append(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Appended, KvError> {
        let page_size = self.kv_page_size();
        let s = self
            .sequences
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let plan = plan_append(&self.pool, page_size, s, tokens.len());
        let available = self.pool.available();
        if plan.pages_needed() > available {
            return Err(KvError::OutOfPages {
                requested: plan.pages_needed(),
                free: available,
            });
        }
        if tokens.is_empty() {
            return Ok(Appended::default());
        }

        // From here nothing fails: the pages needed are free or evictable, and every page
        // released is held by this sequence.
        let len = s.tokens.len();
        let mut copies = Vec::new();
        if let Some(src) = plan.copy_from {
            let dst = self.pool.alloc()?;
            self.pool.release(src)?; // the other holders keep it
            if let Some(last) = s.block_table.last_mut() {
                *last = dst;
            }
            copies.push(PageCopy {
                src,
                dst,
                n_tokens: len % page_size,
            });
        } else if len % page_size != 0 {
            // Held alone, but maybe still named in the prefix cache (a full page truncated
            // back to partial): the cache must not serve a page about to hold other tokens.
            if let Some(&last) = s.block_table.last() {
                self.pool.unregister_held(last);
            }
        }
        for _ in 0..plan.new_pages {
            s.block_table.push(self.pool.alloc()?);
        }
        let slots = (len..len + tokens.len())
            .map(|pos| Slot {
                page: s.block_table[pos / page_size],
                offset: pos % page_size,
            })
            .collect();
        s.tokens.extend_from_slice(tokens);
        register_full_pages(&mut self.pool, page_size, s);
        Ok(Appended { copies, slots })
    }

    /// Pages an append of `n_tokens` to `seq` would take from the pool (copy included), to
    /// compare with `pool().available()` before scheduling it.
    pub fn pages_needed(&self, seq: SeqId, n_tokens: usize) -> Result<usize, KvError> {
        let s = self.sequence(seq)?;
        Ok(plan_append(&self.pool, self.kv_page_size(), s, n_tokens).pages_needed())
    }

    /// Page `i` holds positions `i * kv_page_size .. (i + 1) * kv_page_size`.
    pub fn block_table(&self, seq: SeqId) -> Result<&[PageId], KvError> {
        Ok(&self.sequence(seq)?.block_table)
    }

    /// Number of tokens the sequence holds.
    pub fn len(&self, seq: SeqId) -> Result<usize, KvError> {
        Ok(self.sequence(seq)?.tokens.len())
    }

    /// The tokens the sequence holds, position 0 first.
    pub fn tokens(&self, seq: SeqId) -> Result<&[u32], KvError> {
        Ok(&self.sequence(seq)?.tokens)
    }

    pub fn contains(&self, seq: SeqId) -> bool {
        self.sequences.contains_key(&seq)
    }

    /// Live sequences, oldest first.
    pub fn sequence_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.sequences.keys().copied()
    }

    /// Keeps the first `n` tokens (preemption, a prompt cut short) and releases the pages
    /// past them; registered ones stay in the prefix cache. The kept partial page is
    /// written again only after a copy if it is shared, as in `append`.
    pub fn truncate(&mut self, seq: SeqId, n: usize) -> Result<(), KvError> {
        self.cut(seq, n, false)
    }

    /// Keeps the first `n` tokens and forgets the rest as if they had never been appended:
    /// speculative decoding's rejected guesses. Unlike [`Self::truncate`], the pages given
    /// back and the kept partial page leave the prefix cache when this sequence alone
    /// holds them, so rejected guesses never reach the LRU list (where they would push
    /// real prefixes out) and a dropped page goes straight back to the free list. Pages
    /// someone else holds too are released as `truncate` releases them.
    ///
    /// After `append(seq, guesses)` then `rollback(seq, len + accepted)` with at least one
    /// token accepted, the cache is as if only the accepted tokens had been appended (the
    /// property tests check it): same tokens, page hashes, registered pages and counts.
    pub fn rollback(&mut self, seq: SeqId, n: usize) -> Result<(), KvError> {
        self.cut(seq, n, true)
    }

    /// `truncate`, or with `forget` `rollback`.
    fn cut(&mut self, seq: SeqId, n: usize, forget: bool) -> Result<(), KvError> {
        let page_size = self.kv_page_size();
        let s = self
            .sequences
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let len = s.tokens.len();
        if n > len {
            return Err(KvError::TruncatePastEnd { seq, len, n });
        }
        // Last page first, so that a prefix's head outlives its tail in the LRU list.
        for page in s.block_table.drain(n.div_ceil(page_size)..).rev() {
            if forget && self.pool.refcount(page) == 1 {
                self.pool.unregister_held(page);
            }
            self.pool.release(page)?; // held by this sequence, so this cannot fail
        }
        // A kept partial page was full only with the dropped tokens: it names them no more.
        if forget
            && !n.is_multiple_of(page_size)
            && let Some(&last) = s.block_table.last()
            && self.pool.refcount(last) == 1
        {
            self.pool.unregister_held(last);
        }
        s.tokens.truncate(n);
        s.page_hashes.truncate(n / page_size);
        Ok(())
    }

    /// Ends the sequence. Its pages go back to the free list, or to the prefix cache if
    /// registered; the id is never used again.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let s = self
            .sequences
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        // Last page first: see `truncate`.
        for &page in s.block_table.iter().rev() {
            self.pool.release(page)?; // held by this sequence, so this cannot fail
        }
        Ok(())
    }

    /// Checks the module's invariants (see the module documentation) in O(pages + tokens);
    /// for tests and debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let page_size = self.kv_page_size();
        let mut holders = vec![0usize; self.pool.kv_page_count()];
        for (id, s) in &self.sequences {
            let len = s.tokens.len();
            if s.block_table.len() != len.div_ceil(page_size) {
                return Err(format!(
                    "{id}: {len} tokens in {} pages",
                    s.block_table.len()
                ));
            }
            if s.page_hashes.len() != len / page_size {
                return Err(format!(
                    "{id}: {len} tokens, {} page hashes",
                    s.page_hashes.len()
                ));
            }
            let mut parent = ROOT_PAGE_HASH;
            for (i, (&page, in_page)) in s
                .block_table
                .iter()
                .zip(s.tokens.chunks(page_size))
                .enumerate()
            {
                let count = holders
                    .get_mut(page.index())
                    .ok_or(format!("{id}: {page} outside the pool"))?;
                *count += 1;
                if let Some(&hash) = s.page_hashes.get(i) {
                    if hash != page_hash(parent, in_page) {
                        return Err(format!("{id}: wrong chain hash for page {i} ({page})"));
                    }
                    parent = hash;
                }
                if let Some(cached) = self.pool.registered_tokens(page)
                    && !cached.starts_with(in_page)
                {
                    return Err(format!("{id}: {page} is registered for other tokens"));
                }
            }
        }
        self.pool.check(&holders)
    }

    pub(crate) fn sequence(&self, seq: SeqId) -> Result<&Sequence, KvError> {
        self.sequences
            .get(&seq)
            .ok_or(KvError::UnknownSequence(seq))
    }

    fn insert(&mut self, seq: Sequence) -> SeqId {
        let id = SeqId(self.next_seq);
        self.next_seq += 1;
        self.sequences.insert(id, seq);
        id
    }
}

fn plan_append(pool: &PagePool, page_size: usize, s: &Sequence, n_tokens: usize) -> AppendPlan {
    if n_tokens == 0 {
        return AppendPlan {
            copy_from: None,
            new_pages: 0,
        };
    }
    let len = s.tokens.len();
    let partial_last = if !len.is_multiple_of(page_size) {
        s.block_table.last().copied()
    } else {
        None
    };
    AppendPlan {
        copy_from: partial_last.filter(|&page| pool.refcount(page) > 1),
        new_pages: (len + n_tokens).div_ceil(page_size) - s.block_table.len(),
    }
}

/// Names the pages that the last append filled and offers them to the prefix cache.
fn register_full_pages(pool: &mut PagePool, page_size: usize, s: &mut Sequence) {
    for i in s.page_hashes.len()..s.tokens.len() / page_size {
        let parent = i
            .checked_sub(1)
            .map_or(ROOT_PAGE_HASH, |prev| s.page_hashes[prev]);
        let tokens = &s.tokens[i * page_size..(i + 1) * page_size];
        let hash = page_hash(parent, tokens);
        // Refused when an equal page is already cached: this one stays private.
        pool.register(s.block_table[i], hash, parent, tokens);
        s.page_hashes.push(hash);
    }
}
