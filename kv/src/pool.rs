//! The page pool: where each page is, and how many block tables hold it.
//!
//! A page is in exactly one of three states:
//!
//! ```text
//!            alloc                          release (last holder, unregistered)
//!   Free ─────────────► Held { refs } ──────────────────────────────────────► Free
//!     ▲                  │   ▲
//!     │ alloc evicts     │   │ retain (a prefix hit)
//!     │ (LRU first)      ▼   │
//!     └──────────── Cached   ◄── release (last holder, page registered for prefix reuse)
//! ```
//!
//! Cached pages hold no sequence's data in flight but still hold a prefix someone may ask
//! for again, so they are given out only when the free list is empty, least recently
//! released first. The prefix index lives here because eviction must unregister the page
//! in the same step, or a later lookup would hand out a page that now holds other tokens.

use std::collections::BTreeMap;

use super::prefix::PrefixIndex;
use super::{KvError, PageId};

/// The most pages a pool can hold: page ids are `u32`.
pub use kiln_ir::kv_layout::MAX_KV_PAGES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    Free,
    /// Held by `refs` block-table entries (`refs` > 0).
    Held {
        refs: usize,
    },
    /// Held by no one, registered for prefix reuse. `last_used` orders the LRU list.
    Cached {
        last_used: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagePool {
    states: Vec<PageState>,
    /// Free pages; the last one is handed out next (page 0 first on a fresh pool).
    free: Vec<PageId>,
    /// Cached pages by the time they were released: the first is the least recently used.
    lru: BTreeMap<u64, PageId>,
    /// Stamps the LRU order; bumped on every release into the cache.
    clock: u64,
    prefix: PrefixIndex,
    evictions: u64,
}

impl PagePool {
    pub fn new(kv_page_count: usize) -> Result<Self, KvError> {
        if kv_page_count > MAX_KV_PAGES {
            return Err(KvError::TooManyPages {
                n_pages: kv_page_count,
                max: MAX_KV_PAGES,
            });
        }
        Ok(PagePool {
            states: vec![PageState::Free; kv_page_count],
            free: (0..kv_page_count as u32).rev().map(PageId).collect(),
            lru: BTreeMap::new(),
            clock: 0,
            prefix: PrefixIndex::new(kv_page_count),
            evictions: 0,
        })
    }

    pub fn kv_page_count(&self) -> usize {
        self.states.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn cached_count(&self) -> usize {
        self.lru.len()
    }

    pub fn held_count(&self) -> usize {
        self.kv_page_count() - self.free_count() - self.cached_count()
    }

    /// Pages `alloc` can still hand out: free, or cached and evictable.
    pub fn available(&self) -> usize {
        self.free_count() + self.cached_count()
    }

    /// Cached pages evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// `None` for a page outside the pool.
    pub fn state(&self, page: PageId) -> Option<PageState> {
        self.states.get(page.index()).copied()
    }

    /// Number of holders (0 for free, cached or unknown pages).
    pub fn refcount(&self, page: PageId) -> usize {
        match self.state(page) {
            Some(PageState::Held { refs }) => refs,
            _ => 0,
        }
    }

    /// Whether `page` is in the prefix index (held or cached).
    pub fn is_registered(&self, page: PageId) -> bool {
        self.prefix.is_registered(page)
    }

    /// Takes a free page, or else evicts the least recently used cached one; the caller
    /// holds it with a reference count of 1.
    pub fn alloc(&mut self) -> Result<PageId, KvError> {
        let page = match self.free.pop() {
            Some(page) => page,
            None => {
                let Some((_, page)) = self.lru.pop_first() else {
                    return Err(KvError::OutOfPages {
                        requested: 1,
                        free: 0,
                    });
                };
                self.prefix.unregister(page);
                self.evictions += 1;
                page
            }
        };
        self.states[page.index()] = PageState::Held { refs: 1 };
        Ok(page)
    }

    /// One more holder for a held page, or brings a cached page back into use.
    pub fn retain(&mut self, page: PageId) -> Result<(), KvError> {
        let state = self
            .states
            .get_mut(page.index())
            .ok_or(KvError::PageNotHeld(page))?;
        match *state {
            PageState::Held { refs } => *state = PageState::Held { refs: refs + 1 },
            PageState::Cached { last_used } => {
                self.lru.remove(&last_used);
                *state = PageState::Held { refs: 1 };
            }
            PageState::Free => return Err(KvError::PageNotHeld(page)),
        }
        Ok(())
    }

    /// One holder fewer. The last release caches a registered page and frees any other.
    pub fn release(&mut self, page: PageId) -> Result<(), KvError> {
        let state = self
            .states
            .get_mut(page.index())
            .ok_or(KvError::PageNotHeld(page))?;
        match *state {
            PageState::Held { refs } if refs > 1 => *state = PageState::Held { refs: refs - 1 },
            PageState::Held { .. } if self.prefix.is_registered(page) => {
                self.clock += 1;
                *state = PageState::Cached {
                    last_used: self.clock,
                };
                self.lru.insert(self.clock, page);
            }
            PageState::Held { .. } => {
                *state = PageState::Free;
                self.free.push(page);
            }
            PageState::Free | PageState::Cached { .. } => return Err(KvError::PageNotHeld(page)),
        }
        Ok(())
    }

    /// Offers a held, full page to the prefix cache (see [`PrefixIndex::register`]).
    pub(crate) fn register(
        &mut self,
        page: PageId,
        hash: u64,
        parent: u64,
        tokens: &[u32],
    ) -> bool {
        matches!(self.state(page), Some(PageState::Held { .. }))
            && self.prefix.register(page, hash, parent, tokens)
    }

    /// Takes a held page out of the prefix cache, because its holder is about to overwrite it.
    pub(crate) fn unregister_held(&mut self, page: PageId) {
        if matches!(self.state(page), Some(PageState::Held { .. })) {
            self.prefix.unregister(page);
        }
    }

    pub(crate) fn lookup(&self, hash: u64, parent: u64, tokens: &[u32]) -> Option<PageId> {
        self.prefix.lookup(hash, parent, tokens)
    }

    pub(crate) fn registered_tokens(&self, page: PageId) -> Option<&[u32]> {
        self.prefix.tokens(page)
    }

    /// Checks that every page is in exactly one place and that `refs` equals `holders[page]`
    /// (the number of block-table entries naming each page).
    pub(crate) fn check(&self, holders: &[usize]) -> Result<(), String> {
        if holders.len() != self.states.len() {
            return Err(format!(
                "{} holder counts for {} pages",
                holders.len(),
                self.states.len()
            ));
        }
        let mut on_free_list = vec![false; self.states.len()];
        for &page in &self.free {
            let seen = on_free_list
                .get_mut(page.index())
                .ok_or(format!("{page} outside the pool"))?;
            if std::mem::replace(seen, true) {
                return Err(format!("{page} is twice on the free list"));
            }
        }
        for (&stamp, &page) in &self.lru {
            if self.state(page) != Some(PageState::Cached { last_used: stamp }) {
                return Err(format!(
                    "LRU entry {stamp} names {page}, which is {:?}",
                    self.state(page)
                ));
            }
            if stamp > self.clock {
                return Err(format!(
                    "LRU stamp {stamp} is ahead of the clock {}",
                    self.clock
                ));
            }
        }
        let mut n_cached = 0;
        for (i, (&state, &held_by)) in self.states.iter().zip(holders).enumerate() {
            let page = PageId(i as u32);
            let ok = match state {
                PageState::Free => on_free_list[i] && held_by == 0 && !self.is_registered(page),
                PageState::Held { refs } => !on_free_list[i] && refs > 0 && refs == held_by,
                PageState::Cached { .. } => {
                    n_cached += 1;
                    !on_free_list[i] && held_by == 0 && self.is_registered(page)
                }
            };
            if !ok {
                let registered = self.is_registered(page);
                return Err(format!(
                    "{page} is {state:?} (free list: {}, registered: {registered}) but {held_by} \
                     block-table entries hold it",
                    on_free_list[i]
                ));
            }
        }
        if n_cached != self.lru.len() {
            return Err(format!(
                "{n_cached} cached pages but {} LRU entries",
                self.lru.len()
            ));
        }
        self.prefix.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_hands_out_every_page_then_fails_without_panicking() {
        let mut pool = PagePool::new(3).unwrap();
        let pages: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        assert_eq!(pages, [PageId(0), PageId(1), PageId(2)]);
        assert_eq!(
            pool.alloc(),
            Err(KvError::OutOfPages {
                requested: 1,
                free: 0
            })
        );
        assert_eq!(pool.held_count(), 3);
        pool.release(PageId(1)).unwrap();
        assert_eq!(pool.alloc(), Ok(PageId(1)));
        pool.check(&[1, 1, 1]).unwrap();
    }

    #[test]
    fn refcounts_go_up_and_down() {
        let mut pool = PagePool::new(2).unwrap();
        let p = pool.alloc().unwrap();
        pool.retain(p).unwrap();
        assert_eq!(pool.refcount(p), 2);
        pool.release(p).unwrap();
        assert_eq!(pool.state(p), Some(PageState::Held { refs: 1 }));
        pool.release(p).unwrap();
        assert_eq!(pool.state(p), Some(PageState::Free));
        assert_eq!(pool.release(p), Err(KvError::PageNotHeld(p)));
        assert_eq!(pool.retain(p), Err(KvError::PageNotHeld(p)));
        assert_eq!(pool.retain(PageId(9)), Err(KvError::PageNotHeld(PageId(9))));
        pool.check(&[0, 0]).unwrap();
    }

    #[test]
    fn registered_pages_are_cached_then_evicted_least_recently_used_first() {
        let mut pool = PagePool::new(3).unwrap();
        let pages: Vec<_> = (0..3).map(|_| pool.alloc().unwrap()).collect();
        for (i, &p) in pages.iter().enumerate() {
            assert!(pool.register(p, i as u64, 0, &[i as u32]));
        }
        for &p in [pages[1], pages[0], pages[2]].iter() {
            pool.release(p).unwrap();
        }
        assert_eq!((pool.free_count(), pool.cached_count()), (0, 3));
        pool.check(&[0, 0, 0]).unwrap();
        // A hit on page 1 takes it out of the LRU list, so page 0 is the oldest.
        pool.retain(pages[1]).unwrap();
        assert_eq!(pool.alloc(), Ok(pages[0]));
        assert!(
            !pool.is_registered(pages[0]),
            "evicted pages leave the prefix index"
        );
        assert_eq!(pool.lookup(0, 0, &[0]), None);
        assert_eq!(pool.alloc(), Ok(pages[2]));
        assert_eq!(pool.evictions(), 2);
        assert_eq!(
            pool.alloc(),
            Err(KvError::OutOfPages {
                requested: 1,
                free: 0
            })
        );
        pool.check(&[1, 1, 1]).unwrap();
    }

    #[test]
    fn oversized_pools_are_an_error() {
        if let Some(too_many) = MAX_KV_PAGES.checked_add(1) {
            assert!(matches!(
                PagePool::new(too_many),
                Err(KvError::TooManyPages { .. })
            ));
        }
        assert_eq!(
            PagePool::new(0).unwrap().alloc(),
            Err(KvError::OutOfPages {
                requested: 1,
                free: 0
            })
        );
    }
}
