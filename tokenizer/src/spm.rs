//! SentencePiece (`tokenizer.ggml.model = "llama"`): one text fragment → token ids, as
//! llama.cpp's `llm_tokenizer_spm_session::tokenize` does it.
//!
//! Spaces become "▁" (with one more in front when the vocabulary adds a space prefix and
//! the fragment starts the text or follows a special token). The fragment starts as one
//! symbol per character; the adjacent pair whose joined text is the token of highest
//! score merges first (the leftmost among equal scores), until no pair joins into a token.
//! A symbol left that is no token becomes its bytes' `<0xNN>` tokens.
//!
//! Unlike BPE there is no pre-tokenizer: a fragment is merged whole, in O(n log n) with a
//! heap of candidate pairs, each lookup a slice of the text in the token table.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use kiln_gguf::{Gguf, Value};

use super::TokenizerError;
use super::vocab::{Vocab, read_per_token};

/// SentencePiece's visible space, U+2581 LOWER ONE EIGHTH BLOCK.
pub(super) const SPACE: char = '\u{2581}';

const KEY_SCORES: &str = "tokenizer.ggml.scores";

#[derive(Debug)]
pub(super) struct Spm {
    /// Every token's score (0 when the file has none, as in llama.cpp).
    scores: Vec<f32>,
    /// The token of each byte for text that is no token: `<0xNN>`, or else the byte's own
    /// one-character token. llama.cpp throws for a byte with neither; kiln drops it.
    byte_tokens: [Option<u32>; 256],
}

/// One symbol of the fragment being merged: bytes `start..start + len` of the text.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// A pair that may merge. The heap pops the highest score first, then the leftmost pair,
/// as llama.cpp's `llm_bigram_spm::comparator` orders them.
#[derive(Clone, Copy, Debug)]
struct Bigram {
    /// The joined token's score, -0.0 made 0.0 (llama.cpp compares with `<`).
    score: f32,
    left: u32,
    right: u32,
    /// Bytes in the joined text: a pair whose symbols have changed since no longer adds up.
    len: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// Reusable buffers for encoding one text.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    text: String,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}

impl Spm {
    pub fn new(g: &Gguf, vocab: &Vocab) -> Result<Spm, TokenizerError> {
        let n = vocab.len();
        let scores = match g.get(KEY_SCORES) {
            None => vec![0.0; n],
            // llama.cpp reads f32 or i32 scores.
            Some(v) => read_per_token(v, KEY_SCORES, n, "an f32 or i32", |v| match v {
                Value::F32(x) => Some(*x),
                Value::I32(x) => Some(*x as f32),
                _ => None,
            })?,
        };
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab.id_of(&format!("<0x{b:02X}>")).or_else(|| {
                // Only an ASCII byte is a string on its own.
                u8::try_from(b)
                    .ok()
                    .filter(u8::is_ascii)
                    .and_then(|b| vocab.id_of(std::str::from_utf8(&[b]).ok()?))
            });
        }
        Ok(Spm {
            scores,
            byte_tokens,
        })
    }

    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Append the tokens of one text fragment (no special tokens in it); `space_prefix`
    /// puts a "▁" in front.
    pub fn encode_fragment(
        &self,
        vocab: &Vocab,
        fragment: &str,
        space_prefix: bool,
        s: &mut Scratch,
        out: &mut Vec<u32>,
    ) {
        s.text.clear();
        if space_prefix {
            s.text.push(SPACE);
        }
        for (i, part) in fragment.split(' ').enumerate() {
            if i > 0 {
                s.text.push(SPACE);
            }
            s.text.push_str(part);
        }
        if s.text.len() >= NONE as usize {
            // Symbol offsets are u32: a fragment of 4 GiB is merged in 1 GiB slices.
            let text = std::mem::take(&mut s.text);
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let mut cut = rest.len().min(1 << 30);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.merge(vocab, &rest[..cut], s, out);
                rest = &rest[cut..];
            }
            return;
        }
        let text = std::mem::take(&mut s.text);
        self.merge(vocab, &text, s, out);
        s.text = text;
    }

    fn merge(&self, vocab: &Vocab, text: &str, s: &mut Scratch, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        s.symbols.clear();
        for (start, c) in text.char_indices() {
            let i = s.symbols.len() as u32;
            s.symbols.push(Symbol {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: i.wrapping_sub(1), // NONE for the first
                next: i + 1,
            });
        }
        if let Some(last) = s.symbols.last_mut() {
            last.next = NONE;
        }
        s.heap.clear();
        for i in 1..s.symbols.len() as u32 {
            self.push_bigram(vocab, text, &s.symbols, &mut s.heap, i - 1, i);
        }
        while let Some(b) = s.heap.pop() {
            let (l, r) = (s.symbols[b.left as usize], s.symbols[b.right as usize]);
            // A symbol that merged since is empty (merged into its left) or longer.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            let left = &mut s.symbols[b.left as usize];
            left.len += r.len;
            left.next = r.next;
            s.symbols[b.right as usize].len = 0;
            if r.next != NONE {
                s.symbols[r.next as usize].prev = b.left;
            }
            if l.prev != NONE {
                self.push_bigram(vocab, text, &s.symbols, &mut s.heap, l.prev, b.left);
            }
            if r.next != NONE {
                self.push_bigram(vocab, text, &s.symbols, &mut s.heap, b.left, r.next);
            }
        }
        // Every merged symbol is a token; a single character may not be.
        let mut i = 0;
        while i != NONE {
            let sym = s.symbols[i as usize];
            let piece = &text[sym.start as usize..(sym.start + sym.len) as usize];
            match vocab.id_of(piece) {
                Some(id) => out.push(id),
                None => out.extend(
                    piece
                        .bytes()
                        .filter_map(|b| self.byte_tokens[usize::from(b)]),
                ),
            }
            i = sym.next;
        }
    }

    fn push_bigram(
        &self,
        vocab: &Vocab,
        text: &str,
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Bigram>,
        left: u32,
        right: u32,
    ) {
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let len = l.len + r.len;
        let joined = &text[l.start as usize..(l.start + len) as usize];
        if let Some(id) = vocab.id_of(joined) {
            heap.push(Bigram {
                score: self.scores[id as usize] + 0.0,
                left,
                right,
                len,
            });
        }
    }
}
