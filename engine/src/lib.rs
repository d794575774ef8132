//! kiln-engine: from a GGUF file to streamed tokens.
//!
//! GGUF (memory-mapped) → [`model::Model`] (config, weights as stored, tokenizer) →
//! a [`runner::Runner`] (today the f32 [`reference`] pass) → [`sampler`] →
//! tokens streamed by the [`driver`].

pub mod backend_env;
pub mod backends;
pub mod bench;
pub mod compiled;
pub mod driver;
mod error;
pub mod gguf;
pub mod kv;
pub mod memory;
pub mod model;
pub mod perplexity;
pub mod reference;
pub mod runner;
pub mod sampler;
#[cfg(feature = "serve")]
pub mod serve;
pub mod synth;
pub mod tokenizer;

pub use error::Error;
