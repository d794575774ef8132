//! The C API called from Rust as a C program would: streaming, stopping from the
//! callback, cancelling from another thread, the memory budget, and the error paths.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::mpsc;

use kiln::*;

const OK: c_int = kiln_status::KILN_OK as c_int;

fn last_error() -> String {
    // SAFETY: kiln_last_error never returns NULL and the string lives until the next call
    // on this thread.
    unsafe { CStr::from_ptr(kiln_last_error()) }
        .to_string_lossy()
        .into_owned()
}

struct Loaded {
    model: *mut kiln_model,
    session: *mut kiln_session,
    prompt: Vec<i32>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: both come from kiln_*_create/load (or are NULL) and are freed once.
        unsafe {
            kiln_session_free(self.session);
            kiln_model_free(self.model);
        }
    }
}

fn load(params: Option<kiln_session_params>) -> Option<Loaded> {
    let path = kiln_tests::reference_model();
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let mut loaded = Loaded {
        model: ptr::null_mut(),
        session: ptr::null_mut(),
        prompt: vec![0; 64],
    };
    // SAFETY: valid C string and out pointer.
    let status = unsafe { kiln_model_load(path.as_ptr(), &mut loaded.model) };
    assert_eq!(status, OK, "{}", last_error());
    let text = CString::new("Once upon a time").unwrap();
    let mut n = 0usize;
    // SAFETY: live model, C string, buffer of 64 ids, out pointer.
    let status = unsafe {
        kiln_tokenize(
            loaded.model,
            text.as_ptr(),
            true,
            true,
            loaded.prompt.as_mut_ptr(),
            loaded.prompt.len(),
            &mut n,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    loaded.prompt.truncate(n);
    let params_ptr = params.as_ref().map_or(ptr::null(), |p| p as *const _);
    // SAFETY: live model, params NULL or valid, out pointer.
    let status = unsafe { kiln_session_create(loaded.model, params_ptr, &mut loaded.session) };
    assert_eq!(status, OK, "{}", last_error());
    Some(loaded)
}

struct Seen {
    tokens: Vec<i32>,
    text: Vec<u8>,
    stop_after: usize,
    first_token: Option<mpsc::Sender<()>>,
}

unsafe extern "C" fn collect(
    user: *mut c_void,
    token: i32,
    piece: *const c_char,
    len: usize,
) -> c_int {
    // SAFETY: `user` is the &mut Seen passed to kiln_generate, alive during the call.
    let seen = unsafe { &mut *(user as *mut Seen) };
    // SAFETY: the library passes `len` readable bytes followed by a NUL.
    let bytes = unsafe { std::slice::from_raw_parts(piece.cast::<u8>(), len + 1) };
    assert_eq!(bytes[len], 0, "the piece is NUL-terminated");
    seen.text.extend_from_slice(&bytes[..len]);
    if token >= 0 {
        seen.tokens.push(token);
    }
    if let Some(tx) = seen.first_token.take() {
        let _ = tx.send(());
        // Give the cancelling thread time to act while this generation is still running.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    c_int::from(seen.tokens.len() >= seen.stop_after)
}

fn greedy(max_tokens: u32) -> kiln_generate_params {
    kiln_generate_params {
        max_tokens,
        temperature: 0.0,
        ..kiln_generate_default_params()
    }
}

#[test]
fn tokens_stream_through_the_callback_and_it_can_stop_them() {
    let Some(s) = load(None) else { return };
    let mut seen = Seen {
        tokens: Vec::new(),
        text: Vec::new(),
        stop_after: usize::MAX,
        first_token: None,
    };
    let mut result = kiln_generation::default();
    let params = greedy(12);
    // SAFETY: live session, prompt slice, valid params, callback with its user data.
    let status = unsafe {
        kiln_generate(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            &params,
            Some(collect),
            (&mut seen as *mut Seen).cast(),
            &mut result,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    assert_eq!(result.n_generated as usize, seen.tokens.len());
    assert_eq!(result.n_prompt as usize, s.prompt.len());
    assert!(!seen.text.is_empty());
    assert!(std::str::from_utf8(&seen.text).is_ok());
    let all = seen.tokens.clone();

    // The same greedy run again, stopped by the callback after 3 tokens.
    let mut stopped = Seen {
        tokens: Vec::new(),
        text: Vec::new(),
        stop_after: 3,
        first_token: None,
    };
    // SAFETY: as above.
    let status = unsafe {
        kiln_generate(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            &params,
            Some(collect),
            (&mut stopped as *mut Seen).cast(),
            &mut result,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    assert_eq!(stopped.tokens, all[..3]);
    assert_eq!(
        result.stop_reason,
        kiln_stop_reason::KILN_STOP_CANCELLED as c_int
    );
}

#[test]
fn cancel_from_another_thread_stops_the_generation() {
    let Some(s) = load(None) else { return };
    let (tx, rx) = mpsc::channel();
    let mut seen = Seen {
        tokens: Vec::new(),
        text: Vec::new(),
        stop_after: usize::MAX,
        first_token: Some(tx),
    };
    let params = kiln_generate_params {
        ignore_eos: true,
        ..greedy(200)
    };
    let session = s.session as usize;
    let canceller = std::thread::spawn(move || {
        rx.recv().expect("a first token");
        // SAFETY: the session outlives this thread (joined before it is freed).
        unsafe { kiln_cancel(session as *const kiln_session) }
    });
    let mut result = kiln_generation::default();
    // SAFETY: live session, prompt, params, callback and user data.
    let status = unsafe {
        kiln_generate(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            &params,
            Some(collect),
            (&mut seen as *mut Seen).cast(),
            &mut result,
        )
    };
    assert_eq!(canceller.join().unwrap(), OK);
    assert_eq!(status, OK, "{}", last_error());
    assert_eq!(
        result.stop_reason,
        kiln_stop_reason::KILN_STOP_CANCELLED as c_int
    );
    assert!(result.n_generated < 200, "{} tokens", result.n_generated);

    // A later generation is not cancelled.
    let mut result = kiln_generation::default();
    let params = greedy(4);
    // SAFETY: as above, without a callback.
    let status = unsafe {
        kiln_generate(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            &params,
            None,
            ptr::null_mut(),
            &mut result,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    assert_eq!(result.n_generated, 4);
}

#[test]
fn a_memory_budget_bounds_the_session() {
    let budget = 8u64 << 20;
    let params = kiln_session_params {
        mem_budget: budget,
        ..kiln_session_default_params()
    };
    let Some(s) = load(Some(params)) else { return };
    let mut bytes = 0u64;
    // SAFETY: live session, out pointer.
    let status = unsafe { kiln_session_memory(s.session, &mut bytes) };
    assert_eq!(status, OK, "{}", last_error());
    assert!(
        bytes > 0 && bytes <= budget,
        "{bytes} bytes under a budget of {budget}"
    );
    let mut result = kiln_generation::default();
    let params = greedy(4);
    // SAFETY: live session, prompt, params, out.
    let status = unsafe {
        kiln_generate(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            &params,
            None,
            ptr::null_mut(),
            &mut result,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    assert_eq!(result.n_generated, 4);
}

#[test]
fn bad_arguments_are_error_codes_with_messages() {
    // Not NULL, so that the test sees the library reset it.
    let mut model = ptr::NonNull::<kiln_model>::dangling().as_ptr();
    // SAFETY: NULL path is an argument error, out is valid.
    let status = unsafe { kiln_model_load(ptr::null(), &mut model) };
    assert_eq!(status, kiln_status::KILN_ERR_NULL_ARGUMENT as c_int);
    assert!(model.is_null());
    assert!(last_error().contains("path"), "{}", last_error());

    let missing = CString::new("/nonexistent/kiln.gguf").unwrap();
    // SAFETY: valid arguments; the file is missing.
    let status = unsafe { kiln_model_load(missing.as_ptr(), &mut model) };
    assert_eq!(status, kiln_status::KILN_ERR_IO as c_int);
    assert!(
        last_error().contains("/nonexistent/kiln.gguf"),
        "{}",
        last_error()
    );

    // A file that is not GGUF.
    let not_gguf = std::env::temp_dir().join(format!("kiln-capi-{}.gguf", std::process::id()));
    std::fs::write(&not_gguf, b"not a model at all, just text").unwrap();
    let path = CString::new(not_gguf.to_str().unwrap()).unwrap();
    // SAFETY: valid arguments; the file is not a model.
    let status = unsafe { kiln_model_load(path.as_ptr(), &mut model) };
    let _ = std::fs::remove_file(&not_gguf);
    assert_eq!(status, kiln_status::KILN_ERR_MODEL as c_int);
    assert!(last_error().contains("GGUF"), "{}", last_error());

    // A success clears the message.
    assert!(!kiln_version().is_null());
    // SAFETY: NULL handles are ignored or reported.
    unsafe {
        kiln_model_free(ptr::null_mut());
        kiln_session_free(ptr::null_mut());
        assert_eq!(
            kiln_model_n_vocab(ptr::null()),
            kiln_status::KILN_ERR_NULL_ARGUMENT as c_int
        );
        assert_eq!(
            kiln_cancel(ptr::null()),
            kiln_status::KILN_ERR_NULL_ARGUMENT as c_int
        );
    }
    let Some(s) = load(None) else { return };
    // SAFETY: live model.
    assert_eq!(unsafe { kiln_model_n_vocab(s.model) }, 49152);
    assert_eq!(last_error(), "");

    // Invalid UTF-8 text.
    let bad = [0xffu8, 0xfe, 0];
    let mut n = 0usize;
    // SAFETY: NUL-terminated bytes; no token buffer (capacity 0).
    let status = unsafe {
        kiln_tokenize(
            s.model,
            bad.as_ptr().cast(),
            true,
            true,
            ptr::null_mut(),
            0,
            &mut n,
        )
    };
    assert_eq!(status, kiln_status::KILN_ERR_INVALID_ARGUMENT as c_int);
    // A negative token id.
    let prompt = [1i32, -5];
    // SAFETY: live session, two ids.
    let status = unsafe {
        kiln_generate(
            s.session,
            prompt.as_ptr(),
            2,
            ptr::null(),
            None,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    assert_eq!(status, kiln_status::KILN_ERR_INVALID_ARGUMENT as c_int);
    assert!(last_error().contains("negative"), "{}", last_error());
}

/// Greedy tokens of `session` for the loaded prompt, with `lookup`; the counts too.
fn greedy_tokens(
    session: *mut kiln_session,
    prompt: &[i32],
    lookup: u32,
) -> (Vec<i32>, kiln_generation) {
    let mut seen = Seen {
        tokens: Vec::new(),
        text: Vec::new(),
        stop_after: usize::MAX,
        first_token: None,
    };
    let params = kiln_generate_params {
        ignore_eos: true,
        lookup,
        ..greedy(40)
    };
    let mut result = kiln_generation::default();
    // SAFETY: live session, prompt slice, valid params, callback with its user data.
    let status = unsafe {
        kiln_generate(
            session,
            prompt.as_ptr(),
            prompt.len(),
            &params,
            Some(collect),
            (&mut seen as *mut Seen).cast(),
            &mut result,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    (seen.tokens, result)
}

#[test]
fn speculative_generation_gives_the_greedy_tokens() {
    let Some(s) = load(None) else { return };
    let (plain, r) = greedy_tokens(s.session, &s.prompt, 0);
    assert_eq!((r.n_drafted, r.n_accepted), (0, 0), "no speculation asked");
    let (lookup, r) = greedy_tokens(s.session, &s.prompt, 2);
    assert_eq!(lookup, plain, "prompt lookup");
    assert!(r.n_steps > 0 && r.n_steps < 40 && r.n_accepted <= r.n_drafted);

    // A session with the model drafting for itself: every guess kept.
    let params = kiln_session_params {
        draft: s.model,
        draft_n: 3,
        ..kiln_session_default_params()
    };
    let mut session = ptr::null_mut();
    // SAFETY: live model, valid params (their draft is a live model), out pointer.
    let status = unsafe { kiln_session_create(s.model, &params, &mut session) };
    assert_eq!(status, OK, "{}", last_error());
    let (drafted, r) = greedy_tokens(session, &s.prompt, 0);
    assert_eq!(drafted, plain, "draft model");
    assert!(r.n_drafted > 0);
    assert_eq!(r.n_accepted, r.n_drafted);
    let mut bytes = 0u64;
    // SAFETY: live session, out pointer.
    assert_eq!(unsafe { kiln_session_memory(session, &mut bytes) }, OK);
    assert!(bytes > 0);
    // SAFETY: from kiln_session_create, freed once.
    unsafe { kiln_session_free(session) };
    assert_eq!(
        greedy_tokens(s.session, &s.prompt, 0).0,
        plain,
        "the model outlives the draft session"
    );
}

/// `kiln_generate_constrained` on `grammar`: the status and the text generated.
fn constrained(
    s: &Loaded,
    kind: kiln_grammar_kind,
    grammar: &str,
    params: &kiln_generate_params,
) -> (c_int, String, kiln_generation) {
    let grammar = CString::new(grammar).unwrap();
    let mut seen = Seen {
        tokens: Vec::new(),
        text: Vec::new(),
        stop_after: usize::MAX,
        first_token: None,
    };
    let mut result = kiln_generation::default();
    // SAFETY: live session, prompt slice, valid params, C string, callback with its user data.
    let status = unsafe {
        kiln_generate_constrained(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            params,
            kind as c_int,
            grammar.as_ptr(),
            Some(collect),
            (&mut seen as *mut Seen).cast(),
            &mut result,
        )
    };
    (status, String::from_utf8(seen.text).unwrap(), result)
}

#[cfg(feature = "structured")]
#[test]
fn constrained_generations_keep_to_their_grammar() {
    let Some(s) = load(None) else { return };
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"],
        "additionalProperties": false}"#;
    let sampled = kiln_generate_params {
        max_tokens: 64,
        temperature: 0.9,
        seed: 7,
        ..kiln_generate_default_params()
    };
    for params in [greedy(64), sampled] {
        let (status, text, result) = constrained(
            &s,
            kiln_grammar_kind::KILN_GRAMMAR_JSON_SCHEMA,
            schema,
            &params,
        );
        assert_eq!(status, OK, "{}", last_error());
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(
            v["name"].as_str().is_some_and(|n| n.chars().count() <= 8),
            "{v}"
        );
        assert!((0..=120).contains(&v["age"].as_i64().unwrap()), "{v}");
        assert_eq!(result.stop_reason, kiln_stop_reason::KILN_STOP_EOG as c_int);
    }
    let (status, text, _) = constrained(
        &s,
        kiln_grammar_kind::KILN_GRAMMAR_LARK,
        r#"start: ("yes" | "no") "." "#,
        &greedy(16),
    );
    assert_eq!(status, OK, "{}", last_error());
    assert!(text == "yes." || text == "no.", "{text:?}");
    // A bad grammar or kind is an invalid argument with the reason; lookup is refused.
    for (kind, grammar) in [
        (0, "{\"type\": \"objekt\"}"),
        (0, "not json"),
        (1, "start: undefined_rule"),
        (7, "{}"),
    ] {
        let grammar = CString::new(grammar).unwrap();
        // SAFETY: live session and prompt, C string; no callback.
        let status = unsafe {
            kiln_generate_constrained(
                s.session,
                s.prompt.as_ptr(),
                s.prompt.len(),
                ptr::null(),
                kind,
                grammar.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        assert_eq!(
            status,
            kiln_status::KILN_ERR_INVALID_ARGUMENT as c_int,
            "{kind} {grammar:?}"
        );
        assert!(!last_error().is_empty());
    }
    let lookup = kiln_generate_params {
        lookup: 2,
        ..greedy(8)
    };
    let (status, _, _) = constrained(
        &s,
        kiln_grammar_kind::KILN_GRAMMAR_JSON_SCHEMA,
        schema,
        &lookup,
    );
    assert_eq!(status, kiln_status::KILN_ERR_INVALID_ARGUMENT as c_int);
    assert!(last_error().contains("lookup"), "{}", last_error());
}

#[cfg(not(feature = "structured"))]
#[test]
fn the_edge_build_says_constraints_are_not_in_it() {
    let Some(s) = load(None) else { return };
    let (status, text, _) = constrained(
        &s,
        kiln_grammar_kind::KILN_GRAMMAR_JSON_SCHEMA,
        "{}",
        &greedy(8),
    );
    assert_eq!(status, kiln_status::KILN_ERR_UNSUPPORTED as c_int);
    assert!(last_error().contains("structured"), "{}", last_error());
    assert!(text.is_empty());
    // The session still generates.
    let params = greedy(4);
    let mut result = kiln_generation::default();
    // SAFETY: live session and prompt, valid params; no callback.
    let status = unsafe {
        kiln_generate(
            s.session,
            s.prompt.as_ptr(),
            s.prompt.len(),
            &params,
            None,
            ptr::null_mut(),
            &mut result,
        )
    };
    assert_eq!(status, OK, "{}", last_error());
    assert_eq!(result.n_generated, 4);
}
