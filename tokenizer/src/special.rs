//! Cutting special tokens out of the input before pre-tokenization, as llama.cpp's
//! `tokenizer_st_partition` does: for each special token, longest text first, every text
//! fragment is split at each occurrence of it.
//!
//! Gemma has 6,414 special tokens; searching the text for each would read it 6,414 times.
//! A table of the byte pairs the text contains rules out, in a few lookups, every token
//! with a pair the text lacks, so only the few that can occur are searched for.

use super::vocab::{Vocab, attr};

/// A piece of the input: text still to be tokenized, or a special token found in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fragment {
    /// Bytes `start..end` of the input.
    Text(usize, usize),
    Token(u32),
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Split `text` into fragments. Without `parse_special`, control and unknown tokens are
/// ordinary text; user-defined tokens are always cut out (as in llama.cpp and HF tokenizers).
pub(super) fn partition(vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0, text.len()));
    let pairs = BytePairs::of(text.as_bytes());
    let mut next = Vec::new();
    for &id in &vocab.special_tokens {
        let a = vocab.attrs[id as usize];
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = vocab.text(id);
        if !pairs.may_contain(needle.as_bytes()) || !text.contains(needle) {
            continue;
        }
        next.clear();
        for &frag in &frags {
            let Fragment::Text(mut start, end) = frag else {
                next.push(frag);
                continue;
            };
            while start < end {
                let Some(at) = text[start..end].find(needle) else {
                    next.push(Fragment::Text(start, end));
                    break;
                };
                let found = start + at;
                let mut left_end = found;
                if a & attr::LSTRIP != 0 {
                    while left_end > start && is_c_space(text.as_bytes()[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > start {
                    next.push(Fragment::Text(start, left_end));
                }
                next.push(Fragment::Token(id));
                start = found + needle.len();
                if a & attr::RSTRIP != 0 {
                    while start < end && is_c_space(text.as_bytes()[start]) {
                        start += 1;
                    }
                }
            }
        }
        std::mem::swap(&mut frags, &mut next);
    }
    frags
}

/// Which bytes and adjacent byte pairs occur in a text: a needle with one that does not
/// cannot occur in it.
struct BytePairs {
    bytes: [u64; 4],
    pairs: Vec<u64>,
}

impl BytePairs {
    fn of(text: &[u8]) -> BytePairs {
        let mut bytes = [0u64; 4];
        let mut pairs = vec![0u64; 1 << 10];
        for &b in text {
            bytes[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        for w in text.windows(2) {
            let p = usize::from(w[0]) << 8 | usize::from(w[1]);
            pairs[p >> 6] |= 1 << (p & 63);
        }
        BytePairs { bytes, pairs }
    }

    fn may_contain(&self, needle: &[u8]) -> bool {
        if let [b] = needle {
            return self.bytes[usize::from(b >> 6)] & (1 << (b & 63)) != 0;
        }
        needle.windows(2).all(|w| {
            let p = usize::from(w[0]) << 8 | usize::from(w[1]);
            self.pairs[p >> 6] & (1 << (p & 63)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::BytePairs;

    #[test]
    fn byte_pairs_rule_out_only_what_cannot_occur() {
        let text = "a <b>\n\n c";
        let pairs = BytePairs::of(text.as_bytes());
        for start in 0..text.len() {
            for end in start + 1..=text.len() {
                assert!(pairs.may_contain(&text.as_bytes()[start..end]));
            }
        }
        for absent in ["<c>", "ab", "z", "\n\n\n c>", "  "] {
            assert!(!pairs.may_contain(absent.as_bytes()), "{absent:?}");
        }
        // Pairs and bytes present but not in this order: searched for, not found.
        assert!(pairs.may_contain(b"<b>\n\n\n"));
    }
}
