//! The OpenAI wire format, incoming: request bodies checked into [`GenParams`], and
//! `{"error": {...}}` objects with their HTTP status (response bodies: `response.rs`).
//!
//! Validation happens here, before a request reaches the scheduler: malformed JSON, an
//! unknown model, a prompt the context (or the whole KV pool) cannot hold and bad sampling
//! parameters are all 4xx errors, never a failure inside a step.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};

use kiln_engine::sampler::SamplerConfig;
use kiln_engine::speculative::lookup::MAX_LOOKUP_NGRAM;
use kiln_structured::{Constraint, Structured};
use kiln_tokenizer::{Tokenizer, plain_tool_turns};

mod messages;

use super::shape;
use super::tool_format::ToolFormat;
use messages::chat_messages;

/// Completions return this many tokens when `max_tokens` is absent (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;
/// `top_logprobs` (chat) and `logprobs` (completions) at most (OpenAI's chat limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// At most this many stop sequences (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// An OpenAI-style error: an HTTP status and the body `{"error": {message, type, param, code}}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault (`top_p`, `messages[1].role`).
    pub param: Option<Cow<'static, str>>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400: the request is wrong.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: param.map(Cow::Borrowed),
            code: None,
        }
    }

    /// 400 for a field found by position (`messages[2].content`), with OpenAI's code
    /// (`missing_required_parameter`, `invalid_type`, `invalid_value`).
    pub fn invalid_field(
        param: String,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            param: Some(Cow::Owned(param)),
            code: Some(code),
            ..ApiError::invalid(None, message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            code: Some("not_found"),
        }
    }

    /// 400: a body that is not declared as JSON.
    pub fn not_json(content_type: &str) -> ApiError {
        ApiError::invalid(
            None,
            format!("Content-Type {content_type:?} is not accepted: send the request body as application/json"),
        )
        .with_code("unsupported_content_type")
    }

    /// 413: a body over the server's limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: 413,
            code: Some("request_too_large"),
            ..ApiError::invalid(
                None,
                format!("the request body is larger than this server's limit of {limit} bytes"),
            )
        }
    }

    /// 408: a body that did not arrive in time (often a Content-Length larger than the body).
    pub fn body_timeout(limit: std::time::Duration) -> ApiError {
        ApiError {
            status: 408,
            code: Some("request_timeout"),
            ..ApiError::invalid(
                None,
                format!(
                    "the request body did not arrive within {} s (is Content-Length larger than the body?)",
                    limit.as_secs_f64()
                ),
            )
        }
    }

    /// 429: the queue is full; retry later.
    pub fn busy(limit: usize) -> ApiError {
        ApiError {
            status: 429,
            kind: "rate_limit_error",
            message: format!(
                "the server is busy: {limit} requests are running or queued; retry later"
            ),
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 503: the engine is stopping or has stopped.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 503,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: Some("unavailable"),
        }
    }

    /// 500: a step failed inside the engine.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// Parameters shared by both endpoints. Numbers are read wide so that out-of-range values
/// get a message naming the parameter rather than a JSON type error.
#[derive(Debug, Default, Deserialize)]
struct Common {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    seed: Option<i64>,
    n: Option<i64>,
    stop: Option<Value>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<Value>,
    /// kiln's extension: keep generating through end-of-generation tokens.
    ignore_eos: Option<bool>,
    /// kiln's extension: speculative decoding by prompt lookup of n-grams (0: none).
    lookup: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: Option<Value>,
    echo: Option<bool>,
    logprobs: Option<Value>,
    best_of: Option<i64>,
    suffix: Option<String>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Option<Value>,
    max_completion_tokens: Option<i64>,
    logprobs: Option<bool>,
    top_logprobs: Option<i64>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<Value>,
    #[serde(flatten)]
    common: Common,
}

/// What a request is allowed: the served model and the sizes it runs with.
#[derive(Clone, Debug)]
pub struct Limits {
    pub model_id: String,
    /// Positions one sequence may hold.
    pub n_ctx: usize,
    /// Tokens the whole KV page pool holds (a prompt larger than this can never run).
    pub kv_capacity: usize,
    /// Grammars over the model's vocabulary (`response_format`, `tools`); None: requests
    /// that need one are refused.
    pub structured: Option<Structured>,
}

/// A checked request, ready for the scheduler.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub prompt_ids: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub ignore_eos: bool,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Speculative decoding asked for: None (the server's default), 0 (none) or the
    /// n-gram of prompt lookup.
    pub lookup: Option<usize>,
    /// The grammar every sampled token must keep to (`response_format`, `tools`).
    pub constraint: Option<Constraint>,
    /// Tools offered: the answer is read back into `tool_calls`.
    pub tools: Option<shape::ToolUse>,
    /// Log-probabilities of each token and of this many alternatives.
    pub logprobs: Option<usize>,
}

