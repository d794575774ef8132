//! Random operation sequences on small pools, so that running out of pages, copy-on-write,
//! prefix hits and evictions all happen often, with one to three KV groups of which some
//! have sliding windows. After every operation the harness checks the manager's invariants
//! and reads every live sequence back through each group's block table from a model of the
//! backend's memory: a page written while shared, a cached page overwritten, a copy
//! forgotten or a window page released too early shows up as a wrong token; a window page
//! kept too long, or any page leaked, shows up in the page counts.

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Create,
    /// A prompt: part of one of the system prompts, then a random tail.
    CreateWithPrefix {
        system: usize,
        cut: usize,
        tail: Vec<u32>,
    },
    Fork(usize),
    Append(usize, Vec<u32>),
    /// Keep `keep % (len + 2)` tokens: `len + 1` asks for too many.
    Truncate(usize, usize),
    /// Speculative decoding: append `guesses`, then roll back to the first `1 + accepted`
    /// of them (the verified token is always kept).
    Speculate(usize, Vec<u32>, usize),
    Free(usize),
    UseFreed(usize),
}

/// Shared openings, so that prompts often start alike. Tokens come from a tiny alphabet
/// so that equal pages at different positions are common too.
const SYSTEM_PROMPTS: [[u32; 12]; 3] = [
    [0; 12],
    [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0],
    [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2],
];

fn tokens(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..3, 0..max_len)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Create),
        3 => (0..SYSTEM_PROMPTS.len(), 0..=12usize, tokens(8))
            .prop_map(|(system, cut, tail)| Op::CreateWithPrefix { system, cut, tail }),
        2 => any::<usize>().prop_map(Op::Fork),
        5 => (any::<usize>(), tokens(12)).prop_map(|(i, t)| Op::Append(i, t)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, keep)| Op::Truncate(i, keep)),
        3 => (any::<usize>(), tokens(10), any::<usize>())
            .prop_map(|(i, guesses, accepted)| Op::Speculate(i, guesses, accepted)),
        2 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::UseFreed),
    ]
}

/// A live sequence as the harness knows it.
#[derive(Clone, Debug)]
struct Live {
    seq: SeqId,
    tokens: Vec<u32>,
    /// Where its last append started: window groups hold the pages from the one holding
    /// position `frontier + 1 - window` on.
    frontier: usize,
}

/// The manager, what each live sequence should hold, and what the backend's pages hold.
struct Harness {
    kv: KvManager,
    page_size: usize,
    windows: Vec<Option<usize>>,
    live: Vec<Live>,
    dead: Vec<SeqId>,
    /// `memory[page][offset]`: the token whose K/V was written there (None: never written).
    memory: Vec<Vec<Option<u32>>>,
}

impl Harness {
    fn new(page_size: usize, kv_page_count: usize, windows: Vec<Option<usize>>) -> Self {
        let layout = KvLayout::new(2, 1, 4)
            .and_then(|l| l.with_kv_page_size(page_size))
            .and_then(|l| l.with_groups(windows.len()))
            .unwrap();
        Harness {
            kv: KvManager::new(layout, kv_page_count)
                .and_then(|kv| kv.with_windows(&windows))
                .unwrap(),
            page_size,
            windows,
            live: Vec::new(),
            dead: Vec::new(),
            memory: vec![vec![None; page_size]; kv_page_count],
        }
    }

    /// The first page group `g` must hold for queries from position `frontier` on.
    fn first_needed_page(&self, g: usize, frontier: usize) -> usize {
        self.windows[g].map_or(0, |w| (frontier + 1).saturating_sub(w) / self.page_size)
    }

    /// What a backend does with an append: copies first, then writes.
    fn execute(&mut self, appended: &Appended, tokens: &[u32]) {
        for copy in &appended.copies {
            let (src, dst) = (copy.src.index(), copy.dst.index());
            for offset in 0..copy.n_tokens {
                self.memory[dst][offset] = self.memory[src][offset];
            }
        }
        if tokens.is_empty() {
            assert_eq!(*appended, Appended::default());
            return;
        }
        assert_eq!(appended.slots.len(), self.windows.len());
        for group in &appended.slots {
            assert_eq!(group.len(), tokens.len());
            for (slot, &token) in group.iter().zip(tokens) {
                self.memory[slot.page.index()][slot.offset] = Some(token);
            }
        }
    }

