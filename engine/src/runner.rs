//! What the driver needs from whatever computes logits: the reference pass today,
//! compiled plans on a backend next. One sequence, a growing context.

use kiln_ir::step::{Candidate, top_k};

use crate::Error;

/// Which positions of a forward call need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last token of the call (generation).
    Last,
    /// Every token of the call from this index on (perplexity scores half a chunk).
    From(usize),
}

/// Runs a model over one sequence whose keys and values it keeps.
pub trait Runner {
    /// The backend name reported to users (`ref`, `cpu`, ...).
    fn name(&self) -> &'static str;
    /// Positions the context can hold.
    fn n_ctx(&self) -> usize;
    /// Tokens already in the context.
    fn position(&self) -> usize;
    /// Forget the context.
    fn reset(&mut self);
    /// Keep the first `len` positions of the context and forget the rest (a chat whose
    /// re-rendered history diverges from what was decoded, a rejected guess). `len` past
    /// the end changes nothing. A runner that cannot resume at `len` (a sliding-window
    /// layer has given back pages the next token would read) forgets everything: read
    /// `position()` afterwards to know what it kept.
    fn truncate(&mut self, len: usize);
    /// Append `tokens` to the context and return logits, `(n_out, vocab)` row-major.
    fn forward(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>, Error>;
    /// Append `tokens` and return the greedy token after the last one: the argmax of its
    /// logits ([`crate::sampler::argmax`]). A compiled model asks its backend, which may
    /// choose on the device and send back one id instead of a row of logits.
    fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32, Error> {
        let logits = self.forward(tokens, LogitsFor::Last)?;
        crate::sampler::check_finite(&logits)?;
        Ok(crate::sampler::argmax(&logits))
    }
    /// Append `tokens` and return the `k` most likely tokens after the last one, ordered
    /// as [`kiln_ir::step::top_k`] orders them (what [`crate::sampler::Sampler`] draws
    /// from with a top-k filter). A compiled model asks its backend, which may choose them
    /// on the device and send back k candidates instead of a row of logits.
    fn forward_top_k(&mut self, tokens: &[u32], k: usize) -> Result<Vec<Candidate>, Error> {
        let logits = self.forward(tokens, LogitsFor::Last)?;
        crate::sampler::check_finite(&logits)?;
        let mut cand = vec![Candidate::NON_FINITE; k.min(logits.len())];
        top_k(&logits, &mut cand);
        Ok(cand)
    }
    /// What the runner allocated, by purpose, when it was sized by [`crate::memory`].
    fn memory(&self) -> Option<&crate::memory::MemoryPlan> {
        None
    }
}
