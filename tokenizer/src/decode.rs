//! Token ids → bytes and text: pieces as llama.cpp's `llama_token_to_piece` renders them,
//! and a streaming decoder that never cuts a UTF-8 character in two.

use super::Tokenizer;
use super::unicode::byte_decode_into;
use super::vocab::attr;

/// Append the piece of a token with text `text` and attributes `a`, special tokens
/// rendered (llama.cpp caches exactly this, then hides control tokens on request).
pub(super) fn render_piece(text: &str, a: u32, out: &mut Vec<u8>) {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if a & attr::NORMAL != 0 {
        byte_decode_into(text, out);
    } else if a & attr::BYTE != 0 {
        // "<0xAB>"
        if let Some(b) = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            out.push(b);
        }
    }
    // Unused and undefined tokens have no piece.
}

impl Tokenizer {
    /// The raw bytes of token `id`. Control and unknown tokens are rendered only when
    /// `special` is true (llama.cpp's `llama_token_to_piece`); an id outside the
    /// vocabulary has no bytes.
    pub fn token_piece(&self, id: u32, special: bool) -> Vec<u8> {
        self.piece_bytes(id, special).to_vec()
    }

    pub(crate) fn piece_bytes(&self, id: u32, special: bool) -> &[u8] {
        let Some(&a) = self.vocab.attrs.get(id as usize) else {
            return &[];
        };
        if !special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        self.vocab.cached_piece(id)
    }

    /// The text of `ids`, control tokens hidden (as llama.cpp's programs print by
    /// default); invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, false)
    }

    /// The text of `ids`, control tokens rendered when `special` is true.
    pub fn decode_with(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.piece_bytes(id, special));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns ids into text one at a time. Bytes of a character split across tokens are held
/// back until the character is complete; bytes that can never form one become U+FFFD.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    special: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that hides control tokens, like llama.cpp's command line programs.
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder::with_special(tokenizer, false)
    }

    /// A decoder that renders control tokens when `special` is true.
    pub fn with_special(tokenizer: &'a Tokenizer, special: bool) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            special,
            pending: Vec::new(),
        }
    }

    /// Add one token; returns the text that is complete so far (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tokenizer.piece_bytes(id, self.special);
        self.push_bytes(piece)
    }

    /// Add raw bytes; returns the text that is complete so far (possibly empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            start = valid;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Bytes held back, not yet part of a complete character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// The held-back tail (U+FFFD for an incomplete character); the decoder is then empty.
    pub fn finish(&mut self) -> String {
        let tail = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        tail
    }
}
