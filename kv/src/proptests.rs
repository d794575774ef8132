//! Random operation sequences on small pools, so that running out of pages, copy-on-write,
//! prefix hits and evictions all happen often. After every operation the harness checks the
//! manager's invariants and reads every live sequence back through its block table from a
//! model of the backend's memory: a page written while shared, a cached page overwritten, or
//! a copy forgotten shows up as a wrong token.

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

/// The manager, what each live sequence should hold, and what the backend's pages hold.
struct Harness {
    kv: KvManager,
    page_size: usize,
    live: Vec<(SeqId, Vec<u32>)>,
    dead: Vec<SeqId>,
    /// `memory[page][offset]`: the token whose K/V was written there (None: never written).
    memory: Vec<Vec<Option<u32>>>,
}

impl Harness {
    fn new(page_size: usize, kv_page_count: usize) -> Self {
        let layout = KvLayout::new(2, 1, 4)
            .and_then(|l| l.with_kv_page_size(page_size))
            .unwrap();
        Harness {
            kv: KvManager::new(layout, kv_page_count).unwrap(),
            page_size,
            live: Vec::new(),
            dead: Vec::new(),
            memory: vec![vec![None; page_size]; kv_page_count],
        }
    }

    /// What a backend does with an append: copies first, then writes.
    fn execute(&mut self, appended: &Appended, tokens: &[u32]) {
        for copy in &appended.copies {
            let (src, dst) = (copy.src.index(), copy.dst.index());
            for offset in 0..copy.n_tokens {
                self.memory[dst][offset] = self.memory[src][offset];
            }
        }
        assert_eq!(appended.slots.len(), tokens.len());
        for (slot, &token) in appended.slots.iter().zip(tokens) {
            self.memory[slot.page.index()][slot.offset] = Some(token);
        }
    }

    /// Appends, checking all-or-nothing on failure; returns whether it succeeded.
    fn append(&mut self, i: usize, tokens: &[u32]) -> Result<bool, TestCaseError> {
        let seq = self.live[i].0;
        let before = self.kv.clone();
        let needed = self.kv.pages_needed(seq, tokens.len()).unwrap();
        let available = self.kv.pool().available();
        match self.kv.append(seq, tokens) {
            Ok(appended) => {
                prop_assert!(needed <= available);
                prop_assert_eq!(self.kv.pool().available(), available - needed);
                prop_assert!(appended.copies.len() <= 1);
                self.execute(&appended, tokens);
                self.live[i].1.extend_from_slice(tokens);
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
                self.live.push((seq, Vec::new()));
            }
            Op::CreateWithPrefix { system, cut, tail } => {
                let mut prompt = SYSTEM_PROMPTS[system][..cut].to_vec();
                prompt.extend(tail);
                let (seq, cached) = self.kv.create_sequence_with_prefix(&prompt);
                prop_assert_eq!(cached % self.page_size, 0);
                prop_assert!(cached == 0 || cached < prompt.len());
                prop_assert_eq!(self.kv.tokens(seq).unwrap(), &prompt[..cached]);
                self.live.push((seq, prompt[..cached].to_vec()));
                self.append(n_live, &prompt[cached..])?;
            }
            Op::Fork(i) if n_live > 0 => {
                let (parent, tokens) = self.live[i % n_live].clone();
                let child = self.kv.fork(parent).unwrap();
                self.live.push((child, tokens));
            }
            Op::Append(i, tokens) if n_live > 0 => {
                self.append(i % n_live, &tokens)?;
            }
            Op::Truncate(i, keep) if n_live > 0 => {
                let (seq, tokens) = &mut self.live[i % n_live];
                let (len, n) = (tokens.len(), keep % (tokens.len() + 2));
                if n > len {
                    let before = self.kv.clone();
                    prop_assert_eq!(
                        self.kv.truncate(*seq, n),
                        Err(KvError::TruncatePastEnd { seq: *seq, len, n })
                    );
                    prop_assert!(self.kv == before);
                } else {
                    self.kv.truncate(*seq, n).unwrap();
                    tokens.truncate(n);
                }
            }
            Op::Speculate(i, guesses, accepted) if n_live > 0 && !guesses.is_empty() => {
                let i = i % n_live;
                if self.append(i, &guesses)? {
                    let (seq, tokens) = &mut self.live[i];
                    let keep = tokens.len() - guesses.len() + 1 + accepted % guesses.len();
                    self.kv.rollback(*seq, keep).unwrap();
                    tokens.truncate(keep);
                }
            }
            Op::Free(i) if n_live > 0 => {
                let (seq, _) = self.live.swap_remove(i % n_live);
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
        for (seq, expected) in &self.live {
            prop_assert_eq!(self.kv.tokens(*seq).unwrap(), &expected[..]);
            let table = self.kv.block_table(*seq).unwrap();
            prop_assert_eq!(table.len(), expected.len().div_ceil(self.page_size));
            for (pos, &token) in expected.iter().enumerate() {
                let page = table[pos / self.page_size];
                let stored = self.memory[page.index()][pos % self.page_size];
                prop_assert_eq!(stored, Some(token), "{} position {} ({})", seq, pos, page);
            }
        }
        Ok(())
    }

    fn free_everything(&mut self) -> Result<(), TestCaseError> {
        for (seq, _) in std::mem::take(&mut self.live) {
            self.kv.free(seq).unwrap();
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
    let registered = |kv: &KvManager, table: &[PageId]| -> Vec<(bool, usize)> {
        table
            .iter()
            .map(|&p| (kv.pool().is_registered(p), kv.pool().refcount(p)))
            .collect()
    };
    prop_assert_eq!(
        registered(kv, &s.block_table),
        registered(shadow, &t.block_table)
    );
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
        let mut h = Harness::new(page_size, 1024);
        let mut shadow = Harness::new(page_size, 1024);
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
                same_as_shadow(&h.kv, h.live[j].0, &shadow.kv, shadow.live[j].0)?;
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
        let mut h = Harness::new(page_size, kv_page_count);
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
        prompts in prop::collection::vec((0..SYSTEM_PROMPTS.len(), 0..=12usize, tokens(4)), 1..40),
    ) {
        let mut h = Harness::new(page_size, kv_page_count);
        for (n, (system, cut, tail)) in prompts.into_iter().enumerate() {
            h.apply(Op::CreateWithPrefix { system, cut, tail })?;
            if n % 3 == 2 {
                h.apply(Op::Free(n))?;
            }
        }
        h.free_everything()?;
    }
}
