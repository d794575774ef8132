//! The C API's session calls: default parameters, create and free a session, generate
//! (plain and constrained), cancel. (lib.rs has the types and the conventions at the
//! boundary.)

use super::*;

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
