//! The access log of `kiln serve` (on unless `--quiet`): one line per request on stderr,
//!
//! ```text
//! kiln serve: POST /v1/chat/completions 200 31+48 tokens 1.204 s
//! ```
//!
//! method, path, status, tokens (prompt + completion, for generation requests that got
//! that far) and the time from the request's arrival to the end of its response body, so
//! a stream is logged when its last event is sent, or when its client leaves.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::response::Usage;

/// Where a generation request leaves its token counts for the log line (set when the
/// engine reports it done; the response carries it as an extension).
#[derive(Clone, Debug, Default)]
pub(crate) struct UsageCell(Arc<Mutex<Option<(usize, usize)>>>);

impl UsageCell {
    pub(crate) fn set(&self, usage: &Usage) {
        if let Ok(mut cell) = self.0.lock() {
            *cell = Some((usage.prompt_tokens, usage.completion_tokens));
        }
    }

    fn get(&self) -> Option<(usize, usize)> {
        self.0.lock().ok().and_then(|cell| *cell)
    }
}

/// The middleware: the line is written when the response body is dropped.
pub(crate) async fn log_requests(request: Request, next: Next) -> Response {
    let line = Line {
        start: Instant::now(),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        status: StatusCode::OK,
        usage: None,
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let line = Line {
        status: parts.status,
        usage: parts.extensions.get::<UsageCell>().cloned(),
        ..line
    };
    Response::from_parts(
        parts,
        Body::new(LoggedBody {
            inner: body,
            line: Some(line),
        }),
    )
}

struct Line {
    start: Instant,
    method: Method,
    path: String,
    status: StatusCode,
    usage: Option<UsageCell>,
}

impl Line {
    fn write(&self) {
        let tokens = match self.usage.as_ref().and_then(UsageCell::get) {
            Some((prompt, completion)) => format!(" {prompt}+{completion} tokens"),
            None => String::new(),
        };
        eprintln!(
            "kiln serve: {} {} {}{tokens} {:.3} s",
            self.method,
            self.path,
            self.status.as_u16(),
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// A response body that writes its request's line once it is dropped.
struct LoggedBody {
    inner: Body,
    line: Option<Line>,
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            line.write();
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
