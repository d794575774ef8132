//! `kiln serve`: an OpenAI-compatible HTTP server over continuous batching.
//!
//! ```text
//! HTTP side (tokio + axum: http.rs)              engine thread (engine.rs)
//!  POST /v1/completions ─┐                       ┌───────────────────────────────────┐
//!  POST /v1/chat/...    ─┤ api.rs: parse, check, │ Scheduler (scheduler.rs)          │
//!                        ├─ tokenize, Permit ───►│  waiting ─admit─► running         │
//!                        │  (429 past the limit) │  one Compiled::step per iteration │
//!  SSE / JSON ◄──────────┴─ Event per request ◄──│  sample, detokenize, stop strings │
//!  GET /metrics ◄── metrics.rs ◄─────────────────└───────────────────────────────────┘
//! ```
//!
//! The model's compute runs on one OS thread that owns the [`Compiled`](kiln_engine::compiled::Compiled)
//! runner; requests reach it over a channel and each request's events come back on its own
//! tokio channel. The HTTP side never touches the model, only its tokenizer. A client that
//! goes away closes its channel, and the scheduler drops the sequence at the next step.

mod access_log;
pub mod api;
pub mod conn;
pub mod engine;
mod fd_limit;
pub mod http;
pub mod metrics;
pub mod response;
pub mod scheduler;
pub mod shape;
mod stop;
pub mod tool_format;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

pub use api::{ApiError, GenParams};
pub use conn::HttpLimits;
pub use engine::{Engine, EngineInfo};
pub use fd_limit::{open_files_limit, raise_open_files_limit};
pub use http::Server;
pub use metrics::Metrics;
pub use response::{Endpoint, Responder, Usage};
pub use scheduler::{Scheduler, SchedulerConfig};

use kiln_engine::sampler::SamplerConfig;
use kiln_ir::backend::Backend;
use kiln_kv::KvDtype;

/// Opens the backend the engine thread compiles the model for (backends need not be
/// `Send`, so the thread opens its own). The CLI builds it from the backend registry.
pub type OpenBackend = Arc<dyn Fn() -> Result<Box<dyn Backend>, kiln_engine::Error> + Send + Sync>;

/// Guesses per sequence and step at most unless configured.
pub const DEFAULT_SPEC_K_MAX: usize = 4;