/// `POST /v1/completions`.
pub fn parse_completion(
    body: &[u8],
    tokenizer: &Tokenizer,
    limits: &Limits,
) -> Result<GenParams, ApiError> {
    let req: CompletionRequest = parse_json(body)?;
    let unsupported = |param, what: &str| {
        Err(ApiError::invalid(
            Some(param),
            format!("{what} is not supported by kiln"),
        ))
    };
    if req.echo == Some(true) {
        return unsupported("echo", "echo");
    }
    let logprobs = match &req.logprobs {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Some(k as usize),
            _ => {
                return Err(ApiError::invalid(
                    Some("logprobs"),
                    format!("logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}"),
                ));
            }
        },
    };
    if req.best_of.is_some_and(|b| b != 1) {
        return unsupported("best_of", "best_of other than 1");
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return unsupported("suffix", "suffix");
    }
    let prompt_ids = match req.prompt {
        None => return Err(ApiError::invalid(Some("prompt"), "prompt is required")),
        Some(prompt) => completion_prompt(&prompt, tokenizer)?,
    };
    let max_tokens = req.common.max_tokens;
    let params = finish(
        req.common,
        max_tokens,
        DEFAULT_COMPLETION_TOKENS,
        (prompt_ids, "prompt"),
        tokenizer,
        limits,
    )?;
    Ok(GenParams { logprobs, ..params })
}

/// `POST /v1/chat/completions`: the messages rendered with the model's chat template.
pub fn parse_chat(
    body: &[u8],
    tokenizer: &Tokenizer,
    limits: &Limits,
) -> Result<GenParams, ApiError> {
    let req: ChatRequest = parse_json(body)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), None) => Some(0),
        (Some(true), Some(k)) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Some(k as usize),
        (Some(true), Some(k)) => {
            return Err(ApiError::invalid(
                Some("top_logprobs"),
                format!("top_logprobs {k} must be from 0 to {MAX_TOP_LOGPROBS}"),
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                Some("top_logprobs"),
                "top_logprobs needs logprobs: true",
            ));
        }
        _ => None,
    };
    let mut tools = shape::tool_use(req.tools.as_ref(), req.tool_choice.as_ref())?;
    if let Some(t) = &mut tools {
        t.format = ToolFormat::detect(tokenizer.chat_template());
        t.parallel = req.parallel_tool_calls.unwrap_or(true);
    }
    let format = shape::response_format(req.response_format.as_ref())?;
    let structured = limits.structured.as_ref();
    let constraint = match (&tools, &format) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                Some("response_format"),
                "response_format with tools is not supported by kiln: give one or the other",
            ));
        }
        (Some(t), None) => {
            shape::check_tools(structured, t)?;
            let grammar = t.grammar(tokenizer);
            Some(shape::compile(structured, &grammar, "tools".into())?)
        }
        (None, Some(g)) => {
            let param = match g {
                kiln_structured::Grammar::JsonObject => "response_format",
                _ => "response_format.json_schema.schema",
            };
            Some(shape::compile(structured, g, param.into())?)
        }
        (None, None) => None,
    };
    let mut messages = match &req.messages {
        Some(Value::Array(items)) if !items.is_empty() => chat_messages(items)?,
        _ => {
            return Err(ApiError::invalid(
                Some("messages"),
                "messages must be a non-empty array of {role, content} objects",
            ));
        }
    };
    // kiln's format: the template hears of neither the tools nor earlier calls in a
    // syntax of its own; both are written in kiln's.
    let template_tools = match &tools {
        Some(t) if t.format == ToolFormat::Kiln => {
            messages = plain_tool_turns(&messages);
            shape::with_instructions(&mut messages, &t.instructions());
            None
        }
        Some(t) => Some(t.template_tools()),
        None => None,
    };
    let text = tokenizer
        .apply_chat_template_tools(&messages, template_tools.as_ref(), true)
        .map_err(|e| ApiError::invalid(Some("messages"), format!("chat template: {e}")))?;
    let prompt_ids = tokenizer.encode(&text, true, true);
    let max_tokens = req.max_completion_tokens.or(req.common.max_tokens);
    // A chat answer may run to the end of the context unless the client says otherwise.
    let params = finish(
        req.common,
        max_tokens,
        usize::MAX,
        (prompt_ids, "messages"),
        tokenizer,
        limits,
    )?;
    Ok(GenParams {
        constraint,
        tools,
        logprobs,
        ..params
    })
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            None,
            "the request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("the request body is not valid JSON for this endpoint: {e}"),
        )
    })
}

/// A completion prompt: a string, an array of token ids, or a one-element array of either.
fn completion_prompt(prompt: &Value, tokenizer: &Tokenizer) -> Result<Vec<u32>, ApiError> {
    let bad = |m: &str| Err(ApiError::invalid(Some("prompt"), m.to_string()));
    match prompt {
        Value::String(text) => {
            no_nul(text, || "prompt".into())?;
            Ok(tokenizer.encode(text, true, true))
        }
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect::<Option<Vec<u32>>>()
            .map_or_else(|| bad("token ids must be non-negative integers"), Ok),
        Value::Array(items) if items.len() == 1 => completion_prompt(&items[0], tokenizer),
        Value::Array(_) => bad("kiln takes one prompt per request (send several requests)"),
        _ => bad("prompt must be a string or an array of token ids"),
    }
}

