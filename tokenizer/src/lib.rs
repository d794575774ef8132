//! The tokenizer, built from GGUF metadata: GPT-2 style byte-level BPE, token for token what
//! llama.cpp produces.
//!
//! Encoding is llama.cpp's pipeline:
//! 1. [`special`]: control and user-defined tokens are cut out of the text (longest first);
//! 2. [`pretokenize`]: each remaining fragment is split into words by the regexes that
//!    `tokenizer.ggml.pre` selects;
//! 3. [`bpe`]: each word's bytes are merged by rank into tokens.
//!
//! [`decode`] turns ids back into bytes and text (with a streaming decoder), [`chat`]
//! renders chat prompts with the model's template.

mod bpe;
mod chat;
mod decode;
mod error;
mod pretokenize;
mod special;
mod unicode;
mod unicode_table;
mod vocab;

#[cfg(test)]
mod tests;

use std::fmt;

use kiln_gguf::{Gguf, Value};

pub use chat::{ChatMessage, chatml, render_chat};
pub use decode::StreamDecoder;
pub use error::TokenizerError;
pub use vocab::TokenType;

use bpe::{Bpe, Scratch};
use pretokenize::PreTokenizer;
use special::Fragment;
use vocab::{Vocab, VocabDefaults, attr};

/// llama.cpp's `LLAMA_TOKEN_NULL`: what [`Tokenizer::bos`] and [`Tokenizer::eos`] return
/// for a vocabulary without that token. It is outside every vocabulary.
pub const TOKEN_NULL: u32 = u32::MAX;

/// What [`Tokenizer::encode_with`] adds and parses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Start with the BOS token (when the vocabulary has one).
    pub add_bos: bool,
    /// End with the EOS token (when the vocabulary has one).
    pub add_eos: bool,
    /// Turn the text of control tokens (`<|im_start|>`) into those tokens.
    pub parse_special: bool,
}

/// A byte-level BPE tokenizer read from a GGUF file.
pub struct Tokenizer {
    vocab: Vocab,
    bpe: Bpe,
    pre: PreTokenizer,
    pre_name: String,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("pre", &self.pre_name)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.vocab.special.bos)
            .field("eos", &self.vocab.special.eos)
            .field("eog", &self.vocab.eog)
            .field("add_bos", &self.vocab.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Read the tokenizer from `tokenizer.*` metadata. Only `tokenizer.ggml.model = "gpt2"`
    /// (byte-level BPE) is supported; `tokenizer.ggml.pre` must be one llama.cpp knows
    /// and kiln implements (see [`TokenizerError::UnsupportedPre`] for the list).
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let pre_name = match g.get("tokenizer.ggml.pre") {
            None => "default",
            Some(Value::String(s)) => s.as_str(),
            Some(v) => {
                return Err(TokenizerError::invalid(
                    "tokenizer.ggml.pre",
                    format!("a {}, not a string", v.value_type()),
                ));
            }
        };
        let config = pretokenize::config(pre_name)?;
        let pre = PreTokenizer::new(pre_name, &config)?;
        let vocab = Vocab::load(
            g,
            VocabDefaults {
                add_bos: config.add_bos,
                no_bos: config.no_bos,
            },
        )?;
        let merges = g.get_array("tokenizer.ggml.merges")?;
        let bpe = Bpe::new(&vocab, merges, config.ignore_merges)?;
        Ok(Tokenizer {
            vocab,
            bpe,
            pre,
            pre_name: pre_name.to_string(),
        })
    }

    /// Token ids of `text`. With `add_special`, BOS and EOS are added exactly when the
    /// model asks for them (`tokenizer.ggml.add_bos_token` / `add_eos_token`, or the
    /// pre-tokenizer's default, as in llama.cpp); with `parse_special`, the text of control
    /// tokens becomes those tokens.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_with(text, self.encode_options(add_special, parse_special))
    }

    /// The options [`Tokenizer::encode`] uses, to adjust before [`Tokenizer::encode_with`].
    pub fn encode_options(&self, add_special: bool, parse_special: bool) -> EncodeOptions {
        EncodeOptions {
            add_bos: add_special && self.vocab.add_bos,
            add_eos: add_special && self.vocab.add_eos,
            parse_special,
        }
    }

    /// Token ids of `text` with explicit options (e.g. a BOS the model does not ask for).
    pub fn encode_with(&self, text: &str, options: EncodeOptions) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if options.add_bos {
            out.extend(self.vocab.special.bos);
        }
        let mut scratch = Scratch::default();
        for frag in special::partition(&self.vocab, text, options.parse_special) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(start, end) => {
                    let fragment = &text[start..end];
                    for (a, b) in self.pre.split(fragment) {
                        let word = &fragment.as_bytes()[a..b];
                        self.bpe
                            .encode_word(&self.vocab, word, &mut scratch, &mut out);
                    }
                }
            }
        }
        if options.add_eos {
            out.extend(self.vocab.special.eos);
        }
        out
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The stored text of a token (byte-level characters as stored, e.g. "Ġthe"); empty for
    /// an id outside the vocabulary.
    pub fn token_text(&self, id: u32) -> &str {
        self.vocab.texts.get(id as usize).map_or("", String::as_str)
    }

    /// The id of the token whose stored text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.text_to_id.get(text).copied()
    }

    /// The type stored in `tokenizer.ggml.token_type`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.types.get(id as usize).copied()
    }

    /// Whether `id` is a control token (by type, or recognised as one at load time).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab
            .attrs
            .get(id as usize)
            .is_some_and(|a| a & attr::CONTROL != 0)
    }

    /// The BOS id, or [`TOKEN_NULL`] when the vocabulary has none.
    pub fn bos(&self) -> u32 {
        self.vocab.special.bos.unwrap_or(TOKEN_NULL)
    }

    /// The EOS id, or [`TOKEN_NULL`] when the vocabulary has none.
    pub fn eos(&self) -> u32 {
        self.vocab.special.eos.unwrap_or(TOKEN_NULL)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.special.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.special.eos
    }

    /// The end-of-turn id (named in the metadata or recognised by its text).
    pub fn eot_id(&self) -> Option<u32> {
        self.vocab.special.eot
    }

    /// Whether [`Tokenizer::encode`] with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether [`Tokenizer::encode`] with `add_special` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether generation stops at `id`.
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation ids, sorted: EOS, EOT, EOM, FIM pad/repo/separator, and every
    /// token whose text is one of llama.cpp's known end markers.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// The model's chat template (`tokenizer.chat_template`).
    pub fn chat_template(&self) -> Option<&str> {
        self.vocab.chat_template.as_deref()
    }

    /// The pre-tokenizer name (`tokenizer.ggml.pre`, "default" when absent).
    pub fn pre(&self) -> &str {
        &self.pre_name
    }
}
