//! Response bodies and stream chunks of the OpenAI API, for both endpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use super::shape::ToolCall;
use super::{FinishReason, TokenLogprob};

/// Token counts of a finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptDetails,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PromptDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// Which endpoint a response is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// Builds the response bodies and stream chunks of one request.
#[derive(Clone, Debug)]
pub struct Responder {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Responder {
    pub fn new(endpoint: Endpoint, model: &str) -> Responder {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prefix = match endpoint {
            Endpoint::Completions => "cmpl",
            Endpoint::Chat => "chatcmpl",
        };
        Responder {
            endpoint,
            id: format!("{prefix}-{created:x}{n:06x}"),
            created,
            model: model.to_string(),
        }
    }

    /// The whole answer (`stream: false`).
    pub fn full(&self, text: &str, finish: FinishReason, usage: Usage) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completions => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str(),
            }),
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
        };
        self.envelope(false, vec![choice], Some(usage))
    }

    /// The whole chat answer that is a tool call (`content` null, `tool_calls`).
    pub fn full_tool_calls(&self, calls: &[ToolCall], usage: Usage) -> Value {
        let calls: Vec<Value> = calls.iter().map(|c| c.to_json(None)).collect();
        let choice = json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": calls},
            "logprobs": null,
            "finish_reason": FinishReason::ToolCalls.as_str(),
        });
        self.envelope(false, vec![choice], Some(usage))
    }

    /// The chunk of a chat stream that carries the tool calls, whole.
    pub fn tool_calls_chunk(&self, calls: &[ToolCall]) -> Value {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_json(Some(i)))
            .collect();
        self.envelope(
            true,
            vec![self.delta(json!({"tool_calls": calls}), None)],
            None,
        )
    }

    /// The `logprobs` of a choice for these tokens: chat's `{"content": [...]}`, or
    /// completions' `tokens`, `token_logprobs`, `top_logprobs`, `text_offset` (counted
    /// from `offset` bytes into the answer).
    pub fn logprobs(&self, tokens: &[TokenLogprob], offset: usize) -> Value {
        match self.endpoint {
            Endpoint::Chat => {
                let content: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let top: Vec<Value> = t
                            .top
                            .iter()
                            .map(|(token, bytes, lp)| {
                                json!({"token": token, "logprob": lp, "bytes": bytes})
                            })
                            .collect();
                        json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes,
                            "top_logprobs": top})
                    })
                    .collect();
                json!({"content": content, "refusal": null})
            }
            Endpoint::Completions => {
                let mut at = offset;
                let mut offsets = Vec::with_capacity(tokens.len());
                for t in tokens {
                    offsets.push(at);
                    at += t.bytes.len();
                }
                let top: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let m: serde_json::Map<String, Value> = t
                            .top
                            .iter()
                            .map(|(token, _, lp)| (token.clone(), json!(lp)))
                            .collect();
                        Value::Object(m)
                    })
                    .collect();
                json!({
                    "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
                    "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }

    /// The chunk that opens a chat stream (the assistant role), none for completions.
    pub fn opening_chunk(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.envelope(
                true,
                vec![self.delta(json!({"role": "assistant", "content": ""}), None)],
                None,
            )
        })
    }

    pub fn text_chunk(&self, text: &str) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completions => self.delta(json!(text), None),
            Endpoint::Chat => self.delta(json!({"content": text}), None),
        };
        self.envelope(true, vec![choice], None)
    }

    pub fn finish_chunk(&self, finish: FinishReason) -> Value {
        let choice = match self.endpoint {
            Endpoint::Completions => self.delta(json!(""), Some(finish)),
            Endpoint::Chat => self.delta(json!({}), Some(finish)),
        };
        self.envelope(true, vec![choice], None)
    }

    /// The last chunk when the client asked for `stream_options.include_usage`.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        self.envelope(true, Vec::new(), Some(usage))
    }

    fn delta(&self, content: Value, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(FinishReason::as_str);
        match self.endpoint {
            Endpoint::Completions => {
                json!({"index": 0, "text": content, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Chat => {
                json!({"index": 0, "delta": content, "logprobs": null, "finish_reason": finish})
            }
        }
    }

    fn envelope(&self, chunk: bool, choices: Vec<Value>, usage: Option<Usage>) -> Value {
        let object = match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        };
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("kiln-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        });
        if let Some(usage) = usage {
            v["usage"] = json!(usage);
        } else if chunk {
            v["usage"] = Value::Null;
        }
        v
    }
}
