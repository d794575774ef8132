//! Exact behaviour of the manager: copy-on-write, prefix reuse, eviction order, truncation,
//! all-or-nothing failures. Random operation sequences are in `proptests.rs`.

use super::*;

/// A manager whose pages hold `kv_page_size` tokens of a one-layer, one-head model: the
/// geometry does not matter to the bookkeeping.
fn manager(kv_page_size: usize, kv_page_count: usize) -> KvManager {
    let layout = KvLayout::new(1, 1, 8)
        .and_then(|l| l.with_kv_page_size(kv_page_size))
        .unwrap();
    KvManager::new(layout, kv_page_count).unwrap()
}

fn slot(page: u32, offset: usize) -> Slot {
    Slot {
        page: PageId(page),
        offset,
    }
}

fn pages(ids: &[u32]) -> Vec<PageId> {
    ids.iter().map(|&i| PageId(i)).collect()
}

/// Group 0's table of a sequence that holds all its pages.
fn table(kv: &KvManager, seq: SeqId) -> Vec<PageId> {
    kv.block_table(seq, 0)
        .unwrap()
        .iter()
        .map(|p| p.expect("a held page"))
        .collect()
}

fn append(kv: &mut KvManager, seq: SeqId, tokens: &[u32]) -> Appended {
    let appended = kv.append(seq, tokens).unwrap();
    kv.check_invariants().unwrap();
    appended
}

#[test]
fn append_reserves_one_slot_per_token_and_pages_as_needed() {
    let mut kv = manager(4, 8);
    let s = kv.create_sequence();
    assert_eq!(table(&kv, s), pages(&[]));
    let a = append(&mut kv, s, &[1, 2, 3, 4, 5]);
    assert!(a.copies.is_empty());
    assert_eq!(
        a.slots[0],
        [slot(0, 0), slot(0, 1), slot(0, 2), slot(0, 3), slot(1, 0)]
    );
    assert_eq!(
        append(&mut kv, s, &[6, 7, 8]).slots[0],
        [slot(1, 1), slot(1, 2), slot(1, 3)]
    );
    assert_eq!(append(&mut kv, s, &[9]).slots[0], [slot(2, 0)]);
    assert_eq!(table(&kv, s), pages(&[0, 1, 2]));
    assert_eq!(kv.len(s).unwrap(), 9);
    assert_eq!(kv.tokens(s).unwrap(), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(slot(2, 0).flat_index(4), 8);
    let stats = kv.stats();
    assert_eq!(
        (stats.pages_in_use, stats.pages_free, stats.pages_cached),
        (3, 5, 0)
    );
}

#[test]
fn appending_nothing_takes_nothing_even_on_a_shared_page() {
    let mut kv = manager(4, 4);
    let a = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2]);
    let b = kv.fork(a).unwrap();
    let before = kv.clone();
    assert_eq!(kv.append(b, &[]), Ok(Appended::default()));
    assert_eq!(kv, before);
}

#[test]
fn a_shared_partial_page_is_copied_before_it_is_written() {
    let mut kv = manager(4, 8);
    let parent = kv.create_sequence();
    let _ = append(&mut kv, parent, &[1, 2, 3, 4, 5, 6]);
    let child = kv.fork(parent).unwrap();
    kv.check_invariants().unwrap();
    assert_eq!(table(&kv, child), pages(&[0, 1]));
    assert_eq!(
        (kv.pool().refcount(PageId(0)), kv.pool().refcount(PageId(1))),
        (2, 2)
    );
    assert_eq!(kv.pages_needed(child, 1), Ok(1));

    let a = append(&mut kv, child, &[7]);
    assert_eq!(
        a.copies,
        [PageCopy {
            src: PageId(1),
            dst: PageId(2),
            n_tokens: 2
        }]
    );
    assert_eq!(a.slots[0], [slot(2, 2)]);
    assert_eq!(table(&kv, child), pages(&[0, 2]));
    assert_eq!(table(&kv, parent), pages(&[0, 1]));
    assert_eq!(
        (kv.pool().refcount(PageId(0)), kv.pool().refcount(PageId(1))),
        (2, 1)
    );

    // The parent now holds page 1 alone and writes it in place.
    let a = append(&mut kv, parent, &[8]);
    assert!(a.copies.is_empty());
    assert_eq!(a.slots[0], [slot(1, 2)]);
}

