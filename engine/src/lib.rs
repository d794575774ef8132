//! kiln-engine: from a GGUF file to streamed tokens.
//!
//! GGUF (memory-mapped, [`kiln_gguf`]) → [`model::Model`] (config, weights as stored,
//! tokenizer) → a [`runner::Runner`] (the f32 [`reference`] pass, or a model
//! [`compiled`] for a backend) → [`sampler`] → tokens streamed by the [`driver`].
//!
//! The crates below the engine are re-exported under their short names, so that a program
//! built on the engine names one crate: `kiln_engine::gguf`, `kiln_engine::tokenizer`,
//! `kiln_engine::kv`.

pub mod compiled;
pub mod driver;
mod error;
pub mod memory;
pub mod model;
pub mod perplexity;
pub mod reference;
pub mod runner;
pub mod sampler;
pub mod speculative;

pub use error::Error;
pub use kiln_gguf as gguf;
pub use kiln_kv as kv;
pub use kiln_tokenizer as tokenizer;
