//! The C boundary: the error type every entry point returns, this thread's last-error
//! message, the guard that turns errors and panics into a status, and checked pointer
//! arguments. Nothing here is part of the C API itself.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use kiln_engine::Error;
use kiln_engine::gguf::GgufError;
use kiln_ir::backend::BackendError;

use crate::kiln_status;

pub(crate) struct ApiError {
    pub(crate) status: kiln_status,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: kiln_status, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<kiln_backends::RegistryError> for ApiError {
    fn from(e: kiln_backends::RegistryError) -> ApiError {
        match e {
            kiln_backends::RegistryError::Open(e) => Error::Backend(e).into(),
            other => ApiError::new(kiln_status::KILN_ERR_INVALID_ARGUMENT, other.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        use kiln_status::*;
        let status = match &e {
            Error::Gguf(GgufError::Io { .. }) => KILN_ERR_IO,
            Error::Gguf(_)
            | Error::Tokenizer(_)
            | Error::UnsupportedArchitecture(_)
            | Error::BadConfig(_)
            | Error::TensorShape { .. }
            | Error::UnsupportedTensorType { .. }
            | Error::Quant { .. }
            | Error::Ir(_) => KILN_ERR_MODEL,
            Error::Backend(BackendError::OutOfMemory { .. })
            | Error::MemoryBudget(_)
            | Error::DeviceMemory(_) => KILN_ERR_OUT_OF_MEMORY,
            Error::Backend(_) => KILN_ERR_BACKEND,
            Error::ContextFull { .. } | Error::Kv(_) => KILN_ERR_CONTEXT_FULL,
            Error::TokenOutOfRange { .. }
            | Error::EmptyPrompt
            | Error::BadSampling(_)
            | Error::Invalid(_) => KILN_ERR_INVALID_ARGUMENT,
            #[allow(unreachable_patterns)]
            _ => KILN_ERR_INTERNAL,
        };
        ApiError::new(status, e.to_string())
    }
}

thread_local! {
    pub(crate) static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Run one entry point: clear this thread's error, catch panics, turn errors into a
/// status and a message.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), ApiError>) -> c_int {
    set_last_error("");
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(ApiError::new(
            kiln_status::KILN_ERR_PANIC,
            format!("internal error (panic): {what}"),
        ))
    });
    match outcome {
        Ok(()) => kiln_status::KILN_OK as c_int,
        Err(e) => {
            set_last_error(&e.message);
            e.status as c_int
        }
    }
}

pub(crate) fn null_arg(name: &str) -> ApiError {
    ApiError::new(
        kiln_status::KILN_ERR_NULL_ARGUMENT,
        format!("{name} is NULL or misaligned"),
    )
}

/// `p` as a reference, or an error naming the argument when it is null or misaligned.
///
/// # Safety
/// A non-null, aligned `p` must point to a live `T` for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, ApiError> {
    if p.is_null() || !p.is_aligned() {
        return Err(null_arg(name));
    }
    // SAFETY: non-null and aligned; the caller promises it points to a live T.
    Ok(unsafe { &*p })
}

/// `p` as a mutable reference, checked like [`arg_ref`].
///
/// # Safety
/// A non-null, aligned `p` must point to a `T` nobody else accesses during `'a`.
pub(crate) unsafe fn arg_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, ApiError> {
    if p.is_null() || !p.is_aligned() {
        return Err(null_arg(name));
    }
    // SAFETY: non-null and aligned; the caller promises exclusive access to a live T.
    Ok(unsafe { &mut *p })
}

/// A NUL-terminated C string as UTF-8.
///
/// # Safety
/// A non-null `p` must point to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, ApiError> {
    if p.is_null() {
        return Err(null_arg(name));
    }
    // SAFETY: non-null; the caller promises a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| {
        ApiError::new(
            kiln_status::KILN_ERR_INVALID_ARGUMENT,
            format!("{name} is not valid UTF-8"),
        )
    })
}
