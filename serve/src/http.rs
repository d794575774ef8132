//! The HTTP side: axum routes, server-sent events, and the [`Server`] that runs them on a
//! tokio runtime next to the engine thread.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::sync::oneshot;

use super::access_log::{self, UsageCell};
use super::api::{self, ApiError};
use super::conn::{self, HttpLimits};
use super::engine::Engine;
use super::response::{Endpoint, Responder};
use super::{Event, Request, ServeConfig, ServeError};
use kiln_engine::model::Model;

/// Comments sent on a quiet stream, so a client that left is noticed while it waits.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What every handler sees: the engine and the limits on request bodies.
#[derive(Debug)]
struct App {
    engine: Arc<Engine>,
    limits: HttpLimits,
}

type AppState = Arc<App>;

/// The routes of `kiln serve` over a running engine.
/// With `access_log`, one line per request on stderr ([`super::access_log`]).
pub fn router(engine: Arc<Engine>, limits: HttpLimits, access_log: bool) -> Router {
    let router = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::new(App { engine, limits }));
    if access_log {
        router.layer(axum::middleware::from_fn(access_log::log_requests))
    } else {
        router
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(engine: &Engine, endpoint: &'static str, error: &ApiError) -> Response {
    engine.metrics().count_request(endpoint, error.status);
    json_response(error.status, &error.body())
}

async fn completions(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    generate(app, Endpoint::Completions, headers, body).await
}

async fn chat_completions(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    generate(app, Endpoint::Chat, headers, body).await
}

/// A JSON body, whole: its declared type JSON (or none), its size within the limit (a
/// `Content-Length` over it is refused before reading), and all of it in time.
async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limits: &HttpLimits,
) -> Result<Bytes, ApiError> {
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let mime = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = mime == "application/json"
            || (mime.starts_with("application/") && mime.ends_with("+json"));
        if !json {
            return Err(ApiError::not_json(&text));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ApiError::too_large(limits.max_body_bytes));
    }
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid(None, format!("the request body could not be read: {e}"))
            })?;
            if bytes.len() + chunk.len() > limits.max_body_bytes {
                return Err(ApiError::too_large(limits.max_body_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout(limits.body_timeout, read)
        .await
        .unwrap_or_else(|_| Err(ApiError::body_timeout(limits.body_timeout)))
}

async fn generate(app: AppState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let arrived = Instant::now();
    let path = endpoint.path();
    let engine = &app.engine;
    let body = match read_json_body(&headers, body, &app.limits).await {
        Ok(body) => body,
        Err(e) => return error_response(engine, path, &e),
    };
    let tokenizer = &engine.model().tokenizer;
    let limits = &engine.info().limits;
    let parsed = match endpoint {
        Endpoint::Completions => api::parse_completion(&body, tokenizer, limits),
        Endpoint::Chat => api::parse_chat(&body, tokenizer, limits),
    };
    let params = match parsed {
        Ok(params) => params,
        Err(e) => return error_response(engine, path, &e),
    };
    let Some(permit) = engine.try_permit() else {
        return error_response(engine, path, &ApiError::busy(engine.permits().limit()));
    };
    let (stream, include_usage) = (params.stream, params.include_usage);
    let (tx, rx) = unbounded_channel();
    let request = Request {
        arrived,
        permit: Some(permit),
        ..Request::new(params, tx)
    };
    if let Err(e) = engine.submit(request) {
        return error_response(engine, path, &e);
    }
    let responder = Responder::new(endpoint, &limits.model_id);
    let usage = UsageCell::default();
    let mut response = if stream {
        engine.metrics().count_request(path, 200);
        Sse::new(sse_stream(rx, responder, include_usage, usage.clone()))
            .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
            .into_response()
    } else {
        let response = collect(rx, &responder, &usage).await;
        match response {
            Ok(body) => {
                engine.metrics().count_request(path, 200);
                json_response(200, &body)
            }
            Err(e) => error_response(engine, path, &e),
        }
    };
    response.extensions_mut().insert(usage);
    response
}

/// The whole answer of a `stream: false` request.
async fn collect(
    mut rx: UnboundedReceiver<Event>,
    responder: &Responder,
    log: &UsageCell,
) -> Result<Value, ApiError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done { finish, usage } => {
                log.set(&usage);
                return Ok(responder.full(&text, finish, usage));
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::unavailable(
        "the engine stopped before the request finished",
    ))
}

/// The chunks of a `stream: true` request, ending in `data: [DONE]`. Dropping the stream
/// (the client left) drops the receiver, and the scheduler drops the sequence.
fn sse_stream(
    rx: UnboundedReceiver<Event>,
    responder: Responder,
    include_usage: bool,
    log: UsageCell,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let data = |v: &Value| SseEvent::default().data(v.to_string());
    let opening: Vec<SseEvent> = responder.opening_chunk().iter().map(data).collect();
    let events = stream::unfold(Some((rx, responder)), move |state| {
        let log = log.clone();
        async move {
            let (mut rx, responder) = state?;
            let (out, more) = match rx.recv().await {
                Some(Event::Text(piece)) => (vec![data(&responder.text_chunk(&piece))], true),
                Some(Event::Done { finish, usage }) => {
                    log.set(&usage);
                    let mut out = vec![data(&responder.finish_chunk(finish))];
                    if include_usage {
                        out.push(data(&responder.usage_chunk(usage)));
                    }
                    (out, false)
                }
                Some(Event::Failed(e)) => (vec![data(&e.body())], false),
                None => {
                    let e = ApiError::unavailable("the engine stopped before the request finished");
                    (vec![data(&e.body())], false)
                }
            };
            let mut out = out;
            if !more {
                out.push(SseEvent::default().data("[DONE]"));
            }
            Some((out, more.then_some((rx, responder))))
        }
    });
    stream::iter(opening)
        .chain(events.flat_map(stream::iter))
        .map(Ok)
}

async fn models(State(app): State<AppState>) -> Response {
    let engine = &app.engine;
    let info = engine.info();
    let body = json!({
        "object": "list",
        "data": [{
            "id": info.limits.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "kiln",
            "meta": {
                "backend": info.backend,
                "n_ctx": info.limits.n_ctx,
                "max_seqs": info.max_seqs,
                "kv_page_count": info.kv_page_count,
            },
        }],
    });
    engine.metrics().count_request("/v1/models", 200);
    json_response(200, &body)
}

async fn health(State(app): State<AppState>) -> Response {
    if app.engine.is_alive() {
        json_response(200, &json!({"status": "ok"}))
    } else {
        json_response(503, &json!({"status": "engine stopped"}))
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.engine.metrics().render(),
    )
        .into_response()
}

async fn not_found(State(app): State<AppState>) -> Response {
    error_response(
        &app.engine,
        "other",
        &ApiError::not_found(
            "no such endpoint (kiln serves /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics)",
        ),
    )
}

async fn method_not_allowed(State(app): State<AppState>) -> Response {
    error_response(
        &app.engine,
        "other",
        &ApiError {
            status: 405,
            code: Some("method_not_allowed"),
            ..ApiError::not_found(
                "method not allowed (the /v1/*completions endpoints take POST; the others GET)",
            )
        },
    )
}

/// A running server: the engine thread and the HTTP runtime.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    runtime: tokio::runtime::Runtime,
    stop_http: Option<oneshot::Sender<()>>,
    http: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    drain: Duration,
    limits: HttpLimits,
}

