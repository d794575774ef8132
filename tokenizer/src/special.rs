//! Cutting special tokens out of the input before pre-tokenization, as llama.cpp's
//! `tokenizer_st_partition` does: for each special token, longest text first, every text
//! fragment is split at each occurrence of it.

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
    let mut next = Vec::new();
    for &id in &vocab.special_tokens {
        let a = vocab.attrs[id as usize];
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = vocab.texts[id as usize].as_str();
        if !text.contains(needle) {
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
