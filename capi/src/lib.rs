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
// The calls, in the header's order (cbindgen reads the modules as declared).
mod model_calls;
mod session;
mod session_calls;
use boundary::{ApiError, LAST_ERROR, arg_mut, arg_ref, arg_str, guard, null_arg};
pub use model_calls::*;
use session::SessionState;
pub use session_calls::*;

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
