//! kiln's C API: embed the engine in a C (or any FFI-capable) program.
//!
//! Built as `libkiln.so` and `libkiln.a`; the header is `include/kiln.h`, generated from
//! this file by cbindgen (a test regenerates it and fails on drift). The calls:
//! load a model, create a session on it, tokenize, generate with a token callback,
//! cancel from another thread, free, and read the last error's message.
//!
//! Conventions at the boundary:
//! - Every function that can fail returns an `int` status: `KILN_OK` (0) or a negative
//!   [`kiln_status`]; `kiln_last_error()` then gives this thread's message.
//! - Every pointer argument is checked for null (and alignment) before use; a handle
//!   must come from this library and not be freed yet, strings must be NUL-terminated.
//! - No panic crosses the boundary: each entry point runs under `catch_unwind`, and a
//!   panic becomes `KILN_ERR_PANIC` with its message.
//! - Handles: a `kiln_model` is shared by the sessions created on it (freeing the model
//!   while sessions live is fine; it goes when the last one does). A session runs one
//!   generation at a time; `kiln_cancel` may be called from any thread while it runs.

// The C names are the API.
#![allow(non_camel_case_types)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use kiln_engine::driver::{GenerateRequest, StopReason, TokenMask};
use kiln_engine::model::Model;
use kiln_engine::sampler::SamplerConfig;

mod boundary;
mod constrained;
mod session;
use boundary::{ApiError, LAST_ERROR, arg_mut, arg_ref, arg_str, guard, null_arg};
use session::SessionState;

/// Status codes returned by every call that can fail (0 is success).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kiln_status {
    KILN_OK = 0,
    /// A required pointer argument was NULL (or misaligned).
    KILN_ERR_NULL_ARGUMENT = -1,
    /// An argument is out of range or malformed (bad UTF-8, bad sampling parameter,
    /// empty prompt, token id outside the vocabulary, unknown backend name).
    KILN_ERR_INVALID_ARGUMENT = -2,
    /// The model file could not be read (missing, unreadable).
    KILN_ERR_IO = -3,
    /// The model file is not a valid or supported model.
    KILN_ERR_MODEL = -4,
    /// The backend failed or is not in this build.
    KILN_ERR_BACKEND = -5,
    /// The memory budget cannot hold the model, or an allocation failed.
    KILN_ERR_OUT_OF_MEMORY = -6,
    /// The context (or the KV page pool) is full.
    KILN_ERR_CONTEXT_FULL = -7,
    /// The output buffer is too small; the size needed was written.
    KILN_ERR_BUFFER_TOO_SMALL = -8,
    /// The session is already generating on another thread.
    KILN_ERR_BUSY = -9,
    /// The call needs something this build of the library was built without
    /// (constrained generation: the cargo feature `structured`).
    KILN_ERR_UNSUPPORTED = -10,
    /// Any other engine error.
    KILN_ERR_INTERNAL = -99,
    /// A panic inside the library was caught; the handle involved should be freed.
    KILN_ERR_PANIC = -100,
}

/// Why a generation stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kiln_stop_reason {
    /// An end-of-generation token was sampled.
    KILN_STOP_EOG = 0,
    /// `max_tokens` were generated.
    KILN_STOP_LENGTH = 1,
    /// The context is full.
    KILN_STOP_CONTEXT_FULL = 2,
    /// The callback returned non-zero, or `kiln_cancel` was called.
    KILN_STOP_CANCELLED = 3,
}

/// What the grammar of `kiln_generate_constrained` is written in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kiln_grammar_kind {
    /// A JSON schema (the output is one JSON value valid against it).
    KILN_GRAMMAR_JSON_SCHEMA = 0,
    /// A Lark grammar in llguidance's dialect (`start: ...`; `%json {...}` embeds a
    /// schema).
    KILN_GRAMMAR_LARK = 1,
}

/// A loaded model (weights memory-mapped, tokenizer ready). Opaque.
#[derive(Debug)]
pub struct kiln_model {
    model: Arc<Model>,
}

