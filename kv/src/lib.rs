//! The paged KV cache: page pool, block tables, prefix sharing.
//!
//! This module owns page *indices* and metadata only; the bytes of the pages live in a
//! backend (CPU memory or GPU buffers), laid out as [`KvLayout`] documents. The split:
//!
//! - `kiln_ir::kv_layout`: the geometry of one page: [`KvLayout`], [`KvDtype`], byte offsets for kernels.
//! - [`pool`]: [`PagePool`]: where every page is (free, held by sequences, or cached), with
//!   reference counts, a free list and the LRU of cached pages.
//! - [`prefix`]: the chained page hash and the index from hash to cached page.
//! - [`manager`]: [`KvManager`]: sequences, their block tables, copy-on-write, prefix reuse.
//!
//! # Invariants (checked after every operation by the property tests)
//!
//! - Every page is in exactly one state: on the free list, held (reference count > 0,
//!   the count equal to the number of block-table entries naming it), or cached (count 0,
//!   registered in the prefix index, in the LRU list).
//! - A sequence has one block table per KV group (layers that attend alike; see
//!   `kiln_ir::kv_groups`). Each has exactly `ceil(len / kv_page_size)` entries; position `i`
//!   lives in page `block_table[i / kv_page_size]` at offset `i % kv_page_size`.
//! - A full-attention group holds every page. A sliding-window group of window `W` holds
//!   exactly the pages from the one holding position `a + 1 − W` on, `a` being where the
//!   last append started: the earlier ones, which no query of that append or after it can
//!   read, went back to the pool when it began (their entries are None).
//! - A page is written only by a sequence that holds it alone and while it is not in the
//!   prefix cache; anything else is copied first ([`PageCopy`]).
//! - A failed call changes nothing (no page leaked, no sequence half-updated).
//!
//! # Contract with the backend
//!
//! [`KvManager::append`] returns an [`Appended`]: first execute every [`PageCopy`] of the
//! step, then write the new tokens' K/V into the [`Slot`]s. Copies come first across the
//! whole step, not just per sequence: the source of a copy may be handed to another sequence
//! by a later `append` of the same step. A full page is registered in the prefix cache as
//! soon as `append` fills it, so the forward pass that writes its bytes must run before any
//! other sequence's step reads it (the scheduler runs a step's appends and its forward pass
//! together, so a prefix hit in a later step always sees written bytes).

pub mod manager;
pub mod pool;
pub mod prefix;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;

pub use kiln_ir::kv_groups::KvGroups;
pub use kiln_ir::kv_layout::{
    DEFAULT_KV_PAGE_SIZE, KV_REGION_ALIGN, KvDtype, KvLayout, KvLayoutError,
};
pub use manager::KvManager;
pub use pool::{MAX_KV_PAGES, PagePool, PageState};

/// Index of a page in the pool (and in the backend's page buffer). 32 bits because block
/// tables are handed to kernels as `u32` arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u32);

impl PageId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

/// A sequence handle. Ids are never reused, so a stale id is an error, not another sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqId(u64);

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.0)
    }
}

/// Where one token's K/V goes: `offset` tokens into `page`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub page: PageId,
    pub offset: usize,
}

impl Slot {
    /// The slot as one index into the whole cache, `page * kv_page_size + offset` (the "slot
    /// mapping" a KV-write kernel takes).
    pub fn flat_index(self, kv_page_size: usize) -> usize {
        self.page.index() * kv_page_size + self.offset
    }
}

/// Copy the first `n_tokens` token slots of page `src` into page `dst` (K, V and scales of
/// every layer). Copying the whole page is also correct: the rest of `dst` is about to be
/// overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageCopy {
    pub src: PageId,
    pub dst: PageId,
    pub n_tokens: usize,
}

/// What [`KvManager::append`] reserved. Execute `copies` (all of the step's, before any
/// write), then write token `i`'s K/V of the layers of group `g` into `slots[g][i]`.
#[must_use = "execute every PageCopy before writing the new tokens into their slots"]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub copies: Vec<PageCopy>,
    /// (groups, tokens)
    pub slots: Vec<Vec<Slot>>,
}

/// What an append would do to the pool: pages it takes (new pages and copies) and pages it
/// gives back first (window pages this sequence alone held).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendCost {
    pub take: usize,
    pub give_back: usize,
}

impl AppendCost {
    /// Pages the pool loses, net.
    pub fn net(&self) -> usize {
        self.take.saturating_sub(self.give_back)
    }
}

/// A snapshot of the cache's occupancy and prefix-cache effectiveness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    pub kv_page_count: usize,
    pub pages_free: usize,
    /// Held by at least one sequence.
    pub pages_in_use: usize,
    /// Held by no sequence but kept for prefix reuse; evicted when the free list runs out.
    pub pages_cached: usize,
    pub pages_evicted: u64,
    pub sequences: usize,
    /// Calls to [`KvManager::create_sequence_with_prefix`].
    pub prefix_lookups: u64,
    /// Lookups that reused at least one page.
    pub prefix_hits: u64,
    /// Prompt tokens passed to lookups, and how many of them came from the cache.
    pub prefix_prompt_tokens: u64,
    pub prefix_cached_tokens: u64,
}

impl KvStats {
    /// Fraction of lookups that reused at least one page (0 before any lookup).
    pub fn prefix_hit_rate(&self) -> f64 {
        ratio(self.prefix_hits, self.prefix_lookups)
    }

    /// Fraction of prompt tokens served from the cache instead of being recomputed.
    pub fn prefix_token_hit_rate(&self) -> f64 {
        ratio(self.prefix_cached_tokens, self.prefix_prompt_tokens)
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not enough free or evictable pages; the scheduler should wait, preempt or reject.
    #[error("out of KV pages: {requested} needed, {free} free or evictable")]
    OutOfPages { requested: usize, free: usize },
    #[error("unknown KV sequence ({0}): never created, or already freed")]
    UnknownSequence(SeqId),
    #[error("cannot truncate {seq} to {n} tokens: it holds {len}")]
    TruncatePastEnd { seq: SeqId, len: usize, n: usize },
    #[error("{0} is not held by any sequence (or is outside the pool)")]
    PageNotHeld(PageId),
    #[error(transparent)]
    BadLayout(#[from] KvLayoutError),
    #[error("{n_pages} KV pages requested: page ids are 32-bit, at most {max}")]
    TooManyPages { n_pages: usize, max: usize },
    #[error("bad sliding windows for the KV groups: {0}")]
    BadWindows(String),
    #[error("KV group {group} of {n_groups}")]
    UnknownGroup { group: usize, n_groups: usize },
    #[error(
        "cannot truncate {seq} to {n} tokens: pages its sliding window needs there went back to the pool"
    )]
    WindowReleased { seq: SeqId, n: usize },
}