impl Server {
    /// Compile the model, bind `config.host:config.port` and start serving.
    pub fn start(model: Arc<Model>, config: &ServeConfig) -> Result<Server, ServeError> {
        let engine = Arc::new(Engine::start(model, config)?);
        let io = |what: String| move |source| ServeError::Io { what, source };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.http_threads.max(1))
            .thread_name("kiln-http")
            .enable_all()
            .build()
            .map_err(io("cannot start the HTTP runtime".into()))?;
        let where_ = format!("{}:{}", config.host, config.port);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((
                config.host.as_str(),
                config.port,
            )))
            .map_err(io(format!("cannot listen on {where_}")))?;
        let addr = listener
            .local_addr()
            .map_err(io(format!("cannot listen on {where_}")))?;
        let (stop_http, stopped) = oneshot::channel::<()>();
        let limits = config.http.within_fd_limit(super::open_files_limit());
        let app = router(Arc::clone(&engine), limits, config.access_log);
        let http = runtime.spawn(conn::serve(listener, app, limits, stopped));
        Ok(Server {
            addr,
            engine,
            runtime,
            stop_http: Some(stop_http),
            http: Some(http),
            drain: config.drain,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits in force (the connection cap as lowered to fit the open-file limit).
    pub fn http_limits(&self) -> HttpLimits {
        self.limits
    }

    /// Serve until SIGINT or SIGTERM, then shut down gracefully.
    pub fn run_until_signal(self) -> Result<(), ServeError> {
        self.runtime.block_on(shutdown_signal());
        self.shutdown()
    }

    /// Stop taking connections and requests; open requests run up to the drain time, then
    /// end (`finish_reason: length`), and every stream closes with `data: [DONE]`.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.engine.shutdown(self.drain);
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        let result = match self.http.take() {
            Some(http) => {
                // Streams end when the engine ends them; allow a little past the drain.
                let limit = self.drain + Duration::from_secs(5);
                match self
                    .runtime
                    .block_on(async move { tokio::time::timeout(limit, http).await })
                {
                    Ok(Ok(Ok(()))) | Err(_) => Ok(()),
                    Ok(Ok(Err(source))) => Err(ServeError::Io {
                        what: "the HTTP server failed".into(),
                        source,
                    }),
                    Ok(Err(_)) => Ok(()), // the task was cancelled or panicked
                }
            }
            None => Ok(()),
        };
        self.engine.join();
        result
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