/// A model compiled for a backend, with its KV cache: one generation at a time. Opaque.
pub struct kiln_session {
    /// Set by `kiln_cancel`, read between tokens; cleared when a generation starts.
    cancel: AtomicBool,
    state: Mutex<SessionState>,
}

impl std::fmt::Debug for kiln_session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("kiln_session")
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

/// How a session is built. Get the defaults from `kiln_session_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kiln_session_params {
    /// Positions the context holds; 0 takes the model's training context.
    pub n_ctx: u32,
    /// Bytes the session may allocate (arena, KV pages, buffers; mapped weights are not
    /// counted); 0 for no budget. The KV pool takes what is left; too small is an error.
    pub mem_budget: u64,
    /// Store the KV cache in f16 instead of FP8 E4M3.
    pub kv_f16: bool,
    /// Backend name ("cpu", "ref", ...), or NULL for the best one in this build.
    pub backend: *const c_char,
    /// Speculative decoding with a draft model: a model with the same vocabulary (the
    /// session keeps it alive), run on the session's backend; NULL for none.
    pub draft: *const kiln_model,
    /// Guesses verified per decoding step at most, of the draft model or of prompt
    /// lookup (fewer while they keep failing); 0 takes 4 with a draft model, else 16.
    pub draft_n: u32,
}

/// How to sample. Get the defaults from `kiln_generate_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kiln_generate_params {
    /// Stop after this many generated tokens.
    pub max_tokens: u32,
    /// 0 is greedy.
    pub temperature: f32,
    /// 0 keeps every token.
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    /// Keep going through end-of-generation tokens.
    pub ignore_eos: bool,
    /// Speculative decoding by prompt lookup: guess the tokens that followed the last
    /// `lookup` tokens (1 to 16) where they occur earlier in the text. 0: the session's
    /// draft model if it has one, else no speculation. Greedy output is the same either
    /// way; sampled output has the same distribution.
    pub lookup: u32,
}

/// What a generation did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kiln_generation {
    pub n_prompt: u32,
    pub n_generated: u32,
    /// A `kiln_stop_reason`.
    pub stop_reason: c_int,
    /// From the start of prefill to the first sampled token.
    pub ttft_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Speculative decoding: decoding steps after the first token, guesses verified in
    /// them and guesses kept (0 without speculation).
    pub n_steps: u32,
    pub n_drafted: u32,
    pub n_accepted: u32,
}

/// Called for every generated token with its text (`len` bytes of UTF-8, NUL-terminated;
/// possibly empty while a character is split across tokens). `token` is -1 for one final
/// call carrying text held back at the end. Return 0 to go on, non-zero to stop.
pub type kiln_token_callback = Option<
    unsafe extern "C" fn(user: *mut c_void, token: i32, piece: *const c_char, len: usize) -> c_int,
>;

// ---------------------------------------------------------------------------------------
// Library.

/// The library's version, e.g. "0.1.0" (static; never NULL).
#[unsafe(no_mangle)]
pub extern "C" fn kiln_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of this thread's last failed call ("" after a successful one). Valid
/// until the next kiln call on this thread; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn kiln_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

// ---------------------------------------------------------------------------------------
// Models.

/// Load a GGUF model (memory-mapped; weights are used in place). On success `*out` is a
/// new model to release with `kiln_model_free`; on failure it is set to NULL.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out` must be NULL or point to a
/// writable `kiln_model*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_load(path: *const c_char, out: *mut *mut kiln_model) -> c_int {
    guard(|| {
        // SAFETY: checked for null and alignment; the caller promises a writable pointer.
        let out = unsafe { arg_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        if path.is_null() {
            return Err(null_arg("path"));
        }
        // SAFETY: non-null; the caller promises a NUL-terminated string.
        let path = path_from_c(unsafe { CStr::from_ptr(path) });
        let model = Model::load(&path)?;
        *out = Box::into_raw(Box::new(kiln_model {
            model: Arc::new(model),
        }));
        Ok(())
    })
}

