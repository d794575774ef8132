//! The C API's model calls: load and free a model, its vocabulary size, tokenization.
//! (lib.rs has the types and the conventions at the boundary.)

use super::*;

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
