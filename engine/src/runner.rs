//! What the driver needs from whatever computes logits: the reference pass today,
//! compiled plans on a backend next. One sequence, a growing context.

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
    /// Append `tokens` to the context and return logits, `(n_out, vocab)` row-major.
    fn forward(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>, Error>;
    /// Keep the first `len` tokens of the context and forget the rest (speculative
    /// decoding's rejected guesses). `len` past the position is an error.
    fn truncate(&mut self, len: usize) -> Result<(), Error>;
    /// What the runner allocated, by purpose, when it was sized by [`crate::memory`].
    fn memory(&self) -> Option<&crate::memory::MemoryPlan> {
        None
    }
}
