//! Sequences and their block tables on top of the page pool: append with copy-on-write,
//! fork, truncate, free, reuse of cached prefix pages, and the release of sliding-window
//! pages no query can read any more.

use std::collections::BTreeMap;

use super::prefix::{ROOT_PAGE_HASH, group_page_hash, page_hash};
use super::{
    AppendCost, Appended, KvError, KvLayout, KvStats, PageCopy, PageId, PagePool, SeqId, Slot,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sequence {
    /// Every token of the sequence, position 0 first: what names its full pages.
    pub(crate) tokens: Vec<u32>,
    /// Per KV group: page `i` holds positions `i * kv_page_size ..`; `ceil(len /
    /// kv_page_size)` entries. None for a window group's pages below its kept range.
    pub(crate) tables: Vec<Vec<Option<PageId>>>,
    /// Chain hash of each full page (the same for every group; a group's pages are named
    /// by [`group_page_hash`] of it), registered in the prefix cache or not:
    /// `len / kv_page_size` entries.
    pub(crate) page_hashes: Vec<u64>,
    /// The position the last append started at (the next append's position for a
    /// sequence made from a cached prefix): a window group keeps the pages from the one
    /// holding the first position a query there attends to.
    frontier: usize,
}

/// The index of the first page a group keeps for queries from position `frontier` on.
fn first_kept_page(window: Option<usize>, frontier: usize, page_size: usize) -> usize {
    match window {
        Some(w) => (frontier + 1).saturating_sub(w) / page_size,
        None => 0,
    }
}

/// What an append of some tokens would do to one group's table.
struct GroupPlan {
    /// Window pages to release (indices into the table), behind the new frontier.
    release: Vec<usize>,
    /// The partial last page, if other sequences hold it too and it must be copied first.
    copy_from: Option<PageId>,
    /// Pages to add at the end of the table.
    new_pages: usize,
}

/// The KV cache's bookkeeping: which pages each sequence's tokens live in, per KV group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvManager {
    layout: KvLayout,
    /// Per KV group: its sliding window (None: full attention).
    windows: Vec<Option<usize>>,
    pool: PagePool,
    sequences: BTreeMap<SeqId, Sequence>,
    next_seq: u64,
    prefix_lookups: u64,
    prefix_hits: u64,
    prefix_prompt_tokens: u64,
    prefix_cached_tokens: u64,
}