    /// Appends, checking all-or-nothing on failure; returns whether it succeeded.
    fn append(&mut self, i: usize, tokens: &[u32]) -> Result<bool, TestCaseError> {
        let seq = self.live[i].seq;
        let before = self.kv.clone();
        let cost = self.kv.append_cost(seq, tokens.len()).unwrap();
        let needed = self.kv.pages_needed(seq, tokens.len()).unwrap();
        prop_assert_eq!(needed, cost.net());
        let available = self.kv.pool().available();
        match self.kv.append(seq, tokens) {
            Ok(appended) => {
                prop_assert!(needed <= available);
                prop_assert_eq!(
                    self.kv.pool().available(),
                    available + cost.give_back - cost.take
                );
                prop_assert!(appended.copies.len() <= self.windows.len());
                self.execute(&appended, tokens);
                let live = &mut self.live[i];
                if !tokens.is_empty() {
                    live.frontier = live.tokens.len();
                }
                live.tokens.extend_from_slice(tokens);
                Ok(true)
            }
            Err(err) => {
                prop_assert_eq!(
                    err,
                    KvError::OutOfPages {
                        requested: needed,
                        free: available
                    }
                );
                prop_assert!(needed > available);
                prop_assert!(self.kv == before, "a failed append changed the manager");
                Ok(false)
            }
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n_live = self.live.len();
        match op {
            Op::Create => {
                let seq = self.kv.create_sequence();
                self.live.push(Live {
                    seq,
                    tokens: Vec::new(),
                    frontier: 0,
                });
            }
            Op::CreateWithPrefix { system, cut, tail } => {
                let mut prompt = SYSTEM_PROMPTS[system][..cut].to_vec();
                prompt.extend(tail);
                let peek = self.kv.cached_prefix(&prompt);
                let (seq, cached) = self.kv.create_sequence_with_prefix(&prompt);
                prop_assert_eq!(cached % self.page_size, 0);
                prop_assert!(cached == 0 || cached < prompt.len());
                prop_assert_eq!(self.kv.tokens(seq).unwrap(), &prompt[..cached]);
                prop_assert_eq!(peek.len(), self.kv.pages_held(seq).unwrap());
                self.live.push(Live {
                    seq,
                    tokens: prompt[..cached].to_vec(),
                    frontier: cached,
                });
                self.append(n_live, &prompt[cached..])?;
            }
            Op::Fork(i) if n_live > 0 => {
                let parent = self.live[i % n_live].clone();
                let child = self.kv.fork(parent.seq).unwrap();
                self.live.push(Live {
                    seq: child,
                    ..parent
                });
            }
            Op::Append(i, tokens) if n_live > 0 => {
                self.append(i % n_live, &tokens)?;
            }
            Op::Truncate(i, keep) if n_live > 0 => {
                let live = self.live[i % n_live].clone();
                let (seq, len) = (live.seq, live.tokens.len());
                let n = keep % (len + 2);
                let frontier = live.frontier.min(n);
                // The pages the next token's window reaches must never have been released.
                let released = (0..self.windows.len()).any(|g| {
                    let (needed, held) = (
                        self.first_needed_page(g, frontier),
                        self.first_needed_page(g, live.frontier),
                    );
                    needed < held.min(n.div_ceil(self.page_size))
                });
                let before = self.kv.clone();
                if n > len {
                    prop_assert_eq!(
                        self.kv.truncate(seq, n),
                        Err(KvError::TruncatePastEnd { seq, len, n })
                    );
                    prop_assert!(self.kv == before);
                } else if released {
                    prop_assert_eq!(
                        self.kv.truncate(seq, n),
                        Err(KvError::WindowReleased { seq, n })
                    );
                    prop_assert!(self.kv == before);
                } else {
                    self.kv.truncate(seq, n).unwrap();
                    let live = &mut self.live[i % n_live];
                    live.tokens.truncate(n);
                    live.frontier = frontier;
                }
            }
            Op::Speculate(i, guesses, accepted) if n_live > 0 && !guesses.is_empty() => {
                let i = i % n_live;
                if self.append(i, &guesses)? {
                    // Back into the append just made: its frontier stays.
                    let live = &mut self.live[i];
                    let keep = live.tokens.len() - guesses.len() + 1 + accepted % guesses.len();
                    self.kv.rollback(live.seq, keep).unwrap();
                    live.tokens.truncate(keep);
                }
            }
            Op::Free(i) if n_live > 0 => {
                let Live { seq, .. } = self.live.swap_remove(i % n_live);
                self.kv.free(seq).unwrap();
                self.dead.push(seq);
            }
            Op::UseFreed(i) if !self.dead.is_empty() => {
                let seq = self.dead[i % self.dead.len()];
                let before = self.kv.clone();
                let unknown = KvError::UnknownSequence(seq);
                prop_assert_eq!(self.kv.append(seq, &[1]), Err(unknown.clone()));
                prop_assert_eq!(self.kv.fork(seq), Err(unknown.clone()));
                prop_assert_eq!(self.kv.free(seq), Err(unknown.clone()));
                prop_assert_eq!(self.kv.truncate(seq, 0), Err(unknown.clone()));
                prop_assert_eq!(self.kv.rollback(seq, 0), Err(unknown));
                prop_assert!(self.kv == before);
            }
            _ => {} // an operation on a sequence when there is none
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.kv.check_invariants().map_err(TestCaseError::fail)?;
        let stats = self.kv.stats();
        prop_assert_eq!(
            stats.pages_free + stats.pages_in_use + stats.pages_cached,
            stats.kv_page_count
        );
        prop_assert_eq!(stats.sequences, self.live.len());
        let mut held = 0;
        for live in &self.live {
            let (seq, expected) = (live.seq, &live.tokens);
            prop_assert_eq!(self.kv.tokens(seq).unwrap(), &expected[..]);
            for g in 0..self.windows.len() {
                let table = self.kv.block_table(seq, g).unwrap();
                prop_assert_eq!(table.len(), expected.len().div_ceil(self.page_size));
                // Exactly the pages a query from the frontier on can read are held.
                let first = self.first_needed_page(g, live.frontier);
                for (i, entry) in table.iter().enumerate() {
                    prop_assert_eq!(
                        entry.is_some(),
                        i >= first,
                        "{} group {} page {}",
                        seq,
                        g,
                        i
                    );
                }
                held += table.len() - first.min(table.len());
                for (pos, &token) in expected.iter().enumerate() {
                    if let Some(page) = table[pos / self.page_size] {
                        let stored = self.memory[page.index()][pos % self.page_size];
                        prop_assert_eq!(stored, Some(token), "{} position {} ({})", seq, pos, page);
                    }
                }
            }
            prop_assert_eq!(
                self.kv.pages_held(seq).unwrap(),
                (0..self.windows.len())
                    .map(|g| {
                        let n = expected.len().div_ceil(self.page_size);
                        n - self.first_needed_page(g, live.frontier).min(n)
                    })
                    .sum::<usize>()
            );
        }
        // No leak: a page is in use only while a block-table entry holds it.
        prop_assert!(stats.pages_in_use <= held);
        Ok(())
    }

    fn free_everything(&mut self) -> Result<(), TestCaseError> {
        for live in std::mem::take(&mut self.live) {
            self.kv.free(live.seq).unwrap();
        }
        self.check()?;
        let stats = self.kv.stats();
        prop_assert_eq!(stats.pages_in_use, 0);
        prop_assert_eq!(stats.pages_free + stats.pages_cached, stats.kv_page_count);
        Ok(())
    }
}

/// A sequence after `rollback` compared with one that only ever saw the accepted tokens:
/// everything the cache says about it must agree (page ids may differ).
fn same_as_shadow(
    kv: &KvManager,
    seq: SeqId,
    shadow: &KvManager,
    shadow_seq: SeqId,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(kv.tokens(seq).unwrap(), shadow.tokens(shadow_seq).unwrap());
    let (s, t) = (
        kv.sequence(seq).unwrap(),
        shadow.sequence(shadow_seq).unwrap(),
    );
    prop_assert_eq!(&s.page_hashes, &t.page_hashes);
    let registered =
        |kv: &KvManager, tables: &[Vec<Option<PageId>>]| -> Vec<Option<(bool, usize)>> {
            tables
                .iter()
                .flatten()
                .map(|p| p.map(|p| (kv.pool().is_registered(p), kv.pool().refcount(p))))
                .collect()
        };
    prop_assert_eq!(registered(kv, &s.tables), registered(shadow, &t.tables));
    let (a, b) = (kv.stats(), shadow.stats());
    prop_assert_eq!(
        (a.pages_in_use, a.pages_cached, a.pages_free),
        (b.pages_in_use, b.pages_cached, b.pages_free)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Speculative rounds (guesses appended, most of them rejected) on sequences that share
    /// a prompt through the prefix cache and a fork, against shadows that only ever saw
    /// what was accepted: no page leaked or left cached with rejected tokens, the same
    /// refcounts and prefix hashes, and copy-on-write of the shared pages still right
    /// (the backend model reads every accepted token back).
    #[test]
    fn rollback_is_as_if_only_the_accepted_tokens_were_appended(
        page_size in 1usize..=5,
        prompt in tokens(12),
        rounds in prop::collection::vec((0usize..2, tokens(9), any::<usize>()), 1..24),
    ) {
        // Room for everything: no eviction, so the shadow's counts must match exactly.
        let mut h = Harness::new(page_size, 1024, vec![None]);
        let mut shadow = Harness::new(page_size, 1024, vec![None]);
        for harness in [&mut h, &mut shadow] {
            harness.apply(Op::CreateWithPrefix { system: 2, cut: 12, tail: prompt.clone() })?;
            harness.apply(Op::Free(0))?;
            harness.apply(Op::CreateWithPrefix { system: 2, cut: 12, tail: prompt.clone() })?;
            harness.apply(Op::Fork(0))?;
        }
        for (i, guesses, accepted) in rounds {
            if guesses.is_empty() {
                continue;
            }
            let keep = 1 + accepted % guesses.len();
            h.apply(Op::Speculate(i, guesses.clone(), accepted))?;
            shadow.apply(Op::Append(i, guesses[..keep].to_vec()))?;
            for j in 0..2 {
                same_as_shadow(&h.kv, h.live[j].seq, &shadow.kv, shadow.live[j].seq)?;
            }
        }
        h.free_everything()?;
        shadow.free_everything()?;
        let (a, b) = (h.kv.stats(), shadow.kv.stats());
        prop_assert_eq!((a.pages_cached, a.pages_free), (b.pages_cached, b.pages_free));
    }

    #[test]
    fn random_operations_keep_every_invariant(
        page_size in 1usize..=5,
        kv_page_count in 0usize..=32,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness::new(page_size, kv_page_count, vec![None]);
        for op in ops {
            h.apply(op)?;
        }
        h.free_everything()?;
    }

    /// The same with several KV groups, some of them sliding windows (of 1 to 9 positions,
    /// so that pages go behind the window often, whole or partly).
    #[test]
    fn window_groups_release_exactly_the_pages_behind_the_window(
        page_size in 1usize..=5,
        kv_page_count in 0usize..=48,
        windows in prop::collection::vec(prop::option::of(1usize..=9), 1..=3),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness::new(page_size, kv_page_count, windows);
        for op in ops {
            h.apply(op)?;
        }
        h.free_everything()?;
    }

    /// Many prompts over few openings on a tight pool: hits, then evictions under pressure.
    #[test]
    fn prompts_sharing_openings_hit_and_evict(
        page_size in 1usize..=4,
        kv_page_count in 4usize..=12,
        windows in prop::sample::select(vec![vec![None], vec![None, Some(3)], vec![Some(5), Some(2)]]),
        prompts in prop::collection::vec((0..SYSTEM_PROMPTS.len(), 0..=12usize, tokens(4)), 1..40),
    ) {
        let mut h = Harness::new(page_size, kv_page_count, windows);
        for (n, (system, cut, tail)) in prompts.into_iter().enumerate() {
            h.apply(Op::CreateWithPrefix { system, cut, tail })?;
            if n % 3 == 2 {
                h.apply(Op::Free(n))?;
            }
        }
        h.free_everything()?;
    }
}