#[test]
fn shared_full_pages_need_no_copy() {
    let mut kv = manager(4, 8);
    let parent = kv.create_sequence();
    let _ = append(&mut kv, parent, &[1, 2, 3, 4]);
    let child = kv.fork(parent).unwrap();
    let a = append(&mut kv, child, &[5]);
    assert!(a.copies.is_empty());
    assert_eq!(a.slots[0], [slot(1, 0)]);
}

#[test]
fn a_copy_that_finds_no_page_changes_nothing() {
    let mut kv = manager(4, 2);
    let parent = kv.create_sequence();
    let _ = append(&mut kv, parent, &[1, 2, 3, 4, 5, 6]);
    let child = kv.fork(parent).unwrap();
    let before = kv.clone();
    assert_eq!(
        kv.append(child, &[7]),
        Err(KvError::OutOfPages {
            requested: 1,
            free: 0
        })
    );
    assert_eq!(kv, before);
}

#[test]
fn a_failed_append_changes_nothing_and_leaks_nothing() {
    let mut kv = manager(2, 4);
    let a = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2, 3, 4]);
    let b = kv.create_sequence();
    let _ = append(&mut kv, b, &[9]);
    let before = kv.clone();
    // Two more pages needed, one free.
    assert_eq!(
        kv.append(b, &[9, 9, 9, 9]),
        Err(KvError::OutOfPages {
            requested: 2,
            free: 1
        })
    );
    assert_eq!(kv, before);
    assert_eq!(
        append(&mut kv, b, &[9, 9, 9]).slots[0],
        [slot(2, 1), slot(3, 0), slot(3, 1)]
    );
}

#[test]
fn the_prefix_survives_its_sequence_and_is_reused() {
    let mut kv = manager(4, 8);
    let prompt: Vec<u32> = (1..=10).collect();
    let (a, cached) = kv.create_sequence_with_prefix(&prompt);
    assert_eq!(cached, 0);
    let _ = append(&mut kv, a, &prompt);
    assert_eq!(table(&kv, a), pages(&[0, 1, 2]));
    kv.free(a).unwrap();
    kv.check_invariants().unwrap();
    // The two full pages stay cached; the partial one is free.
    let stats = kv.stats();
    assert_eq!(
        (stats.pages_in_use, stats.pages_cached, stats.pages_free),
        (0, 2, 6)
    );

    let (b, cached) = kv.create_sequence_with_prefix(&prompt);
    assert_eq!(cached, 8);
    assert_eq!(table(&kv, b), pages(&[0, 1]));
    assert_eq!(kv.tokens(b).unwrap(), &prompt[..8]);
    let a = append(&mut kv, b, &prompt[8..]);
    assert!(a.copies.is_empty());
    assert_eq!(a.slots[0], [slot(2, 0), slot(2, 1)]);

    let stats = kv.stats();
    assert_eq!((stats.pages_in_use, stats.pages_cached), (3, 0));
    assert_eq!((stats.prefix_lookups, stats.prefix_hits), (2, 1));
    assert_eq!(
        (stats.prefix_prompt_tokens, stats.prefix_cached_tokens),
        (20, 8)
    );
    assert_eq!(stats.prefix_hit_rate(), 0.5);
    assert_eq!(stats.prefix_token_hit_rate(), 0.4);
}

#[test]
fn live_sequences_share_their_prefix_pages() {
    let mut kv = manager(4, 8);
    let prompt = [5, 5, 5, 5, 6, 6, 6, 6, 7];
    let (a, _) = kv.create_sequence_with_prefix(&prompt);
    let _ = append(&mut kv, a, &prompt);
    let (b, cached) = kv.create_sequence_with_prefix(&prompt);
    assert_eq!(cached, 8);
    assert_eq!(
        (kv.pool().refcount(PageId(0)), kv.pool().refcount(PageId(1))),
        (2, 2)
    );
    let _ = append(&mut kv, b, &prompt[cached..]);
    assert_eq!(table(&kv, b), pages(&[0, 1, 3]));
}

#[test]
fn cached_prefix_peeks_without_taking_or_counting() {
    let mut kv = manager(4, 8);
    let prompt = [5, 5, 5, 5, 6, 6, 6, 6, 7];
    assert!(kv.cached_prefix(&prompt).is_empty());
    let (a, _) = kv.create_sequence_with_prefix(&prompt);
    let _ = append(&mut kv, a, &prompt);
    let before = kv.stats();
    assert_eq!(kv.cached_prefix(&prompt), pages(&[0, 1]));
    assert_eq!(kv.cached_prefix(&prompt[..8]), pages(&[0])); // one token short of the whole
    assert_eq!(kv.cached_prefix(&[5, 5, 5, 9, 6]), pages(&[]));
    assert_eq!(kv.stats(), before);
    assert_eq!(kv.pool().refcount(PageId(0)), 1);
}

