//! kiln's vocabulary as llguidance sees it: a token trie of each id's bytes.
//!
//! Masks depend only on the trie. Text is tokenized greedily over the trie (llguidance's
//! fallback for a tokenizer it cannot call): kiln samples every token itself and never
//! splices forced text, so that tokenization only serves llguidance's diagnostics.

use kiln_tokenizer::Tokenizer;
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// A [`TokenizerEnv`] over a kiln [`Tokenizer`]: every id's bytes (control tokens as
/// llguidance's special tokens, `0xFF` then their text, so that a grammar never produces
/// them as text), end-of-generation ids as the trie's EOS tokens.
pub struct KilnTokEnv {
    trie: TokTrie,
}

impl std::fmt::Debug for KilnTokEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KilnTokEnv")
            .field("vocab_size", &self.trie.vocab_size())
            .finish_non_exhaustive()
    }
}

impl KilnTokEnv {
    pub fn new(tokenizer: &Tokenizer) -> KilnTokEnv {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                if tokenizer.is_control(id) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tokenizer.token_text(id).as_bytes());
                    w
                } else {
                    tokenizer.token_piece(id, false)
                }
            })
            .collect();
        let eos = tokenizer.eos_id().unwrap_or(toktrie::INVALID_TOKEN);
        let info = TokRxInfo::new(n as u32, eos);
        let mut eog: Vec<TokenId> = tokenizer.eog_ids().to_vec();
        if eog.is_empty() && eos != toktrie::INVALID_TOKEN {
            eog.push(eos);
        }
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
        KilnTokEnv { trie }
    }
}

impl TokenizerEnv for KilnTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}