#[cfg(unix)]
fn path_from_c(c: &CStr) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(c.to_bytes()))
}

#[cfg(not(unix))]
fn path_from_c(c: &CStr) -> PathBuf {
    PathBuf::from(c.to_string_lossy().into_owned())
}

/// Release a model (NULL is ignored). Sessions created on it keep it alive until they
/// are freed.
///
/// # Safety
/// `model` must be NULL or a model from `kiln_model_load` not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_free(model: *mut kiln_model) {
    if model.is_null() || !model.is_aligned() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller passes a pointer from Box::into_raw in kiln_model_load,
        // freed once.
        drop(unsafe { Box::from_raw(model) });
    }));
}

/// Vocabulary size of a model, or a negative status.
///
/// # Safety
/// `model` must be NULL or a live model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_model_n_vocab(model: *const kiln_model) -> i32 {
    let mut n = 0;
    let status = guard(|| {
        // SAFETY: checked for null; the caller promises a live model.
        let model = unsafe { arg_ref(model, "model") }?;
        n = i32::try_from(model.model.config.vocab_size).unwrap_or(i32::MAX);
        Ok(())
    });
    if status == 0 { n } else { status }
}

/// Tokenize UTF-8 `text`. `add_special` adds BOS (and EOS) where the model asks for it,
/// as `kiln run` does; `parse_special` turns texts like "<|im_start|>" into their control
/// tokens. Writes at most `capacity` ids to `tokens` and the count to `*n_tokens`; when
/// `capacity` is too small, nothing is written, `*n_tokens` is the count needed and the
/// result is `KILN_ERR_BUFFER_TOO_SMALL` (`tokens` may be NULL when `capacity` is 0).
///
/// # Safety
/// `model` must be NULL or a live model, `text` NULL or NUL-terminated, `tokens` NULL or
/// writable for `capacity` ids, `n_tokens` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_tokenize(
    model: *const kiln_model,
    text: *const c_char,
    add_special: bool,
    parse_special: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: each pointer is checked for null; the caller promises validity.
        let model = unsafe { arg_ref(model, "model") }?;
        // SAFETY: as above.
        let n_tokens = unsafe { arg_mut(n_tokens, "n_tokens") }?;
        // SAFETY: as above.
        let text = unsafe { arg_str(text, "text") }?;
        if capacity > 0 && (tokens.is_null() || !tokens.is_aligned()) {
            return Err(null_arg("tokens"));
        }
        let ids = model
            .model
            .tokenizer
            .encode(text, add_special, parse_special);
        *n_tokens = ids.len();
        if ids.len() > capacity {
            return Err(ApiError::new(
                kiln_status::KILN_ERR_BUFFER_TOO_SMALL,
                format!("{} tokens do not fit in {capacity}", ids.len()),
            ));
        }
        if !ids.is_empty() {
            // SAFETY: tokens is non-null and aligned (checked above as capacity > 0) and the
            // caller promises room for `capacity` ≥ ids.len() values.
            let out = unsafe { std::slice::from_raw_parts_mut(tokens, ids.len()) };
            for (o, &id) in out.iter_mut().zip(&ids) {
                *o = id as i32;
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Sessions.

/// Defaults: the model's context, no memory budget, FP8 KV cache, the best backend, no
/// draft model.
#[unsafe(no_mangle)]
pub extern "C" fn kiln_session_default_params() -> kiln_session_params {
    kiln_session_params {
        n_ctx: 0,
        mem_budget: 0,
        kv_f16: false,
        backend: std::ptr::null(),
        draft: std::ptr::null(),
        draft_n: 0,
    }
}

/// Defaults of `kiln run`: 128 tokens, temperature 0.8, top-k 40, top-p 0.95, min-p 0.05,
/// seed 0, no prompt lookup.
#[unsafe(no_mangle)]
pub extern "C" fn kiln_generate_default_params() -> kiln_generate_params {
    kiln_generate_params {
        max_tokens: 128,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        seed: 0,
        ignore_eos: false,
        lookup: 0,
    }
}

/// Create a session on `model` (`params` NULL for the defaults): compiles the model for
/// the backend and sizes its memory. On failure `*out` is NULL.
///
/// # Safety
/// `model` must be NULL or a live model, `params` NULL or a valid struct (its `backend`
/// NULL or NUL-terminated), `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_create(
    model: *const kiln_model,
    params: *const kiln_session_params,
    out: *mut *mut kiln_session,
) -> c_int {
    guard(|| {
        // SAFETY: checked for null; the caller promises a writable pointer.
        let out = unsafe { arg_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: checked for null; the caller promises a live model.
        let model = unsafe { arg_ref(model, "model") }?;
        let params = if params.is_null() {
            kiln_session_default_params()
        } else {
            // SAFETY: non-null (checked); alignment checked; the caller promises validity.
            *unsafe { arg_ref(params, "params") }?
        };
        let backend = if params.backend.is_null() {
            None
        } else {
            // SAFETY: non-null; the caller promises a NUL-terminated string.
            Some(unsafe { arg_str(params.backend, "params.backend") }?)
        };
        let draft = if params.draft.is_null() {
            None
        } else {
            // SAFETY: non-null; the caller promises a live model.
            Some(Arc::clone(
                &unsafe { arg_ref(params.draft, "params.draft") }?.model,
            ))
        };
        let state = SessionState::new(Arc::clone(&model.model), draft, &params, backend)?;
        *out = Box::into_raw(Box::new(kiln_session {
            cancel: AtomicBool::new(false),
            state: Mutex::new(state),
        }));
        Ok(())
    })
}

/// Release a session (NULL is ignored). Not while a call on it runs on another thread.
///
/// # Safety
/// `session` must be NULL or a session from `kiln_session_create` not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_free(session: *mut kiln_session) {
    if session.is_null() || !session.is_aligned() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller passes a pointer from Box::into_raw in kiln_session_create,
        // freed once, with no call on it still running.
        drop(unsafe { Box::from_raw(session) });
    }));
}