/// How `kiln serve` runs.
#[derive(Clone)]
pub struct ServeConfig {
    /// Opens the backend the model runs on.
    pub backend: OpenBackend,
    /// The id clients name in `model` (and `GET /v1/models` lists).
    pub model_id: String,
    pub host: String,
    /// 0 picks a free port ([`Server::local_addr`] tells which).
    pub port: u16,
    /// Sequences decoded together at most.
    pub max_seqs: usize,
    /// Requests waiting for a place at most; past `max_seqs + max_queue` requests get 429.
    pub max_queue: usize,
    /// Tokens one step may carry (decode tokens plus prefill chunks).
    pub step_tokens: usize,
    /// Positions one sequence may hold (None: the model's context length).
    pub n_ctx: Option<usize>,
    pub kv_dtype: KvDtype,
    /// Bytes the KV page pool may take (None: room for `n_ctx` × `max_seqs` positions, as
    /// far as `mem_budget_bytes` goes when given, else at most
    /// [`engine::DEFAULT_KV_BUDGET_BYTES`]).
    pub kv_budget_bytes: Option<usize>,
    /// Bytes the engine may allocate in all (arena, KV pool, buffers; None: no limit).
    pub mem_budget_bytes: Option<usize>,
    /// On shutdown, open requests may run this long before they are ended.
    pub drain: Duration,
    /// Threads of the HTTP runtime (the model's compute has its own).
    pub http_threads: usize,
    /// Timeouts, sizes and the connection cap of the HTTP side.
    pub http: HttpLimits,
    /// One line per request on stderr (method, path, status, tokens, time).
    pub access_log: bool,
    /// Speculative decoding: a draft model (same vocabulary) that guesses for every
    /// request that does not ask for prompt lookup or for none (`"lookup": 0`).
    pub draft: Option<Arc<kiln_engine::model::Model>>,
    /// Guesses verified per sequence and step at most (draft model and prompt lookup);
    /// 0 turns speculation off. Each sequence may then take this many more logits rows.
    pub spec_k_max: usize,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("model_id", &self.model_id)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("max_seqs", &self.max_seqs)
            .field("max_queue", &self.max_queue)
            .field("step_tokens", &self.step_tokens)
            .field("n_ctx", &self.n_ctx)
            .field("kv_dtype", &self.kv_dtype)
            .field("kv_budget_bytes", &self.kv_budget_bytes)
            .field("mem_budget_bytes", &self.mem_budget_bytes)
            .field("drain", &self.drain)
            .field("http", &self.http)
            .field("access_log", &self.access_log)
            .field("draft", &self.draft.as_ref().map(|m| m.config.n_layers))
            .field("spec_k_max", &self.spec_k_max)
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    pub fn new(model_id: impl Into<String>, backend: OpenBackend) -> ServeConfig {
        ServeConfig {
            backend,
            model_id: model_id.into(),
            host: "127.0.0.1".into(),
            port: 8080,
            max_seqs: 32,
            max_queue: 256,
            step_tokens: 256,
            n_ctx: None,
            kv_dtype: KvDtype::F8E4M3,
            kv_budget_bytes: None,
            mem_budget_bytes: None,
            drain: Duration::from_secs(30),
            http_threads: 2,
            http: HttpLimits::default(),
            access_log: false,
            draft: None,
            spec_k_max: DEFAULT_SPEC_K_MAX,
        }
    }
}

/// Why a request stopped, as OpenAI names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens`, the context, or the server's shutdown deadline.
    Length,
    /// The answer is a tool call (set by the HTTP side, which reads the calls).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// What the scheduler tells a request, in order: text pieces, then one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Newly completed text (never empty).
    Text(String),
    Done {
        finish: FinishReason,
        usage: Usage,
    },
    Failed(ApiError),
    /// The log-probability of the token whose text comes next (`logprobs` asked for).
    Logprob(TokenLogprob),
}

/// One sampled token's log-probability under the model (before any grammar's mask) and
/// the most likely tokens of the same distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// (token, bytes, log-probability), most likely first.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// One generation request, as the scheduler takes it.
#[derive(Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub ignore_eos: bool,
    pub stop: Vec<String>,
    /// Speculative decoding: None follows the server (its draft model, if any); Some(0)
    /// turns it off; Some(n) guesses by prompt lookup of n-grams.
    pub lookup: Option<usize>,
    /// The grammar the answer keeps to: no speculation, every token sampled under its mask.
    pub constraint: Option<kiln_structured::Constraint>,
    /// Log-probabilities of each token and of this many alternatives (no speculation).
    pub logprobs: Option<usize>,
    /// Where this request's events go; closed when the client is gone.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    /// Its place under the server's request limit, given back when the request ends.
    pub permit: Option<Permit>,
}

impl Request {
    pub fn new(params: GenParams, events: UnboundedSender<Event>) -> Request {
        Request {
            prompt: params.prompt_ids,
            max_tokens: params.max_tokens,
            sampler: params.sampler,
            ignore_eos: params.ignore_eos,
            stop: params.stop,
            lookup: params.lookup,
            constraint: params.constraint,
            logprobs: params.logprobs,
            events,
            arrived: Instant::now(),
            permit: None,
        }
    }
}

/// Counts requests running or queued against a limit; a [`Permit`] is one of them.
#[derive(Debug)]
pub struct Permits {
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

/// One request's place under the limit; dropping it gives the place back.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Permits {
    pub fn new(limit: usize) -> Permits {
        Permits {
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// A place, or None when `limit` requests hold one.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(&self.in_flight)))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] kiln_engine::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the engine thread stopped before it was ready")]
    EngineGone,
}