#[test]
fn a_whole_prompt_hit_still_leaves_the_last_token_to_compute() {
    let mut kv = manager(4, 8);
    let prompt = [1, 2, 3, 4, 5, 6, 7, 8];
    let (a, _) = kv.create_sequence_with_prefix(&prompt);
    let _ = append(&mut kv, a, &prompt);
    let (_, cached) = kv.create_sequence_with_prefix(&prompt);
    assert_eq!(cached, 4);
    let (_, cached) = kv.create_sequence_with_prefix(&prompt[..1]);
    assert_eq!(cached, 0);
    let (_, cached) = kv.create_sequence_with_prefix(&[]);
    assert_eq!(cached, 0);
}

#[test]
fn equal_pages_after_different_prefixes_do_not_match() {
    let mut kv = manager(4, 8);
    let prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    let (a, _) = kv.create_sequence_with_prefix(&prompt);
    let _ = append(&mut kv, a, &prompt);
    assert_eq!(
        kv.create_sequence_with_prefix(&[0, 0, 0, 0, 5, 6, 7, 8, 9])
            .1,
        0
    );
    assert_eq!(
        kv.create_sequence_with_prefix(&[1, 2, 3, 4, 0, 0, 0, 0, 9])
            .1,
        4
    );
    assert_eq!(kv.create_sequence_with_prefix(&[5, 6, 7, 8, 1]).1, 0);
    kv.check_invariants().unwrap();
}

#[test]
fn a_page_computed_twice_is_cached_once() {
    let mut kv = manager(4, 4);
    let a = kv.create_sequence();
    let b = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2, 3, 4]);
    let _ = append(&mut kv, b, &[1, 2, 3, 4]);
    assert!(kv.pool().is_registered(PageId(0)));
    assert!(
        !kv.pool().is_registered(PageId(1)),
        "the first page keeps the name"
    );
    kv.free(b).unwrap();
    kv.free(a).unwrap();
    let stats = kv.stats();
    assert_eq!((stats.pages_cached, stats.pages_free), (1, 3));
    kv.check_invariants().unwrap();
}

#[test]
fn cached_pages_are_evicted_least_recently_used_first() {
    let mut kv = manager(2, 4);
    let prompts = [[10, 11], [20, 21], [30, 31]];
    let ids: Vec<SeqId> = prompts
        .iter()
        .map(|p| {
            let s = kv.create_sequence();
            let _ = append(&mut kv, s, p);
            s
        })
        .collect();
    for &s in &ids {
        kv.free(s).unwrap(); // pages 0, 1, 2 cached in that order; page 3 free
    }
    // A hit on page 1 and a release make it the most recent: the order is now 0, 2, 1.
    let (b, cached) = kv.create_sequence_with_prefix(&[20, 21, 99]);
    assert_eq!(cached, 2);
    kv.free(b).unwrap();

    let d = kv.create_sequence();
    let a = append(&mut kv, d, &[1, 2, 3, 4, 5, 6]);
    let used: Vec<PageId> = a.slots[0].iter().step_by(2).map(|s| s.page).collect();
    assert_eq!(
        used,
        pages(&[3, 0, 2]),
        "the free page first, then the oldest cached"
    );
    assert_eq!(kv.stats().pages_evicted, 2);
    assert_eq!(
        kv.create_sequence_with_prefix(&[10, 11, 99]).1,
        0,
        "evicted"
    );
    assert_eq!(
        kv.create_sequence_with_prefix(&[30, 31, 99]).1,
        0,
        "evicted"
    );
    assert_eq!(
        kv.create_sequence_with_prefix(&[20, 21, 99]).1,
        2,
        "still cached"
    );
    kv.check_invariants().unwrap();
}

#[test]
fn a_freed_prefix_loses_its_tail_before_its_head() {
    let mut kv = manager(2, 3);
    let s = kv.create_sequence();
    let _ = append(&mut kv, s, &[1, 2, 3, 4, 5, 6]);
    kv.free(s).unwrap();
    let e = kv.create_sequence();
    assert_eq!(
        append(&mut kv, e, &[7, 8]).slots[0][0].page,
        PageId(2),
        "the last page goes first"
    );
    assert_eq!(kv.create_sequence_with_prefix(&[1, 2, 3, 4, 5, 6, 7]).1, 4);
}