/// Text with a NUL in it is refused: no tokenizer or template means anything by it, and C
/// code downstream would cut the text there.
fn no_nul(text: &str, field: impl FnOnce() -> String) -> Result<(), ApiError> {
    match text.find('\0') {
        None => Ok(()),
        Some(at) => {
            let field = field();
            Err(ApiError::invalid_field(
                field.clone(),
                "invalid_value",
                format!("{field} holds a NUL character (at byte {at})"),
            ))
        }
    }
}

/// The checks both endpoints share, once the prompt is known.
fn finish(
    c: Common,
    max_tokens: Option<i64>,
    default_max: usize,
    (prompt_ids, prompt_param): (Vec<u32>, &'static str),
    tokenizer: &Tokenizer,
    limits: &Limits,
) -> Result<GenParams, ApiError> {
    if let Some(model) = &c.model
        && *model != limits.model_id
    {
        return Err(ApiError {
            param: Some(Cow::Borrowed("model")),
            code: Some("model_not_found"),
            ..ApiError::not_found(format!(
                "the model `{model}` does not exist; this server serves `{}`",
                limits.model_id
            ))
        });
    }
    let bad = |param: &'static str, m: String| Err(ApiError::invalid(Some(param), m));
    if c.n.is_some_and(|n| n != 1) {
        return bad(
            "n",
            "kiln returns one choice per request: n must be 1".into(),
        );
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return bad(
            "temperature",
            format!("temperature {temperature} must be in [0, 2]"),
        );
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&top_p) {
        return bad("top_p", format!("top_p {top_p} must be in [0, 1]"));
    }
    let min_p = c.min_p.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_p) {
        return bad("min_p", format!("min_p {min_p} must be in [0, 1]"));
    }
    let top_k = match c.top_k.unwrap_or(0) {
        k if k < 0 => {
            return bad(
                "top_k",
                format!("top_k {k} must be >= 0 (0 keeps every token)"),
            );
        }
        k => usize::try_from(k).unwrap_or(usize::MAX),
    };
    for (param, value) in [
        ("presence_penalty", c.presence_penalty),
        ("frequency_penalty", c.frequency_penalty),
    ] {
        match value {
            Some(v) if !(-2.0..=2.0).contains(&v) => {
                return bad(param, format!("{param} {v} must be in [-2, 2]"));
            }
            Some(v) if v != 0.0 => return bad(param, format!("{param} is not supported by kiln")),
            _ => {}
        }
    }
    if c.logit_bias
        .as_ref()
        .is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty()))
    {
        return bad("logit_bias", "logit_bias is not supported by kiln".into());
    }
    let max_tokens = match max_tokens {
        None => default_max,
        Some(n) if n < 1 => return bad("max_tokens", format!("max_tokens {n} must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let stop = stop_sequences(c.stop)?;
    let lookup = match c.lookup {
        None => None,
        Some(n) if (0..=MAX_LOOKUP_NGRAM as i64).contains(&n) => Some(n as usize),
        Some(n) => {
            return bad(
                "lookup",
                format!("lookup {n}: an n-gram of 1 to {MAX_LOOKUP_NGRAM} tokens, or 0 for none"),
            );
        }
    };

    if prompt_ids.is_empty() {
        return Err(ApiError::invalid(
            Some(prompt_param),
            "the prompt has no tokens",
        ));
    }
    let vocab = tokenizer.vocab_size();
    if let Some(id) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        return bad(
            prompt_param,
            format!("token id {id} is outside the vocabulary of {vocab}"),
        );
    }
    let room = limits.n_ctx.min(limits.kv_capacity);
    if prompt_ids.len() > room {
        return Err(ApiError::invalid(
            Some(prompt_param),
            format!(
                "the prompt has {} tokens; this server holds at most {room} per sequence (context {}, KV pool {})",
                prompt_ids.len(),
                limits.n_ctx,
                limits.kv_capacity
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(GenParams {
        prompt_ids,
        max_tokens,
        sampler: SamplerConfig {
            temperature: temperature as f32,
            top_k,
            // top_p 0 keeps only the most likely token, as the sampler does at its smallest p.
            top_p: (top_p as f32).max(f32::MIN_POSITIVE),
            min_p: min_p as f32,
            seed: c.seed.map_or_else(fresh_seed, |s| s as u64),
        },
        ignore_eos: c.ignore_eos.unwrap_or(false),
        stop,
        stream: c.stream.unwrap_or(false),
        include_usage: c
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        lookup,
        constraint: None,
        tools: None,
        logprobs: None,
    })
}

fn stop_sequences(stop: Option<Value>) -> Result<Vec<String>, ApiError> {
    let bad = |m: &str| Err(ApiError::invalid(Some("stop"), m.to_string()));
    let stops = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => match items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
        {
            Some(stops) => stops,
            None => return bad("stop must be a string or an array of strings"),
        },
        Some(_) => return bad("stop must be a string or an array of strings"),
    };
    if stops.len() > MAX_STOP_SEQUENCES {
        return bad("at most 4 stop sequences");
    }
    if stops.iter().any(String::is_empty) {
        return bad("stop sequences must not be empty");
    }
    Ok(stops)
}

/// A seed for requests that give none: different for every request.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