/// Ask the generation running on `session` to stop after the current token (from any
/// thread). A generation started later is not affected.
///
/// # Safety
/// `session` must be NULL or a live session.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_cancel(session: *const kiln_session) -> c_int {
    guard(|| {
        // SAFETY: checked for null; the caller promises a live session. Only the atomic
        // is touched, through a shared reference.
        let session = unsafe { arg_ref(session, "session") }?;
        session.cancel.store(true, Ordering::SeqCst);
        Ok(())
    })
}

/// Generate from `prompt` (ids from `kiln_tokenize`) on a fresh context, calling
/// `callback` (may be NULL) for every token as soon as it is sampled. `params` NULL takes
/// the defaults; `out` (may be NULL) receives counts, the stop reason and timings.
///
/// # Safety
/// `session` must be NULL or a live session, `prompt` NULL or readable for `n_prompt`
/// ids, `params` NULL or valid, `out` NULL or writable; `callback` must be safe to call
/// with `user`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_generate(
    session: *const kiln_session,
    prompt: *const i32,
    n_prompt: usize,
    params: *const kiln_generate_params,
    callback: kiln_token_callback,
    user: *mut c_void,
    out: *mut kiln_generation,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's promises are kiln_generate's, passed on unchanged.
        unsafe { generate(session, prompt, n_prompt, params, None, callback, user, out) }
    })
}

