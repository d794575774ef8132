//! Byte-level BPE: one word's bytes → token ids, merging the lowest-ranked pair first, as
//! llama.cpp's `llm_tokenizer_bpe_session::tokenize` does.
//!
//! Every string that takes part in a merge is interned once at load time: a vocabulary
//! token is its own id, any other string gets an id past the vocabulary. A merge is then a
//! hash lookup of two u32s, and a word is merged in a linked list with a heap of candidate
//! pairs ordered by (rank, position), so a word of n bytes costs O(n log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use kiln_gguf::Value;

use super::TokenizerError;
use super::unicode::{BYTE_TO_CHAR, byte_encode_into};
use super::vocab::{TextMap, Vocab};

const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// A multiplicative hasher for the packed `(left, right)` symbol pairs.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PairMap = HashMap<u64, Merge, BuildHasherDefault<PairHasher>>;

/// A pair that may merge: (rank, left index, right index, left symbol, right symbol). The
/// heap pops the lowest rank first, then the leftmost, as llama.cpp's queue does.
type Candidate = Reverse<(u32, u32, u32, u32, u32)>;

#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    /// The interned id of the two strings joined.
    joined: u32,
}

fn pair(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

#[derive(Debug)]
pub(super) struct Bpe {
    merges: PairMap,
    n_vocab: u32,
    /// The interned id of each byte's one-character string, if any.
    byte_sym: [Option<u32>; 256],
    /// For a symbol that is not a token: the token of each byte whose GPT-2 character is
    /// ASCII (llama.cpp looks up every byte of the symbol's text on its own, and only
    /// one-byte UTF-8 can be a token).
    byte_fallback: [Option<u32>; 256],
    ignore_merges: bool,
}

/// One symbol of a word being merged: bytes `start..end` of the word.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    sym: Option<u32>,
    start: u32,
    end: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// Reusable buffers for encoding one text.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
    encoded: String,
}

impl Bpe {
    pub fn new(
        vocab: &Vocab,
        merges: &[Value],
        ignore_merges: bool,
    ) -> Result<Bpe, TokenizerError> {
        let n_vocab = vocab.len() as u32;
        let mut extra = TextMap::default();
        let mut intern = |s: &str| -> u32 {
            if let Some(&id) = vocab.text_to_id.get(s) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_string()).or_insert(next)
        };
        let mut map = PairMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut joined = String::new();
        for (rank, v) in merges.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| {
                TokenizerError::invalid(
                    KEY_MERGES,
                    format!("entry {rank} is a {}, not a string", v.value_type()),
                )
            })?;
            // llama.cpp splits at the first space after the first byte.
            let Some(split) = s.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (first, second) = (&s[..split], &s[split + 1..]);
            if second.is_empty() {
                continue; // can never match a (non-empty) symbol
            }
            joined.clear();
            joined.push_str(first);
            joined.push_str(second);
            let (l, r, j) = (intern(first), intern(second), intern(&joined));
            // The first rank of a repeated pair wins, as with llama.cpp's emplace.
            map.entry(pair(l, r)).or_insert(Merge {
                rank: rank as u32,
                joined: j,
            });
        }
        let mut byte_sym = [None; 256];
        let mut byte_fallback = [None; 256];
        for b in 0..256 {
            let c = BYTE_TO_CHAR[b];
            let s = c.to_string();
            byte_sym[b] = vocab.text_to_id.get(&s).or_else(|| extra.get(&s)).copied();
            if c.is_ascii() {
                byte_fallback[b] = vocab.text_to_id.get(&s).copied();
            }
        }
        Ok(Bpe {
            merges: map,
            n_vocab,
            byte_sym,
            byte_fallback,
            ignore_merges,
        })
    }

    /// Append the tokens of one pre-tokenized word.
    pub fn encode_word(&self, vocab: &Vocab, word: &[u8], s: &mut Scratch, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.len() >= NONE as usize {
            // Symbol indices are u32; a word of 4 GiB is merged in 1 GiB slices.
            for chunk in word.chunks(1 << 30) {
                self.encode_word(vocab, chunk, s, out);
            }
            return;
        }
        if self.ignore_merges {
            s.encoded.clear();
            byte_encode_into(word, &mut s.encoded);
            if let Some(&id) = vocab.text_to_id.get(&s.encoded) {
                out.push(id);
                return;
            }
        }
        let n = word.len() as u32;
        s.symbols.clear();
        s.symbols.extend((0..n).map(|i| Symbol {
            sym: self.byte_sym[word[i as usize] as usize],
            start: i,
            end: i + 1,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
        }));
        s.heap.clear();
        for i in 1..n {
            self.push_pair(&s.symbols, &mut s.heap, i - 1, i);
        }
        while let Some(Reverse((_, left, right, lsym, rsym))) = s.heap.pop() {
            let (l, r) = (s.symbols[left as usize], s.symbols[right as usize]);
            // Skip a pair whose symbols have merged since (a merged symbol only grows,
            // so unchanged ids mean unchanged and still adjacent).
            if l.start == l.end || r.start == r.end || l.sym != Some(lsym) || r.sym != Some(rsym) {
                continue;
            }
            let Some(m) = self.merges.get(&pair(lsym, rsym)) else {
                continue;
            };
            let ls = &mut s.symbols[left as usize];
            ls.sym = Some(m.joined);
            ls.end = r.end;
            ls.next = r.next;
            let rs = &mut s.symbols[right as usize];
            rs.start = rs.end; // dead
            if r.next != NONE {
                s.symbols[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.push_pair(&s.symbols, &mut s.heap, l.prev, left);
            }
            if r.next != NONE {
                self.push_pair(&s.symbols, &mut s.heap, left, r.next);
            }
        }
        let mut i = 0;
        while i != NONE {
            let sym = s.symbols[i as usize];
            match sym.sym {
                Some(id) if id < self.n_vocab => out.push(id),
                _ => out.extend(
                    word[sym.start as usize..sym.end as usize]
                        .iter()
                        .filter_map(|&b| self.byte_fallback[b as usize]),
                ),
            }
            i = sym.next;
        }
    }

    fn push_pair(
        &self,
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Candidate>,
        left: u32,
        right: u32,
    ) {
        let (Some(l), Some(r)) = (symbols[left as usize].sym, symbols[right as usize].sym) else {
            return;
        };
        if let Some(m) = self.merges.get(&pair(l, r)) {
            heap.push(Reverse((m.rank, left, right, l, r)));
        }
    }
}