impl KvManager {
    /// A manager whose every group (`layout.n_groups()`) attends to the whole context.
    pub fn new(layout: KvLayout, kv_page_count: usize) -> Result<Self, KvError> {
        Ok(KvManager {
            layout,
            windows: vec![None; layout.n_groups()],
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

    /// The sliding window of each KV group (None: full attention), one per group.
    pub fn with_windows(mut self, windows: &[Option<usize>]) -> Result<Self, KvError> {
        if windows.len() != self.layout.n_groups() || windows.contains(&Some(0)) {
            return Err(KvError::BadWindows(format!(
                "{windows:?} for {} KV groups",
                self.layout.n_groups()
            )));
        }
        self.windows = windows.to_vec();
        Ok(self)
    }

    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }

    pub fn kv_page_size(&self) -> usize {
        self.layout.kv_page_size()
    }

    pub fn n_groups(&self) -> usize {
        self.windows.len()
    }

    /// Per KV group: its sliding window (None: full attention).
    pub fn windows(&self) -> &[Option<usize>] {
        &self.windows
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
        let seq = Sequence {
            tables: vec![Vec::new(); self.n_groups()],
            ..Sequence::default()
        };
        self.insert(seq)
    }

    /// A sequence that starts with the longest run of cached full pages matching the start
    /// of `tokens` (their reference counts go up; nothing is allocated). Returns it with the
    /// number of tokens it already holds; the caller appends `tokens[n_cached..]`. A window
    /// group needs only the pages the next token's window reaches.
    ///
    /// The match stops one token short of the whole prompt: the model must still run on the
    /// last prompt token to produce the logits of the first new one.
    pub fn create_sequence_with_prefix(&mut self, tokens: &[u32]) -> (SeqId, usize) {
        let (n_pages, found, hashes) = self.match_prefix(tokens);
        let page_size = self.kv_page_size();
        let n_cached = n_pages * page_size;
        let mut seq = Sequence {
            tokens: tokens[..n_cached].to_vec(),
            tables: Vec::with_capacity(self.n_groups()),
            page_hashes: hashes[..n_pages].to_vec(),
            frontier: n_cached,
        };
        for (g, found) in found.iter().enumerate() {
            let keep = first_kept_page(self.windows[g], n_cached, page_size);
            let mut table = vec![None; n_pages];
            for i in keep..n_pages {
                // Found pages are registered, so held or cached: retaining them succeeds.
                if let Some(page) = found[i]
                    && self.pool.retain(page).is_ok()
                {
                    table[i] = Some(page);
                }
            }
            seq.tables.push(table);
        }
        self.prefix_lookups += 1;
        self.prefix_hits += u64::from(n_cached > 0);
        self.prefix_prompt_tokens += tokens.len() as u64;
        self.prefix_cached_tokens += n_cached as u64;
        (self.insert(seq), n_cached)
    }

    /// The cached pages that [`Self::create_sequence_with_prefix`] would reuse for `tokens`
    /// (every group's), without taking them or counting a lookup (admission control asks
    /// this first).
    pub fn cached_prefix(&self, tokens: &[u32]) -> Vec<PageId> {
        let (n_pages, found, _) = self.match_prefix(tokens);
        let n_cached = n_pages * self.kv_page_size();
        found
            .iter()
            .enumerate()
            .flat_map(|(g, found)| {
                let keep = first_kept_page(self.windows[g], n_cached, self.kv_page_size());
                found[keep.min(n_pages)..n_pages].iter().flatten().copied()
            })
            .collect()
    }

    /// The longest reusable run of full pages at the start of `tokens`: its length in
    /// pages, the cached page of each (group, page) where there is one, and the chain
    /// hashes of the pages looked at.
    #[allow(clippy::type_complexity)]
    fn match_prefix(&self, tokens: &[u32]) -> (usize, Vec<Vec<Option<PageId>>>, Vec<u64>) {
        let page_size = self.kv_page_size();
        let max_pages = tokens.len().saturating_sub(1) / page_size;
        let mut found = vec![Vec::with_capacity(max_pages); self.n_groups()];
        let mut hashes = Vec::with_capacity(max_pages);
        let mut parent = ROOT_PAGE_HASH;
        for page_tokens in tokens.chunks_exact(page_size).take(max_pages) {
            let hash = page_hash(parent, page_tokens);
            for (g, found) in found.iter_mut().enumerate() {
                let (h, p) = (group_page_hash(hash, g), group_page_hash(parent, g));
                found.push(self.pool.lookup(h, p, page_tokens));
            }
            hashes.push(hash);
            parent = hash;
        }
        // Full-attention groups need every page; the first gap bounds the match.
        let mut n = max_pages;
        for (g, found) in found.iter().enumerate() {
            if self.windows[g].is_none() {
                n = n.min(found.iter().position(Option::is_none).unwrap_or(n));
            }
        }
        // Window groups need the pages the next token's window reaches.
        let usable = |n: usize| {
            found.iter().enumerate().all(|(g, found)| {
                let keep = first_kept_page(self.windows[g], n * page_size, page_size);
                found[keep.min(n)..n].iter().all(Option::is_some)
            })
        };
        while n > 0 && !usable(n) {
            n -= 1;
        }
        (n, found, hashes)
    }

    /// A new sequence sharing every page of `seq` (parallel sampling, beam search). The first
    /// append to a shared partial page copies it.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvError> {
        let child = self.sequence(seq)?.clone();
        for &page in child.tables.iter().flatten().flatten() {
            self.pool.retain(page)?; // held by `seq`, so this cannot fail
        }
        Ok(self.insert(child))
    }

    /// Reserves one slot per token in every group, allocating pages as needed; a window
    /// group first releases its pages that no query from the first new token on can read.
    /// If a group's last page is partial and shared, it is replaced by a fresh page and the
    /// returned [`Appended::copies`] says what the backend must copy before writing. All or
    /// nothing: on [`KvError::OutOfPages`] the sequence and the pool are unchanged.
    pub fn append(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Appended, KvError> {
        let page_size = self.kv_page_size();
        let s = self
            .sequences
            .get(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        let plans = plan_append(&self.pool, &self.windows, page_size, s, tokens.len());
        let cost = cost_of(&self.pool, s, &plans);
        let available = self.pool.available();
        if cost.take > available + cost.give_back {
            return Err(KvError::OutOfPages {
                requested: cost.net(),
                free: available,
            });
        }
        if tokens.is_empty() {
            return Ok(Appended::default());
        }

        // From here nothing fails: the pages needed are free, evictable or released first,
        // and every page released is held by this sequence.
        let s = self.sequences.get_mut(&seq).expect("looked up above");
        let len = s.tokens.len();
        s.frontier = len;
        for (table, plan) in s.tables.iter_mut().zip(&plans) {
            for &i in &plan.release {
                if let Some(page) = table[i].take() {
                    self.pool.release(page)?;
                }
            }
        }
        let mut copies = Vec::new();
        let mut slots = Vec::with_capacity(plans.len());
        for (table, plan) in s.tables.iter_mut().zip(&plans) {
            if let Some(src) = plan.copy_from {
                let dst = self.pool.alloc()?;
                self.pool.release(src)?; // the other holders keep it
                if let Some(last) = table.last_mut() {
                    *last = Some(dst);
                }
                copies.push(PageCopy {
                    src,
                    dst,
                    n_tokens: len % page_size,
                });
            } else if !len.is_multiple_of(page_size) {
                // Held alone, but maybe still named in the prefix cache (a full page
                // truncated back to partial): the cache must not serve a page about to hold
                // other tokens.
                if let Some(&Some(last)) = table.last() {
                    self.pool.unregister_held(last);
                }
            }
            for _ in 0..plan.new_pages {
                table.push(Some(self.pool.alloc()?));
            }
            slots.push(
                (len..len + tokens.len())
                    .map(|pos| Slot {
                        page: table[pos / page_size].expect("written pages are held"),
                        offset: pos % page_size,
                    })
                    .collect(),
            );
        }
        s.tokens.extend_from_slice(tokens);
        register_full_pages(&mut self.pool, page_size, s);
        Ok(Appended { copies, slots })
    }

    /// What an append of `n_tokens` to `seq` would take from the pool (copies included) and
    /// give back to it (window pages released).
    pub fn append_cost(&self, seq: SeqId, n_tokens: usize) -> Result<AppendCost, KvError> {
        let s = self.sequence(seq)?;
        let plans = plan_append(&self.pool, &self.windows, self.kv_page_size(), s, n_tokens);
        Ok(cost_of(&self.pool, s, &plans))
    }

    /// Pages an append of `n_tokens` to `seq` would take from the pool, net of the window
    /// pages it releases first, to compare with `pool().available()` before scheduling it.
    pub fn pages_needed(&self, seq: SeqId, n_tokens: usize) -> Result<usize, KvError> {
        Ok(self.append_cost(seq, n_tokens)?.net())
    }

    /// Pages a sequence of `n_tokens` takes at most, every group counted in full: an upper
    /// bound for admission (window groups hold fewer once past their window).
    pub fn pages_for_tokens(&self, n_tokens: usize) -> usize {
        n_tokens.div_ceil(self.kv_page_size()) * self.n_groups()
    }

    /// The table of `seq` in KV group `group`: entry `i` holds positions `i *
    /// kv_page_size ..`; None where a window group has released the page.
    pub fn block_table(&self, seq: SeqId, group: usize) -> Result<&[Option<PageId>], KvError> {
        let s = self.sequence(seq)?;
        s.tables
            .get(group)
            .map(Vec::as_slice)
            .ok_or(KvError::UnknownGroup {
                group,
                n_groups: self.n_groups(),
            })
    }

    /// Pages `seq` holds, all groups together.
    pub fn pages_held(&self, seq: SeqId) -> Result<usize, KvError> {
        let s = self.sequence(seq)?;
        Ok(s.tables.iter().flatten().flatten().count())
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

    /// Keeps the first `n` tokens (preemption, a prompt cut short, a failed step) and
    /// releases the pages past them; registered ones stay in the prefix cache. The kept
    /// partial page is written again only after a copy if it is shared, as in `append`. A
    /// window group must still hold the pages the next token's window reaches: back to
    /// the start of the last append always works, further only while those pages were
    /// never released ([`KvError::WindowReleased`]).
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
        let frontier = s.frontier.min(n);
        let n_pages = n.div_ceil(page_size);
        for (table, &window) in s.tables.iter().zip(&self.windows) {
            let keep = first_kept_page(window, frontier, page_size);
            if table[keep.min(n_pages)..n_pages]
                .iter()
                .any(Option::is_none)
            {
                return Err(KvError::WindowReleased { seq, n });
            }
        }
        for table in &mut s.tables {
            // Last page first, so that a prefix's head outlives its tail in the LRU list.
            for page in table.drain(n_pages..).rev().flatten() {
                if forget && self.pool.refcount(page) == 1 {
                    self.pool.unregister_held(page);
                }
                self.pool.release(page)?; // held by this sequence, so this cannot fail
            }
            // A kept partial page was full only with the dropped tokens: it names them no
            // more.
            if forget
                && !n.is_multiple_of(page_size)
                && let Some(&Some(last)) = table.last()
                && self.pool.refcount(last) == 1
            {
                self.pool.unregister_held(last);
            }
        }
        s.tokens.truncate(n);
        s.page_hashes.truncate(n / page_size);
        s.frontier = frontier;
        Ok(())
    }

    /// Ends the sequence. Its pages go back to the free list, or to the prefix cache if
    /// registered; the id is never used again.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let s = self
            .sequences
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        for table in &s.tables {
            // Last page first: see `truncate`.
            for &page in table.iter().rev().flatten() {
                self.pool.release(page)?; // held by this sequence, so this cannot fail
            }
        }
        Ok(())
    }

    /// Checks the module's invariants (see the crate documentation) in O(pages + tokens);
    /// for tests and debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let page_size = self.kv_page_size();
        let mut holders = vec![0usize; self.pool.kv_page_count()];
        for (id, s) in &self.sequences {
            let len = s.tokens.len();
            if s.tables.len() != self.n_groups() {
                return Err(format!(
                    "{id}: {} tables for {} groups",
                    s.tables.len(),
                    self.n_groups()
                ));
            }
            if s.page_hashes.len() != len / page_size || s.frontier > len {
                return Err(format!(
                    "{id}: {len} tokens, {} page hashes, frontier {}",
                    s.page_hashes.len(),
                    s.frontier
                ));
            }
            let mut parent = ROOT_PAGE_HASH;
            for (i, in_page) in s.tokens.chunks(page_size).enumerate() {
                if let Some(&hash) = s.page_hashes.get(i) {
                    if hash != page_hash(parent, in_page) {
                        return Err(format!("{id}: wrong chain hash for page {i}"));
                    }
                    parent = hash;
                }
            }
            for (g, (table, &window)) in s.tables.iter().zip(&self.windows).enumerate() {
                if table.len() != len.div_ceil(page_size) {
                    return Err(format!(
                        "{id}: {len} tokens in {} pages of group {g}",
                        table.len()
                    ));
                }
                // Exactly the pages from the first one a query at the frontier reads.
                let keep = first_kept_page(window, s.frontier, page_size);
                for (i, (&entry, in_page)) in
                    table.iter().zip(s.tokens.chunks(page_size)).enumerate()
                {
                    let Some(page) = entry else {
                        if i >= keep {
                            return Err(format!("{id}: group {g} lost page {i} (keeps {keep}..)"));
                        }
                        continue;
                    };
                    if i < keep {
                        return Err(format!(
                            "{id}: group {g} holds page {i} ({page}) behind its window (keeps {keep}..)"
                        ));
                    }
                    let count = holders
                        .get_mut(page.index())
                        .ok_or(format!("{id}: {page} outside the pool"))?;
                    *count += 1;
                    if let Some(cached) = self.pool.registered_tokens(page)
                        && !cached.starts_with(in_page)
                    {
                        return Err(format!("{id}: {page} is registered for other tokens"));
                    }
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

fn plan_append(
    pool: &PagePool,
    windows: &[Option<usize>],
    page_size: usize,
    s: &Sequence,
    n_tokens: usize,
) -> Vec<GroupPlan> {
    let len = s.tokens.len();
    s.tables
        .iter()
        .zip(windows)
        .map(|(table, &window)| {
            if n_tokens == 0 {
                return GroupPlan {
                    release: Vec::new(),
                    copy_from: None,
                    new_pages: 0,
                };
            }
            let keep = first_kept_page(window, len, page_size);
            let partial_last = if !len.is_multiple_of(page_size) {
                table.last().copied().flatten()
            } else {
                None
            };
            GroupPlan {
                release: (0..keep.min(table.len()))
                    .filter(|&i| table[i].is_some())
                    .collect(),
                copy_from: partial_last.filter(|&page| pool.refcount(page) > 1),
                new_pages: (len + n_tokens).div_ceil(page_size) - table.len(),
            }
        })
        .collect()
}

/// Pages the plans take, and the released pages this sequence alone holds (they become
/// free or cached, so available again).
fn cost_of(pool: &PagePool, s: &Sequence, plans: &[GroupPlan]) -> AppendCost {
    let mut cost = AppendCost::default();
    for (table, plan) in s.tables.iter().zip(plans) {
        cost.take += plan.new_pages + usize::from(plan.copy_from.is_some());
        cost.give_back += plan
            .release
            .iter()
            .filter(|&&i| table[i].is_some_and(|p| pool.refcount(p) == 1))
            .count();
    }
    cost
}

/// Names the pages that the last append filled and offers them to the prefix cache, each
/// group's under its own name.
fn register_full_pages(pool: &mut PagePool, page_size: usize, s: &mut Sequence) {
    for i in s.page_hashes.len()..s.tokens.len() / page_size {
        let parent = i
            .checked_sub(1)
            .map_or(ROOT_PAGE_HASH, |prev| s.page_hashes[prev]);
        let tokens = &s.tokens[i * page_size..(i + 1) * page_size];
        let hash = page_hash(parent, tokens);
        for (g, table) in s.tables.iter().enumerate() {
            if let Some(page) = table[i] {
                // Refused when an equal page is already cached: this one stays private.
                pool.register(
                    page,
                    group_page_hash(hash, g),
                    group_page_hash(parent, g),
                    tokens,
                );
            }
        }
        s.page_hashes.push(hash);
    }
}
