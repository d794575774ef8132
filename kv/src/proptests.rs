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
                prop_assert_eq!(self.kv.truncate(seq, 0), Err(unknown));
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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
