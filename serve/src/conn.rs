//! Connections: the accept loop of `kiln serve`, with the limits that keep slow, idle and
//! oversized clients from exhausting the server.
//!
//! axum's `serve` takes neither timeouts nor a connection limit, so the loop is axum's own
//! "serve with hyper" pattern: each accepted socket is served by hyper's HTTP/1 connection
//! with a timer, under a semaphore permit.
//! - A request's head must arrive within `header_timeout` of the connection opening or of
//!   its previous response: hyper starts that timer whenever it waits for a head, so it
//!   closes slow headers and idle keep-alive connections alike.
//! - Bodies have their own deadline and size limit, enforced where they are read
//!   (`http.rs`), so that the answer is an OpenAI error object.
//! - At most `max_connections` are served at once (kept below the process's open-file
//!   limit); one more is answered `503` with an error object and closed at once, so a
//!   flood never blocks the accept loop or runs the process out of descriptors.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

use super::api::ApiError;

/// Descriptors kept out of the connection cap: the model file, the listener, stdio, the
/// runtime's own, and the refusals in flight.
pub const RESERVED_FDS: u64 = 64;
/// Refusals being written at once; past this a connection over the cap is closed unanswered.
const REFUSALS_AT_ONCE: usize = 16;
/// How long a refusal may take to write and drain before its socket is closed.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// What the HTTP side allows each client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once (capped below the open-file limit at start).
    pub max_connections: usize,
    /// A request's head must arrive within this time of the connection opening or of the
    /// previous response (also the idle keep-alive timeout).
    pub header_timeout: Duration,
    /// A request's body must arrive within this time of its head.
    pub body_timeout: Duration,
    /// Bytes a request body may hold.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 1024,
            // Longer than clients keep idle connections (the OpenAI Python client: 5 s),
            // so a client never reuses a connection the server is closing.
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            // axum's default body limit; 2 MiB of text is far beyond any context.
            max_body_bytes: 2 << 20,
        }
    }
}

impl HttpLimits {
    /// `max_connections` kept [`RESERVED_FDS`] below the process's open-file limit.
    pub fn within_fd_limit(mut self, fd_limit: Option<u64>) -> HttpLimits {
        if let Some(limit) = fd_limit {
            let room = limit.saturating_sub(RESERVED_FDS).max(1);
            self.max_connections = self.max_connections.min(room as usize);
        }
        self
    }
}

/// Serve `app` on `listener` until `stop` fires, then let open connections finish their
/// requests (the caller bounds how long) and return once all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    // Connections watch `closing` and hold a `done` receiver until they end.
    let (closing_tx, closing_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let refusal = refusal_response(limits.max_connections);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors or a connection reset before it was accepted: the
                // limits make the first rare; wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        match Arc::clone(&open).try_acquire_owned() {
            Ok(permit) => {
                let (app, closing, done) = (app.clone(), closing_rx.clone(), done_rx.clone());
                tokio::spawn(async move {
                    connection(stream, app, limits, closing).await;
                    drop((permit, done));
                });
            }
            Err(_) => {
                if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                    let refusal = Arc::clone(&refusal);
                    tokio::spawn(async move {
                        refuse(stream, &refusal).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// One connection, until the client closes it, a timeout does, or shutdown has let its
/// open request finish.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            // Errors are the client's (a timeout, a reset, a malformed request): the
            // connection is closed either way.
            _ = conn.as_mut() => break,
            changed = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The bytes of the `503` a connection over the cap gets.
fn refusal_response(limit: usize) -> Arc<Vec<u8>> {
    let body = ApiError::unavailable(format!(
        "too many open connections (this server takes {limit} at once); retry later"
    ))
    .body()
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    Arc::new([head.into_bytes(), body.into_bytes()].concat())
}

/// Answer `503` and close, without waiting for the request: the client's bytes are read
/// and dropped briefly so that closing does not reset the answer away.
async fn refuse(mut stream: TcpStream, response: &[u8]) {
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(response).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