#[test]
fn cached_pages_count_as_available_for_append() {
    let mut kv = manager(2, 3);
    let a = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2, 3, 4]);
    kv.free(a).unwrap();
    let b = kv.create_sequence();
    assert_eq!(kv.pages_needed(b, 6), Ok(3));
    let _ = append(&mut kv, b, &[9, 9, 9, 9, 9, 9]);
    assert_eq!(kv.stats().pages_evicted, 2);
}

#[test]
fn truncate_releases_whole_pages_past_the_end() {
    let mut kv = manager(4, 8);
    let s = kv.create_sequence();
    let _ = append(&mut kv, s, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    kv.truncate(s, 5).unwrap();
    kv.check_invariants().unwrap();
    assert_eq!(table(&kv, s), pages(&[0, 1]));
    assert_eq!(kv.tokens(s).unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(
        kv.truncate(s, 6),
        Err(KvError::TruncatePastEnd {
            seq: s,
            len: 5,
            n: 6
        })
    );
    assert_eq!(append(&mut kv, s, &[60]).slots[0], [slot(1, 1)]);
    kv.truncate(s, 4).unwrap();
    assert_eq!(table(&kv, s), pages(&[0]));
    kv.truncate(s, 0).unwrap();
    assert_eq!(table(&kv, s), pages(&[]));
    kv.check_invariants().unwrap();
    assert_eq!(kv.stats().pages_in_use, 0);
}

#[test]
fn writing_into_a_cached_page_after_truncate_unregisters_it() {
    let mut kv = manager(4, 4);
    let s = kv.create_sequence();
    let _ = append(&mut kv, s, &[1, 2, 3, 4, 5, 6, 7, 8]);
    kv.truncate(s, 6).unwrap();
    assert!(
        kv.pool().is_registered(PageId(1)),
        "still holds 5 6 7 8 until written"
    );
    let a = append(&mut kv, s, &[99]);
    assert!(a.copies.is_empty(), "held alone: written in place");
    assert_eq!(a.slots[0], [slot(1, 2)]);
    assert!(!kv.pool().is_registered(PageId(1)));
    assert_eq!(
        kv.create_sequence_with_prefix(&[1, 2, 3, 4, 5, 6, 7, 8, 0])
            .1,
        4
    );
}

#[test]
fn a_truncated_shared_page_is_copied_before_it_is_written() {
    let mut kv = manager(4, 4);
    let a = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let b = kv.fork(a).unwrap();
    kv.truncate(b, 6).unwrap();
    let appended = append(&mut kv, b, &[99]);
    assert_eq!(
        appended.copies,
        [PageCopy {
            src: PageId(1),
            dst: PageId(2),
            n_tokens: 2
        }]
    );
    assert_eq!(table(&kv, a), pages(&[0, 1]));
    assert!(kv.pool().is_registered(PageId(1)));
}

/// Speculative decoding: guesses fill pages (which `append` registers), most are
/// rejected, and the rollback must leave neither a cached page of rejected tokens nor a
/// registration on the kept partial page.
#[test]
fn rollback_forgets_rejected_guesses_entirely() {
    let mut kv = manager(4, 8);
    let s = kv.create_sequence();
    let _ = append(&mut kv, s, &[1, 2, 3]);
    // One accepted token (4), then six rejected guesses filling pages 0 and 1.
    let _ = append(&mut kv, s, &[4, 50, 51, 52, 53, 54, 55]);
    assert!(kv.pool().is_registered(PageId(0)) && kv.pool().is_registered(PageId(1)));
    kv.rollback(s, 5).unwrap();
    kv.check_invariants().unwrap();
    assert_eq!(kv.tokens(s).unwrap(), [1, 2, 3, 4, 50]);
    assert!(kv.pool().is_registered(PageId(0)), "1 2 3 4 were accepted");
    assert!(
        !kv.pool().is_registered(PageId(1)),
        "the kept partial page named rejected tokens"
    );
    let stats = kv.stats();
    assert_eq!(
        (stats.pages_in_use, stats.pages_cached, stats.pages_free),
        (2, 0, 6)
    );
    // A whole page of guesses goes back to the free list, not to the prefix cache.
    let _ = append(&mut kv, s, &[60, 61, 62, 63, 64, 65]);
    kv.rollback(s, 6).unwrap();
    kv.check_invariants().unwrap();
    assert_eq!(kv.stats().pages_cached, 0);
    assert_eq!(kv.stats().pages_free, 6);
    // Rolling back into nothing, and past the end.
    assert_eq!(
        kv.rollback(s, 7),
        Err(KvError::TruncatePastEnd {
            seq: s,
            len: 6,
            n: 7
        })
    );
    kv.rollback(s, 0).unwrap();
    assert_eq!(kv.stats().pages_free, 8);
    // truncate, by contrast, keeps what it drops cached (preemption wants it back).
    let _ = append(&mut kv, s, &[1, 2, 3, 4, 5]);
    kv.truncate(s, 0).unwrap();
    assert_eq!(kv.stats().pages_cached, 1);
}

#[test]
fn rollback_of_a_shared_page_only_releases_it() {
    let mut kv = manager(4, 8);
    let a = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let b = kv.fork(a).unwrap();
    kv.rollback(b, 2).unwrap();
    kv.check_invariants().unwrap();
    assert!(
        kv.pool().is_registered(PageId(0)) && kv.pool().is_registered(PageId(1)),
        "a still holds both pages: they stay named"
    );
    assert_eq!(table(&kv, b), pages(&[0]));
    let appended = append(&mut kv, b, &[9]);
    assert_eq!(appended.copies.len(), 1, "the shared page is copied first");
    assert_eq!(kv.tokens(a).unwrap(), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        kv.rollback(b, 9),
        Err(KvError::TruncatePastEnd {
            seq: b,
            len: 3,
            n: 9
        })
    );
    kv.free(b).unwrap();
    assert_eq!(kv.rollback(b, 0), Err(KvError::UnknownSequence(b)));
}

#[test]
fn unknown_sequences_are_errors() {
    let mut kv = manager(4, 4);
    let s = kv.create_sequence();
    kv.free(s).unwrap();
    let unknown = Err(KvError::UnknownSequence(s));
    assert_eq!(kv.free(s), unknown);
    assert_eq!(kv.append(s, &[1]), Err(KvError::UnknownSequence(s)));
    assert_eq!(kv.fork(s), Err(KvError::UnknownSequence(s)));
    assert_eq!(kv.truncate(s, 0), unknown);
    assert_eq!(kv.block_table(s, 0), Err(KvError::UnknownSequence(s)));
    assert_eq!(kv.len(s), Err(KvError::UnknownSequence(s)));
    assert_eq!(kv.tokens(s), Err(KvError::UnknownSequence(s)));
    assert_eq!(kv.pages_needed(s, 1), Err(KvError::UnknownSequence(s)));
    assert!(!kv.contains(s));
    assert_ne!(kv.create_sequence(), s, "ids are not reused");
}

#[test]
fn an_empty_pool_refuses_appends_cleanly() {
    let mut kv = manager(4, 0);
    let s = kv.create_sequence();
    assert_eq!(
        kv.append(s, &[1]),
        Err(KvError::OutOfPages {
            requested: 1,
            free: 0
        })
    );
    assert_eq!(kv.create_sequence_with_prefix(&[1, 2, 3, 4, 5]).1, 0);
    kv.check_invariants().unwrap();
}

#[test]
fn a_budget_sizes_the_pool() {
    let layout = KvLayout::new(30, 3, 64).unwrap();
    let kv = KvManager::with_budget(layout, 100 * layout.page_bytes() + 1).unwrap();
    assert_eq!(kv.pool().kv_page_count(), 100);
    assert_eq!(kv.stats().pages_free, 100);
}

/// A manager of two groups: group 0 full attention, group 1 a window of `window`.
fn windowed(kv_page_size: usize, kv_page_count: usize, window: usize) -> KvManager {
    let layout = KvLayout::new(1, 1, 8)
        .and_then(|l| l.with_kv_page_size(kv_page_size))
        .and_then(|l| l.with_groups(2))
        .unwrap();
    KvManager::new(layout, kv_page_count)
        .and_then(|kv| kv.with_windows(&[None, Some(window)]))
        .unwrap()
}

fn held(kv: &KvManager, seq: SeqId, group: usize) -> Vec<Option<u32>> {
    kv.block_table(seq, group)
        .unwrap()
        .iter()
        .map(|p| p.map(|p| p.0))
        .collect()
}

#[test]
fn window_pages_go_back_to_the_pool_once_behind_every_query() {
    // Pages of 4, a window of 6: the token at position p reads p - 5 ..= p.
    let mut kv = windowed(4, 16, 6);
    let s = kv.create_sequence();
    let a = append(&mut kv, s, &[0; 10]);
    assert_eq!(a.slots.len(), 2);
    assert_eq!(a.slots[1][9], slot(5, 1));
    // The prompt's first token reads position 0: every page stays.
    assert_eq!(held(&kv, s, 0), [Some(0), Some(1), Some(2)]);
    assert_eq!(held(&kv, s, 1), [Some(3), Some(4), Some(5)]);
    // Position 10 reads 5..=10: page 0 (positions 0..=3) goes back before the append.
    assert_eq!(
        kv.append_cost(s, 1),
        Ok(AppendCost {
            take: 0,
            give_back: 1
        })
    );
    let available = kv.pool().available();
    let _ = append(&mut kv, s, &[0]);
    assert_eq!(held(&kv, s, 1), [None, Some(4), Some(5)]);
    // Full, so registered: cached rather than free, and available again either way.
    assert_eq!(kv.pool().available(), available + 1);
    assert_eq!(
        kv.pool().state(PageId(3)),
        Some(PageState::Cached { last_used: 1 })
    );
    // Positions 11 and 12 read from 6: page 1 (4..=7) stays; each group takes a page.
    let _ = append(&mut kv, s, &[0, 0]);
    assert_eq!(held(&kv, s, 0), [Some(0), Some(1), Some(2), Some(6)]);
    assert_eq!(held(&kv, s, 1), [None, Some(4), Some(5), Some(7)]);
    let _ = append(&mut kv, s, &[0]); // position 13 reads 8..=13: page 1 goes
    assert_eq!(held(&kv, s, 1), [None, None, Some(5), Some(7)]);
    assert_eq!(kv.pages_held(s), Ok(4 + 2));
    // Back to where the last append began works; further back, the window is gone.
    kv.truncate(s, 13).unwrap();
    assert_eq!(
        kv.truncate(s, 9),
        Err(KvError::WindowReleased { seq: s, n: 9 })
    );
    kv.check_invariants().unwrap();
    kv.free(s).unwrap();
    assert_eq!(kv.stats().pages_in_use, 0);
    kv.check_invariants().unwrap();
}

#[test]
fn a_prefix_hit_needs_only_the_window_pages_the_next_token_reads() {
    let mut kv = windowed(4, 32, 6);
    let prompt: Vec<u32> = (1..=21).collect();
    let (a, _) = kv.create_sequence_with_prefix(&prompt);
    // One token at a time, as decoding does: group 1 releases its pages as it goes.
    for &t in &prompt {
        let _ = append(&mut kv, a, &[t]);
    }
    assert_eq!(held(&kv, a, 1)[..3], [None, None, None]);
    kv.free(a).unwrap();
    kv.check_invariants().unwrap();
    // Full pages 0..=4 of both groups were registered; group 1's are all cached.
    let (b, cached) = kv.create_sequence_with_prefix(&prompt);
    assert_eq!(cached, 20);
    // Position 20 reads 15..=20: group 1 takes pages 3 and 4 only.
    assert_eq!(held(&kv, b, 1)[..3], [None, None, None]);
    assert!(held(&kv, b, 1)[3..].iter().all(Option::is_some));
    assert!(held(&kv, b, 0).iter().all(Option::is_some));
    assert_eq!(kv.pages_held(b), Ok(5 + 2));
    assert_eq!(kv.cached_prefix(&prompt).len(), 7);
    kv.check_invariants().unwrap();
    // The groups' pages of one prefix have different names: no page serves two groups.
    let mut all: Vec<PageId> = (0..2)
        .flat_map(|g| kv.block_table(b, g).unwrap().iter().flatten().copied())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 7);
}

#[test]
fn forked_window_pages_are_released_by_each_holder() {
    let mut kv = windowed(2, 16, 3);
    let a = kv.create_sequence();
    let _ = append(&mut kv, a, &[1, 2, 3, 4, 5]);
    let b = kv.fork(a).unwrap();
    // Position 5 reads 3..=5: page 0 is behind, but b still holds it.
    assert_eq!(
        kv.append_cost(a, 1),
        Ok(AppendCost {
            take: 2, // each group's shared partial page is copied
            give_back: 0
        })
    );
    let appended = append(&mut kv, a, &[6]);
    assert_eq!(appended.copies.len(), 2); // both groups' partial last pages
    assert_eq!(held(&kv, a, 1)[0], None);
    assert!(held(&kv, b, 1)[0].is_some());
    let _ = append(&mut kv, b, &[7]);
    kv.free(a).unwrap();
    kv.free(b).unwrap();
    assert_eq!(kv.stats().pages_in_use, 0);
    kv.check_invariants().unwrap();
}