/// `kiln_generate` with the output held to a grammar: `kind` a `kiln_grammar_kind`,
/// `grammar` its NUL-terminated text. Only tokens that keep the output inside the
/// grammar are sampled, and the generation ends (KILN_STOP_EOG) when the grammar is
/// complete. A constrained generation does not speculate: `params->lookup` must be 0 and
/// a session's draft model is not used. The session keeps its vocabulary's token trie
/// after the first call (it is built once).
///
/// A grammar that does not compile is KILN_ERR_INVALID_ARGUMENT with the reason in
/// `kiln_last_error()`. A library built without structured outputs (the edge build; the
/// cargo feature `structured` adds them) returns KILN_ERR_UNSUPPORTED.
///
/// # Safety
/// As `kiln_generate`; `grammar` must be NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kiln_generate_constrained(
    session: *const kiln_session,
    prompt: *const i32,
    n_prompt: usize,
    params: *const kiln_generate_params,
    kind: c_int,
    grammar: *const c_char,
    callback: kiln_token_callback,
    user: *mut c_void,
    out: *mut kiln_generation,
) -> c_int {
    guard(|| {
        // SAFETY: checked for null; the caller promises a NUL-terminated string.
        let grammar = unsafe { arg_str(grammar, "grammar") }?;
        let kind = constrained::Kind::from_c(kind)?;
        // SAFETY: the caller's promises are kiln_generate's, passed on unchanged.
        unsafe {
            generate(
                session,
                prompt,
                n_prompt,
                params,
                Some((kind, grammar)),
                callback,
                user,
                out,
            )
        }
    })
}

/// What `kiln_generate` and `kiln_generate_constrained` share.
///
/// # Safety
/// As `kiln_generate`.
#[allow(clippy::too_many_arguments)]
unsafe fn generate(
    session: *const kiln_session,
    prompt: *const i32,
    n_prompt: usize,
    params: *const kiln_generate_params,
    grammar: Option<(constrained::Kind, &str)>,
    callback: kiln_token_callback,
    user: *mut c_void,
    out: *mut kiln_generation,
) -> Result<(), ApiError> {
    // SAFETY: checked for null; the caller promises a live session.
    let session = unsafe { arg_ref(session, "session") }?;
    if prompt.is_null() || !prompt.is_aligned() {
        return Err(null_arg("prompt"));
    }
    if !out.is_null() && !out.is_aligned() {
        return Err(null_arg("out"));
    }
    let params = if params.is_null() {
        kiln_generate_default_params()
    } else {
        // SAFETY: non-null (checked) and aligned; the caller promises validity.
        *unsafe { arg_ref(params, "params") }?
    };
    // SAFETY: non-null and aligned (checked); the caller promises n_prompt readable ids.
    let prompt = unsafe { std::slice::from_raw_parts(prompt, n_prompt) };
    let prompt_ids = prompt
        .iter()
        .map(|&id| u32::try_from(id))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| {
            ApiError::new(
                kiln_status::KILN_ERR_INVALID_ARGUMENT,
                "the prompt holds a negative token id",
            )
        })?;
    let mut state = match session.state.try_lock() {
        Ok(state) => state,
        Err(TryLockError::WouldBlock) => {
            return Err(ApiError::new(
                kiln_status::KILN_ERR_BUSY,
                "the session is generating on another thread",
            ));
        }
        Err(TryLockError::Poisoned(_)) => {
            return Err(ApiError::new(
                kiln_status::KILN_ERR_PANIC,
                "the session is unusable after an internal panic; free it",
            ));
        }
    };
    let mut mask = match grammar {
        None => None,
        Some(_) if params.lookup != 0 => {
            return Err(ApiError::new(
                kiln_status::KILN_ERR_INVALID_ARGUMENT,
                "a constrained generation does not speculate: params.lookup must be 0",
            ));
        }
        Some((kind, text)) => Some(constrained::compile(&mut state, kind, text)?),
    };
    session.cancel.store(false, Ordering::SeqCst);
    let request = GenerateRequest {
        prompt_ids,
        max_tokens: params.max_tokens as usize,
        sampler: SamplerConfig {
            temperature: params.temperature,
            top_k: params.top_k as usize,
            top_p: params.top_p,
            min_p: params.min_p,
            seed: params.seed,
        },
        ignore_eos: params.ignore_eos,
        logprobs: 0,
    };
    let mut piece = Vec::<u8>::new();
    // The Box's `dyn TokenMask + 'static` shortened to this call's borrow.
    let mask = mask.as_mut().map(|m| &mut **m as &mut dyn TokenMask);
    let (result, spec) = state.generate(&request, params.lookup, mask, |event| {
        let mut go_on = true;
        if let Some(cb) = callback {
            piece.clear();
            piece.extend_from_slice(event.text.as_bytes());
            piece.push(0);
            let token = if event.tail { -1 } else { event.id as i32 };
            // SAFETY: the caller promises `callback` may be called with `user`; the
            // piece is NUL-terminated and lives through the call.
            let stop = unsafe { cb(user, token, piece.as_ptr().cast(), event.text.len()) };
            go_on = stop == 0;
        }
        go_on && !session.cancel.load(Ordering::SeqCst)
    })?;
    if !out.is_null() {
        // SAFETY: non-null and aligned (checked); the caller promises it is writable.
        unsafe {
            *out = kiln_generation {
                n_prompt: result.prompt_tokens as u32,
                n_generated: result.tokens.len() as u32,
                stop_reason: stop_reason(result.stop_reason) as c_int,
                ttft_ms: result.ttft_ms,
                prefill_tok_s: result.prefill_tok_s,
                decode_tok_s: result.decode_tok_s,
                n_steps: spec.steps as u32,
                n_drafted: spec.drafted as u32,
                n_accepted: spec.accepted as u32,
            };
        }
    }
    Ok(())
}

