//! Prefix sharing: a full page is named by a chained hash of the tokens it holds.
//!
//! The hash of page `i` covers the hash of page `i - 1` and page `i`'s tokens, so it stands
//! for the whole prefix up to the end of the page: two pages with equal tokens at different
//! positions (or after different prefixes) get different names. The hash is FNV-1a 64 (fixed,
//! so names are stable across runs and builds). A 64-bit hash can still collide, so the index
//! also keeps each page's tokens and its parent's hash and compares them on every hit.

use std::collections::HashMap;

use super::PageId;

/// The chain hash of the (empty) prefix before the first page: the seed of every chain.
pub const ROOT_PAGE_HASH: u64 = FNV_OFFSET_BASIS;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The chain hash of a page holding `tokens` after a prefix whose hash is `parent`.
pub fn page_hash(parent: u64, tokens: &[u32]) -> u64 {
    let bytes = parent
        .to_le_bytes()
        .into_iter()
        .chain(tokens.iter().flat_map(|t| t.to_le_bytes()));
    bytes.fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The name of KV group `group`'s page whose chain hash is `hash`: the chain hash itself
/// for group 0, a hash of it and the group for the others (the groups' pages of one prefix
/// hold different layers).
pub fn group_page_hash(hash: u64, group: usize) -> u64 {
    if group == 0 {
        return hash;
    }
    let bytes = hash
        .to_le_bytes()
        .into_iter()
        .chain(b"kv group".iter().copied())
        .chain((group as u64).to_le_bytes());
    bytes.fold(FNV_OFFSET_BASIS, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// What a registered page holds, kept to rule out hash collisions on lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PrefixEntry {
    hash: u64,
    parent: u64,
    tokens: Box<[u32]>,
}

/// Hash → page for every registered (full, immutable) page. It says nothing about reference
/// counts: [`super::PagePool`] owns it and decides when a page leaves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PrefixIndex {
    by_hash: HashMap<u64, PageId>,
    /// Indexed by page id; `Some` exactly for the pages in `by_hash`.
    by_page: Vec<Option<PrefixEntry>>,
}

impl PrefixIndex {
    pub(crate) fn new(kv_page_count: usize) -> Self {
        PrefixIndex {
            by_hash: HashMap::new(),
            by_page: vec![None; kv_page_count],
        }
    }

    pub(crate) fn is_registered(&self, page: PageId) -> bool {
        matches!(self.by_page.get(page.index()), Some(Some(_)))
    }

    /// Registers `page` as holding `tokens` after the prefix `parent`, under `hash`. Returns
    /// false and changes nothing when the page is already registered or the hash already
    /// names another page (the same prefix computed twice, or a collision): the first page
    /// keeps the name, the other stays private to its sequence.
    pub(crate) fn register(
        &mut self,
        page: PageId,
        hash: u64,
        parent: u64,
        tokens: &[u32],
    ) -> bool {
        let Some(entry @ None) = self.by_page.get_mut(page.index()) else {
            return false;
        };
        if self.by_hash.contains_key(&hash) {
            return false;
        }
        self.by_hash.insert(hash, page);
        *entry = Some(PrefixEntry {
            hash,
            parent,
            tokens: tokens.into(),
        });
        true
    }

    /// The page registered under `hash`, if it really holds `tokens` after `parent`.
    pub(crate) fn lookup(&self, hash: u64, parent: u64, tokens: &[u32]) -> Option<PageId> {
        let page = *self.by_hash.get(&hash)?;
        let entry = self.by_page.get(page.index())?.as_ref()?;
        (entry.parent == parent && *entry.tokens == *tokens).then_some(page)
    }

    /// Forgets `page`; returns whether it was registered.
    pub(crate) fn unregister(&mut self, page: PageId) -> bool {
        let Some(entry) = self.by_page.get_mut(page.index()).and_then(Option::take) else {
            return false;
        };
        self.by_hash.remove(&entry.hash);
        true
    }

    /// The tokens a registered page holds.
    pub(crate) fn tokens(&self, page: PageId) -> Option<&[u32]> {
        Some(&self.by_page.get(page.index())?.as_ref()?.tokens)
    }

    /// `by_hash` and `by_page` describe the same set of pages.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (&hash, &page) in &self.by_hash {
            match self.by_page.get(page.index()) {
                Some(Some(entry)) if entry.hash == hash => {}
                _ => {
                    return Err(format!(
                        "hash {hash:#x} names {page}, whose entry disagrees"
                    ));
                }
            }
        }
        let n_entries = self.by_page.iter().flatten().count();
        if n_entries != self.by_hash.len() {
            return Err(format!(
                "{n_entries} page entries but {} hashes",
                self.by_hash.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
        let fnv = |bytes: &[u8]| {
            bytes.iter().fold(FNV_OFFSET_BASIS, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
            })
        };
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_hash_depends_on_the_prefix_not_only_the_tokens() {
        let first = page_hash(ROOT_PAGE_HASH, &[1, 2]);
        let second = page_hash(first, &[1, 2]);
        assert_ne!(first, second);
        assert_ne!(
            page_hash(ROOT_PAGE_HASH, &[1, 2]),
            page_hash(ROOT_PAGE_HASH, &[2, 1])
        );
        assert_eq!(page_hash(ROOT_PAGE_HASH, &[1, 2]), first);
    }

    #[test]
    fn lookup_finds_registered_pages() {
        let mut index = PrefixIndex::new(4);
        let h = page_hash(ROOT_PAGE_HASH, &[7, 8]);
        assert!(index.register(PageId(2), h, ROOT_PAGE_HASH, &[7, 8]));
        assert_eq!(index.lookup(h, ROOT_PAGE_HASH, &[7, 8]), Some(PageId(2)));
        assert_eq!(index.tokens(PageId(2)), Some(&[7, 8][..]));
        assert!(index.unregister(PageId(2)));
        assert_eq!(index.lookup(h, ROOT_PAGE_HASH, &[7, 8]), None);
        assert!(!index.unregister(PageId(2)));
        index.check().unwrap();
    }

    /// Two different pages that land on the same 64-bit hash: the stored tokens (and the
    /// parent hash) tell them apart, and the second cannot take the first one's name.
    #[test]
    fn a_hash_collision_is_not_a_hit() {
        let mut index = PrefixIndex::new(4);
        let forged = 0x1234_5678_9abc_def0;
        assert!(index.register(PageId(0), forged, ROOT_PAGE_HASH, &[1, 2, 3]));
        assert_eq!(index.lookup(forged, ROOT_PAGE_HASH, &[1, 2, 4]), None);
        assert_eq!(
            index.lookup(forged, 99, &[1, 2, 3]),
            None,
            "same tokens, other prefix"
        );
        assert_eq!(
            index.lookup(forged, ROOT_PAGE_HASH, &[1, 2, 3]),
            Some(PageId(0))
        );
        assert!(!index.register(PageId(1), forged, ROOT_PAGE_HASH, &[1, 2, 4]));
        assert!(!index.is_registered(PageId(1)));
        index.check().unwrap();
    }

    #[test]
    fn registering_twice_or_outside_the_pool_changes_nothing() {
        let mut index = PrefixIndex::new(2);
        assert!(index.register(PageId(0), 1, ROOT_PAGE_HASH, &[1]));
        assert!(!index.register(PageId(0), 2, ROOT_PAGE_HASH, &[2]));
        assert!(!index.register(PageId(5), 3, ROOT_PAGE_HASH, &[3]));
        assert_eq!(index.by_hash.len(), 1);
        index.check().unwrap();
    }
}
