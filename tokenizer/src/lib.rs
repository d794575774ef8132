//! The tokenizer, built from GGUF metadata, token for token what llama.cpp produces: GPT-2
//! style byte-level BPE (`tokenizer.ggml.model = "gpt2"`) or SentencePiece (`"llama"`).
//!
//! Encoding is llama.cpp's pipeline:
//! 1. [`special`]: control and user-defined tokens are cut out of the text (longest first);
//! 2. BPE: [`pretokenize`] splits each remaining fragment into words by the regexes that
//!    `tokenizer.ggml.pre` selects, and [`bpe`] merges each word's bytes by rank;
//!    SentencePiece: [`spm`] merges each fragment's characters by score, with byte fallback.
//!
//! [`decode`] turns ids back into bytes and text (with a streaming decoder), [`chat`]
//! renders chat prompts with the model's template or a built-in format.

mod bpe;
mod chat;
mod decode;
mod error;
mod pretokenize;
mod special;
mod spm;
mod table;
mod unicode;
mod unicode_table;
mod vocab;

#[cfg(test)]
mod tests;

use std::fmt;

use kiln_gguf::{Gguf, Value};

pub use chat::{
    ChatFormat, ChatMessage, ChatToolCall, chatml, gemma_turns, plain_tool_turns, render_chat,
};
pub use decode::StreamDecoder;
pub use error::TokenizerError;
pub use vocab::{TokenType, VocabType};

use bpe::Bpe;
use pretokenize::PreTokenizer;
use special::Fragment;
use spm::Spm;
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

/// A tokenizer read from a GGUF file.
pub struct Tokenizer {
    vocab: Vocab,
    algorithm: Algorithm,
    pre_name: String,
}

/// What turns a fragment of text (no special tokens in it) into ids. One per tokenizer,
/// so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Algorithm {
    Bpe { bpe: Bpe, pre: PreTokenizer },
    Spm(Spm),
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("type", &self.vocab.vocab_type)
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
    /// Read the tokenizer from `tokenizer.*` metadata. `tokenizer.ggml.model` must be
    /// `gpt2` (byte-level BPE) or `llama` (SentencePiece); for BPE, `tokenizer.ggml.pre`
    /// must be one llama.cpp knows and kiln implements (see
    /// [`TokenizerError::UnsupportedPre`] for the list).
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let model = g.get_str("tokenizer.ggml.model")?;
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
        let (vocab, algorithm) = match model {
            "gpt2" => {
                let config = pretokenize::config(pre_name)?;
                let pre = PreTokenizer::new(pre_name, &config)?;
                let vocab = Vocab::load(g, VocabDefaults::bpe(config.add_bos, config.no_bos))?;
                let merges = g.get_array("tokenizer.ggml.merges")?;
                let bpe = Bpe::new(&vocab, merges, config.ignore_merges)?;
                (vocab, Algorithm::Bpe { bpe, pre })
            }
            // llama.cpp ignores `tokenizer.ggml.pre` for SentencePiece.
            "llama" => {
                let vocab = Vocab::load(g, VocabDefaults::spm())?;
                let spm = Spm::new(g, &vocab)?;
                (vocab, Algorithm::Spm(spm))
            }
            _ => return Err(TokenizerError::UnsupportedModel(model.to_string())),
        };
        Ok(Tokenizer {
            vocab,
            algorithm,
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
        let fragments = special::partition(&self.vocab, text, options.parse_special);
        match &self.algorithm {
            Algorithm::Bpe { bpe, pre } => {
                let mut scratch = bpe::Scratch::default();
                for frag in fragments {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(start, end) => {
                            let fragment = &text[start..end];
                            for (a, b) in pre.split(fragment) {
                                let word = &fragment.as_bytes()[a..b];
                                bpe.encode_word(&self.vocab, word, &mut scratch, &mut out);
                            }
                        }
                    }
                }
            }
            Algorithm::Spm(spm) => {
                let mut scratch = spm::Scratch::default();
                // The space prefix goes before the first fragment and after each special
                // token (llama.cpp's `is_prev_special`; BOS counts as none).
                let mut after_special = true;
                for frag in fragments {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(start, end) => {
                            let prefix = self.vocab.add_space_prefix && after_special;
                            spm.encode_fragment(
                                &self.vocab,
                                &text[start..end],
                                prefix,
                                &mut scratch,
                                &mut out,
                            );
                            after_special = false;
                        }
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

    /// The stored text of a token (as stored: byte-level characters such as "Ġthe" for
    /// BPE, "▁the" for SentencePiece); empty for an id outside the vocabulary.
    pub fn token_text(&self, id: u32) -> &str {
        self.vocab.text(id)
    }

    /// The id of the token whose stored text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id_of(text)
    }

    /// The algorithm: byte-level BPE or SentencePiece.
    pub fn vocab_type(&self) -> VocabType {
        self.vocab.vocab_type
    }

    /// Whether SentencePiece encoding puts "▁" before the text
    /// (`tokenizer.ggml.add_space_prefix`; Gemma 3 sets it false).
    pub fn add_space_prefix(&self) -> bool {
        self.vocab.add_space_prefix
    }

    /// The type stored in `tokenizer.ggml.token_type`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.types.get(id as usize).copied()
    }

    /// The score of a SentencePiece token (`tokenizer.ggml.scores`: the higher, the earlier
    /// it merges); `None` for BPE or an id outside the vocabulary.
    pub fn token_score(&self, id: u32) -> Option<f32> {
        match &self.algorithm {
            Algorithm::Spm(spm) => spm.score(id),
            Algorithm::Bpe { .. } => None,
        }
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

    /// Use `template` as the chat template (None: the built-in format).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.vocab.chat_template = template;
    }

    /// The pre-tokenizer name (`tokenizer.ggml.pre`, "default" when absent; SentencePiece
    /// has none and ignores it).
    pub fn pre(&self) -> &str {
        &self.pre_name
    }
}