fn stop_reason(r: StopReason) -> kiln_stop_reason {
    match r {
        StopReason::EndOfGeneration => kiln_stop_reason::KILN_STOP_EOG,
        StopReason::Length => kiln_stop_reason::KILN_STOP_LENGTH,
        StopReason::ContextFull => kiln_stop_reason::KILN_STOP_CONTEXT_FULL,
        StopReason::Cancelled => kiln_stop_reason::KILN_STOP_CANCELLED,
    }
}

/// Bytes the session's engine allocated (arena, KV pages, buffers; mapped weights not
/// counted; a draft model's included), or 0 for a runner that does not report it.
///
/// # Safety
/// `session` must be NULL or a live session not generating on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kiln_session_memory(
    session: *const kiln_session,
    bytes: *mut u64,
) -> c_int {
    guard(|| {
        // SAFETY: checked for null; the caller promises a live session.
        let session = unsafe { arg_ref(session, "session") }?;
        // SAFETY: checked for null; the caller promises a writable pointer.
        let bytes = unsafe { arg_mut(bytes, "bytes") }?;
        let state = session
            .state
            .try_lock()
            .map_err(|_| ApiError::new(kiln_status::KILN_ERR_BUSY, "the session is busy"))?;
        *bytes = state.memory_bytes();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundary::set_last_error;
    use kiln_engine::Error;

    fn last_error() -> String {
        // SAFETY: kiln_last_error never returns NULL; the string lives until the next call.
        unsafe { CStr::from_ptr(kiln_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom at the boundary"));
        assert_eq!(status, kiln_status::KILN_ERR_PANIC as c_int);
        assert!(
            last_error().contains("boom at the boundary"),
            "{}",
            last_error()
        );
        let status = guard(|| Ok(()));
        assert_eq!(status, kiln_status::KILN_OK as c_int);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn engine_errors_map_to_their_codes() {
        let code = |e: Error| ApiError::from(e).status;
        assert_eq!(
            code(Error::EmptyPrompt),
            kiln_status::KILN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            code(Error::ContextFull {
                needed: 9,
                n_ctx: 8
            }),
            kiln_status::KILN_ERR_CONTEXT_FULL
        );
        assert_eq!(
            ApiError::from(kiln_backends::open("tpu").err().unwrap()).status,
            kiln_status::KILN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            code(Error::UnsupportedArchitecture("gpt2".into())),
            kiln_status::KILN_ERR_MODEL
        );
    }

    #[test]
    fn messages_with_nul_bytes_are_kept_readable() {
        set_last_error("a\0b");
        assert_eq!(last_error(), "a\\0b");
    }
}
