//! What a session holds (the model compiled for its backend and, for speculative
//! decoding, a draft model compiled beside it) and how a generation runs on them.
//! Nothing here is part of the C API itself.

use std::sync::Arc;

use kiln_engine::compiled::{CompileOptions, Compiled};
use kiln_engine::driver::{
    GenerateRequest, Generation, TokenEvent, TokenMask, generate, generate_masked,
};
use kiln_engine::kv::KvDtype;
use kiln_engine::memory::MemoryPlan;
use kiln_engine::model::Model;
use kiln_engine::reference::Reference;
use kiln_engine::runner::Runner;
use kiln_engine::speculative::{
    self, DraftModel, PromptLookup, SpecConfig, SpecStats, check_vocabulary,
};

use crate::boundary::ApiError;
use crate::{kiln_session_params, kiln_status};

pub(crate) struct SessionState {
    // Drop order is declaration order: the runners, which borrow the models, go first.
    runner: Box<dyn Runner + 'static>,
    drafter: Option<DraftModel<'static>>,
    model: Arc<Model>,
    /// Never read: keeps the model the drafter borrows alive.
    _draft_model: Option<Arc<Model>>,
    /// Guesses per decoding step at most.
    draft_n: usize,
    /// The vocabulary's token trie for constrained generations, built on first use.
    #[cfg(feature = "structured")]
    pub(crate) structured: Option<kiln_structured::Structured>,
}

impl SessionState {
    /// `model` compiled for `backend` as `params` say, and `draft` beside it on the same
    /// backend (outside the memory budget, which bounds the target).
    pub(crate) fn new(
        model: Arc<Model>,
        draft: Option<Arc<Model>>,
        params: &kiln_session_params,
        backend: Option<&str>,
    ) -> Result<SessionState, ApiError> {
        let draft_n = match params.draft_n {
            0 if draft.is_some() => SpecConfig::DRAFT_K_MAX,
            0 => SpecConfig::LOOKUP_K_MAX,
            n => (n as usize).min(64),
        };
        let runner = make_runner(&model, params, params.mem_budget, backend, draft_n + 1)?;
        let drafter = match &draft {
            None => None,
            Some(d) => {
                check_vocabulary(&model, d)?;
                Some(DraftModel::new(make_runner(d, params, 0, backend, 1)?))
            }
        };
        Ok(SessionState {
            runner,
            drafter,
            model,
            _draft_model: draft,
            draft_n,
            #[cfg(feature = "structured")]
            structured: None,
        })
    }

    #[cfg_attr(not(feature = "structured"), allow(dead_code))]
    pub(crate) fn tokenizer(&self) -> &kiln_engine::tokenizer::Tokenizer {
        &self.model.tokenizer
    }

    /// Generates `request`, speculating by prompt lookup of `lookup`-grams (when not 0),
    /// else with the draft model (when there is one); a generation held to `mask` does
    /// not speculate.
    pub(crate) fn generate(
        &mut self,
        request: &GenerateRequest,
        lookup: u32,
        mask: Option<&mut dyn TokenMask>,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<(Generation, SpecStats), ApiError> {
        let config = SpecConfig::new(self.draft_n);
        let tokenizer = &self.model.tokenizer;
        let runner = self.runner.as_mut();
        if let Some(mask) = mask {
            let generation = generate_masked(runner, tokenizer, request, mask, on_token)?;
            return Ok((generation, SpecStats::default()));
        }
        Ok(match (lookup, &mut self.drafter) {
            (0, None) => (
                generate(runner, tokenizer, request, on_token)?,
                SpecStats::default(),
            ),
            (0, Some(drafter)) => {
                speculative::generate(runner, drafter, &config, tokenizer, request, on_token)?
            }
            (n, _) => {
                let mut lookup = PromptLookup::new(n as usize)?;
                speculative::generate(runner, &mut lookup, &config, tokenizer, request, on_token)?
            }
        })
    }

    /// Bytes the runners allocated (0 for those that do not report it).
    pub(crate) fn memory_bytes(&self) -> u64 {
        let bytes = |r: &dyn Runner| r.memory().map_or(0, MemoryPlan::total_bytes) as u64;
        bytes(self.runner.as_ref()) + self.drafter.as_ref().map_or(0, |d| bytes(d.runner()))
    }
}

/// A runner of `model` (borrowed for 'static from behind its Arc: see the SAFETY note)
/// with room for `outputs` logits rows a step.
fn make_runner(
    model: &Arc<Model>,
    params: &kiln_session_params,
    mem_budget: u64,
    backend: Option<&str>,
    outputs: usize,
) -> Result<Box<dyn Runner + 'static>, ApiError> {
    // SAFETY: the Model lives on the heap inside the Arc and never moves; the session
    // keeps a clone of the Arc (`SessionState::model` or `_draft_model`), declared after
    // the runners, so the model outlives every use of this reference. The reference
    // never leaves the session.
    let model: &'static Model = unsafe { &*Arc::as_ptr(model) };
    let n_ctx = match params.n_ctx {
        0 => model.config.context_length,
        n => n as usize,
    };
    if n_ctx == 0 {
        return Err(ApiError::new(
            kiln_status::KILN_ERR_INVALID_ARGUMENT,
            "the context size must be at least 1",
        ));
    }
    let device = match backend {
        Some("ref") => return Ok(Box::new(Reference::new(model, n_ctx))),
        None if !kiln_backends::any_compiled() => {
            return Ok(Box::new(Reference::new(model, n_ctx)));
        }
        None => kiln_backends::open_best()?,
        Some(name) => kiln_backends::open(name)?,
    };
    let mut options = CompileOptions::new(n_ctx);
    options.kv_dtype = if params.kv_f16 {
        KvDtype::F16
    } else {
        KvDtype::F8E4M3
    };
    options.mem_budget_bytes = match mem_budget {
        0 => None,
        b => Some(usize::try_from(b).unwrap_or(usize::MAX)),
    };
    options.max_step_tokens = n_ctx.min(512);
    options.max_step_outputs = outputs.min(options.max_step_tokens);
    Ok(Box::new(Compiled::new(model, device, options)?))
}
