//! Prompt lookup: guesses copied from earlier in the text, no second model.
//!
//! The last `ngram` tokens of the text (prompt and output so far) are looked for earlier
//! in it; the tokens that followed the match are the guesses. Where several places match,
//! the one whose match reaches furthest back wins (the longest common history predicts
//! best), the most recent on ties. A copy may run into its own guesses, as an LZ77 copy
//! overlaps itself, so a repeating pattern is guessed past the end of the text.

use super::{Draft, Drafter};
use crate::Error;

/// Longest backward extension of a match that is measured (beyond it, ties).
const MAX_MATCH: usize = 64;

/// Most n-gram length accepted (longer keys almost never match).
pub const MAX_LOOKUP_NGRAM: usize = 16;

/// The prompt-lookup guesser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptLookup {
    ngram: usize,
}

impl PromptLookup {
    /// Guesses follow a match of the last `ngram` tokens (1 to [`MAX_LOOKUP_NGRAM`]).
    pub fn new(ngram: usize) -> Result<PromptLookup, Error> {
        if !(1..=MAX_LOOKUP_NGRAM).contains(&ngram) {
            return Err(Error::Invalid(format!(
                "a prompt-lookup n-gram of {ngram} tokens: it must be 1 to {MAX_LOOKUP_NGRAM}"
            )));
        }
        Ok(PromptLookup { ngram })
    }

    pub fn ngram(&self) -> usize {
        self.ngram
    }

    /// Up to `k` guesses of what follows `text`; none when its last n-gram occurs nowhere
    /// earlier.
    pub fn guess(&self, text: &[u32], k: usize) -> Vec<u32> {
        let (n, len) = (self.ngram, text.len());
        if k == 0 || len <= n {
            return Vec::new();
        }
        let key = &text[len - n..];
        // `end` is one past a match; the match must leave a token after it in the text.
        let mut best: Option<(usize, usize)> = None; // (match length, end)
        for end in (n..len).rev() {
            if text[end - n..end] != *key {
                continue;
            }
            let reach = (n..MAX_MATCH.min(end))
                .take_while(|&l| text[end - l - 1] == text[len - l - 1])
                .count()
                + n;
            if best.is_none_or(|(longest, _)| reach > longest) {
                best = Some((reach, end));
            }
        }
        let Some((_, end)) = best else {
            return Vec::new();
        };
        let mut guesses = Vec::with_capacity(k);
        for pos in end..end + k {
            let token = if pos < len {
                text[pos]
            } else {
                guesses[pos - len]
            };
            guesses.push(token);
        }
        guesses
    }
}

impl Drafter for PromptLookup {
    fn kind(&self) -> &'static str {
        "lookup"
    }

    fn draft(&mut self, context: &[u32], k: usize) -> Result<Draft, Error> {
        Ok(Draft::one_hot(self.guess(context, k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_follow_the_longest_matching_history() {
        let lookup = PromptLookup::new(2).unwrap();
        // "7 8" occurs twice; the second is preceded by "3", like the end of the text.
        let text = [1, 7, 8, 9, 9, 3, 7, 8, 4, 5, 6, 0, 3, 7, 8];
        assert_eq!(lookup.guess(&text, 3), [4, 5, 6]);
        // Without the longer history, the most recent match wins.
        let text = [1, 7, 8, 9, 9, 2, 7, 8, 4, 5, 6, 0, 3, 7, 8];
        assert_eq!(lookup.guess(&text, 2), [4, 5]);
        // No earlier occurrence, a short text, or k = 0: nothing.
        assert!(lookup.guess(&[1, 2, 3, 4], 3).is_empty());
        assert!(lookup.guess(&[7, 8], 3).is_empty());
        assert!(lookup.guess(&text, 0).is_empty());
    }

    #[test]
    fn a_repeating_pattern_is_copied_past_the_end() {
        let lookup = PromptLookup::new(2).unwrap();
        assert_eq!(lookup.guess(&[5, 1, 2, 3, 1, 2], 5), [3, 1, 2, 3, 1]);
        assert_eq!(lookup.guess(&[4, 4, 4], 3), [4, 4, 4]);
    }

    #[test]
    fn the_ngram_is_checked() {
        assert!(PromptLookup::new(0).is_err());
        assert!(PromptLookup::new(MAX_LOOKUP_NGRAM + 1).is_err());
        assert_eq!(PromptLookup::new(3).unwrap().ngram(), 3);
    }
}
