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
//! - At most `max_connections` are open at once (kept below the open-file limit). At the
//!   cap, a new connection takes the place of the oldest idle one (no request in flight:
//!   waiting for, or still receiving, a request head), as nginx reuses keep-alive
//!   connections when it runs out; so idle and slow-header floods cannot lock clients out.
//!   Only when every connection is busy is one more answered `503` (an error object) and
//!   closed at once, so a flood never blocks the accept loop or runs out of descriptors.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::api::ApiError;

/// Descriptors kept out of the connection cap: the model file, the listener, stdio, the
/// runtime's own, and the refusals in flight.
pub const RESERVED_FDS: u64 = 64;
/// Refusals being written at once; past this a connection over the cap is closed unanswered.
const REFUSALS_AT_ONCE: usize = 16;
/// How long a refusal may take to write and drain before its socket is closed.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// How long the accept loop waits for an evicted connection to give its place back.
const EVICTION_TIME: Duration = Duration::from_millis(200);

/// What the HTTP side allows each client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once (capped below the open-file limit at start).
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
            // so a client seldom reuses a connection the server is closing.
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

/// One open connection as the accept loop sees it.
#[derive(Debug, Default)]
struct Slot {
    /// Requests in flight, from their head to the end of their response body.
    busy: AtomicUsize,
    /// Asked to close to make room.
    evicted: AtomicBool,
    evict: Notify,
}

/// A request in flight on a slot; dropping it (with the response body) ends it.
#[derive(Debug)]
struct Busy(Arc<Slot>);

impl Busy {
    fn enter(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(slot))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is dropped
/// (written out, or the connection closed).
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Slots(Mutex<VecDeque<Weak<Slot>>>);

impl Slots {
    fn add(&self, slot: &Arc<Slot>) {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|s| s.strong_count() > 0);
        slots.push_back(Arc::downgrade(slot));
    }

    /// Ask the oldest idle connection to close; false when every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let victim = slots.iter().filter_map(Weak::upgrade).find(|s| {
            s.busy.load(Ordering::Acquire) == 0 && !s.evicted.swap(true, Ordering::AcqRel)
        });
        match victim {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
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
    let slots = Slots::default();
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
        match place(&open, &slots).await {
            Some(permit) => {
                let slot = Arc::new(Slot::default());
                slots.add(&slot);
                let (app, closing, done) = (app.clone(), closing_rx.clone(), done_rx.clone());
                tokio::spawn(async move {
                    connection(stream, app, limits, slot, closing).await;
                    drop((permit, done));
                });
            }
            None => {
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

/// A place for a new connection: a free one, else the place of the oldest idle one.
async fn place(open: &Arc<Semaphore>, slots: &Slots) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(open).try_acquire_owned() {
        return Some(permit);
    }
    if !slots.evict_oldest_idle() {
        return None;
    }
    tokio::time::timeout(EVICTION_TIME, Arc::clone(open).acquire_owned())
        .await
        .ok()?
        .ok()
}

/// One connection, until the client closes it, a timeout does, it is evicted while idle,
/// or shutdown has let its open request finish.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    slot: Arc<Slot>,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let app = TowerToHyperService::new(app);
    let counted = Arc::clone(&slot);
    let service = hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
        let busy = Busy::enter(&counted);
        let response = app.call(request);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|inner| Body::new(Guarded { inner, _busy: busy })))
        }
    });
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
            () = slot.evict.notified() => {
                // A request may have begun since the accept loop chose this one.
                if slot.busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                slot.evicted.store(false, Ordering::Release);
            }
        }
    }
}

/// The bytes of the `503` a connection over the cap gets.
fn refusal_response(limit: usize) -> Arc<Vec<u8>> {
    let body = ApiError::unavailable(format!(
        "all {limit} connections this server takes are busy; retry later"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        let limits = HttpLimits::default();
        assert_eq!(limits.within_fd_limit(None).max_connections, 1024);
        assert_eq!(limits.within_fd_limit(Some(256)).max_connections, 192);
        assert_eq!(limits.within_fd_limit(Some(1 << 20)).max_connections, 1024);
        assert_eq!(limits.within_fd_limit(Some(10)).max_connections, 1);
    }

    #[test]
    fn the_oldest_idle_connection_is_evicted_and_busy_ones_never() {
        let slots = Slots::default();
        let (a, b, c) = (
            Arc::new(Slot::default()),
            Arc::new(Slot::default()),
            Arc::new(Slot::default()),
        );
        for s in [&a, &b, &c] {
            slots.add(s);
        }
        let busy = Busy::enter(&a);
        assert!(slots.evict_oldest_idle());
        assert!(b.evicted.load(Ordering::Acquire) && !a.evicted.load(Ordering::Acquire));
        assert!(slots.evict_oldest_idle());
        assert!(c.evicted.load(Ordering::Acquire));
        assert!(!slots.evict_oldest_idle(), "only the busy one is left");
        drop(busy);
        assert!(slots.evict_oldest_idle());
        drop((a, b, c));
        assert!(!slots.evict_oldest_idle(), "closed connections are gone");
    }
}
