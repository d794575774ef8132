//! Constrained decoding: a grammar (a JSON schema, any JSON object, a Lark grammar or a
//! regular expression) turned into a mask over the vocabulary at every step, so that only
//! tokens that keep the output inside the grammar can be sampled.
//!
//! The grammar engine is [llguidance](https://github.com/guidance-ai/llguidance), the one
//! llama.cpp and vLLM use: an Earley parser over a lazily built lexer, walking a trie of
//! the vocabulary's token bytes ([`vocab::KilnTokEnv`]), so a mask costs tens of µs on a
//! 49k or 262k vocabulary, not a pass over every token's text.
//!
//! One [`Structured`] per tokenizer (building the trie is the expensive part, done once);
//! one [`Constraint`] per generation: [`Constraint::apply`] before sampling,
//! [`Constraint::accept`] with the token sampled.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};
use serde_json::{Value, json};
use toktrie::{SimpleVob, TokEnv};

use kiln_tokenizer::Tokenizer;

pub mod vocab;

pub use vocab::KilnTokEnv;

#[derive(Debug, thiserror::Error)]
pub enum StructuredError {
    /// The grammar or schema does not compile (unsupported feature, bad syntax,
    /// unsatisfiable): the message is llguidance's.
    #[error("{0}")]
    Grammar(String),
    /// The constraint refused a token or could not compute a mask.
    #[error("constraint: {0}")]
    Step(String),
}

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI's `json_object` mode).
    JsonObject,
    /// A value valid against this JSON schema.
    JsonSchema(Value),
    /// A Lark grammar (llguidance's dialect: `start: ...`, `%json {...}` for schemas).
    Lark(String),
    /// Text matching this regular expression.
    Regex(String),
}

impl Grammar {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonObject => {
                TopLevelGrammar::from_json_schema(with_layout(json!({"type": "object"})))
            }
            Grammar::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_layout(schema.clone()))
            }
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
        }
    }
}

/// JSON written on one line with `", "` and `": "` between items (what `json.dumps`
/// writes): free whitespace would let a small model pad its output with newlines until
/// `max_tokens`.
fn with_layout(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut()
        && !obj.contains_key("x-guidance")
    {
        let options = JsonCompileOptions {
            item_separator: ", ".into(),
            key_separator: ": ".into(),
            whitespace_flexible: false,
            ..JsonCompileOptions::default()
        };
        options.apply_to(&mut schema);
    }
    schema
}

/// `schema` as a Lark rule body (`%json {...}`), written in the layout of
/// [`Grammar::JsonSchema`], for grammars that embed JSON values in other syntax.
pub fn lark_json(schema: &Value) -> String {
    format!("%json {}", with_layout(schema.clone()))
}

/// Grammars for one vocabulary; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Structured {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
}

impl std::fmt::Debug for Structured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Structured")
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl Structured {
    /// Build the token trie of `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &Tokenizer) -> Result<Structured, StructuredError> {
        let env: TokEnv = Arc::new(KilnTokEnv::new(tokenizer));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| StructuredError::Grammar(format!("token trie: {e}")))?;
        // Warnings and errors come back as values; nothing is printed.
        factory.quiet();
        Ok(Structured {
            factory: Arc::new(factory),
            vocab_size: tokenizer.vocab_size(),
        })
    }

    /// A fresh constraint for one generation; an error names what the grammar gets wrong.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, StructuredError> {
        let parser = self
            .factory
            .create_parser(grammar.top_level())
            .map_err(|e| StructuredError::Grammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(StructuredError::Grammar(e));
        }
        Ok(Constraint {
            matcher,
            mask: None,
            vocab_size: self.vocab_size,
        })
    }
}

/// One generation's grammar state; a clone goes on from the same point.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    /// The mask of the current step, computed once.
    mask: Option<SimpleVob>,
    vocab_size: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("vocab_size", &self.vocab_size)
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// The tokens allowed next (end-of-generation ones when the grammar is complete).
    pub fn mask(&mut self) -> Result<&SimpleVob, StructuredError> {
        if self.mask.is_none() {
            let m = self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| StructuredError::Step(e.to_string()))?;
            self.mask = Some(m);
        }
        Ok(self.mask.as_ref().expect("set above"))
    }

    /// Set every logit the grammar does not allow to −∞. Ids past the tokenizer's
    /// vocabulary (a model's padded rows) are never allowed.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), StructuredError> {
        let vocab = self.vocab_size;
        let mask = self.mask()?;
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if bits >> b & 1 == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        for l in logits.iter_mut().skip(vocab) {
            *l = f32::NEG_INFINITY;
        }
        Ok(())
    }

    /// Whether `id` is allowed now.
    pub fn allows(&mut self, id: u32) -> Result<bool, StructuredError> {
        Ok(self.mask()?.is_allowed(id))
    }

    /// Advance past the sampled token; a token the mask did not allow is an error.
    pub fn accept(&mut self, id: u32) -> Result<(), StructuredError> {
        self.mask = None;
        self.matcher
            .consume_token(id)
            .map_err(|e| StructuredError::Step(e.to_string()))
    }

    /// The grammar is complete and allows nothing more: the generation should end.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// The output so far is a complete match (more may still be allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests;
