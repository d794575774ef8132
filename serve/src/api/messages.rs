//! Chat messages checked strictly: each a known role with text content, an assistant's
//! `tool_calls` and a tool result's `tool_call_id`; a wrong one is a 400 naming the field.

use serde_json::Value;

use kiln_tokenizer::{ChatMessage, ChatToolCall};

use super::{ApiError, no_nul};

/// Roles a message may have (`developer` is OpenAI's newer name for `system`; `tool`
/// carries a call's result).
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Each message checked strictly: an object with a known role and text content; a wrong
/// one is a 400 naming the field (`messages[1].role`). An assistant message may carry
/// `tool_calls` (its content then may be null); a `tool` message needs the
/// `tool_call_id` of a call an earlier assistant message made.
pub(super) fn chat_messages(items: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let message = chat_message(i, item, &out)?;
        out.push(message);
    }
    Ok(out)
}

fn chat_message(i: usize, item: &Value, earlier: &[ChatMessage]) -> Result<ChatMessage, ApiError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let Some(message) = item.as_object() else {
        return Err(ApiError::invalid_field(
            format!("messages[{i}]"),
            "invalid_type",
            format!("messages[{i}] must be an object with a role and content"),
        ));
    };
    let missing = |name: &str, what: &str| {
        ApiError::invalid_field(
            field(name),
            "missing_required_parameter",
            format!("{} is required{what}", field(name)),
        )
    };
    let wrong_type = |name: &str, what: &str| {
        ApiError::invalid_field(
            field(name),
            "invalid_type",
            format!("{} must be {what}", field(name)),
        )
    };
    let role = match message.get("role") {
        None | Some(Value::Null) => return Err(missing("role", "")),
        Some(Value::String(role)) => role.as_str(),
        Some(_) => return Err(wrong_type("role", "a string")),
    };
    if !ROLES.contains(&role) {
        let why = match role {
            "function" => {
                "function messages (OpenAI's deprecated form) are not supported by kiln: send tool messages"
            }
            _ => "unknown role",
        };
        return Err(ApiError::invalid_field(
            field("role"),
            "invalid_value",
            format!(
                "{} is {role:?}: {why} (kiln takes {})",
                field("role"),
                ROLES.join(", ")
            ),
        ));
    }
    let role = if role == "developer" { "system" } else { role };
    let tool_calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) if role != "assistant" => {
            return Err(ApiError::invalid_field(
                field("tool_calls"),
                "invalid_value",
                format!(
                    "{} is only allowed on assistant messages",
                    field("tool_calls")
                ),
            ));
        }
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(j, c)| tool_call(i, j, c))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(wrong_type("tool_calls", "an array of tool calls")),
    };
    let content = match message.get("content") {
        None | Some(Value::Null) if !tool_calls.is_empty() => String::new(),
        None | Some(Value::Null) => {
            let what = if role == "assistant" {
                " (a string or text parts; it may be null when the message has tool_calls)"
            } else {
                " (a string or text parts)"
            };
            return Err(missing("content", what));
        }
        Some(Value::String(s)) => s.clone(),
        // Content parts: the text parts, concatenated.
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(
                |(j, p)| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => {
                        let part = format!("messages[{i}].content[{j}]");
                        let message = format!(
                            "{part}: only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported"
                        );
                        Err(ApiError::invalid_field(part, "invalid_value", message))
                    }
                },
            )
            .collect::<Result<String, _>>()?,
        Some(_) => return Err(wrong_type("content", "a string or an array of text parts")),
    };
    no_nul(&content, || field("content"))?;
    if role != "tool" {
        if message.get("tool_call_id").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_field(
                field("tool_call_id"),
                "invalid_value",
                format!("{} is only allowed on tool messages", field("tool_call_id")),
            ));
        }
        return Ok(ChatMessage {
            tool_calls,
            ..ChatMessage::new(role, content)
        });
    }
    let id = match message.get("tool_call_id") {
        None | Some(Value::Null) => {
            return Err(missing(
                "tool_call_id",
                " on a tool message (the id of the call whose result it is)",
            ));
        }
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(wrong_type("tool_call_id", "a string")),
    };
    if !earlier
        .iter()
        .flat_map(|m| &m.tool_calls)
        .any(|c| c.id == id)
    {
        return Err(ApiError::invalid_field(
            field("tool_call_id"),
            "invalid_value",
            format!(
                "{} {id:?} answers no call: it must be the id of a tool call in an earlier assistant message",
                field("tool_call_id")
            ),
        ));
    }
    Ok(ChatMessage::tool_result(id, content))
}

/// `messages[i].tool_calls[j]`: `{"id", "type": "function", "function": {"name", "arguments"}}`.
fn tool_call(i: usize, j: usize, call: &Value) -> Result<ChatToolCall, ApiError> {
    let at = |f: &str| format!("messages[{i}].tool_calls[{j}]{f}");
    let bad = |f: &str, code: &'static str, what: &str| {
        ApiError::invalid_field(at(f), code, format!("{} {what}", at(f)))
    };
    let Some(obj) = call.as_object() else {
        return Err(bad("", "invalid_type", "must be an object"));
    };
    let id = match obj.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        None | Some(Value::Null) => {
            return Err(bad(
                ".id",
                "missing_required_parameter",
                "is required (a string)",
            ));
        }
        Some(_) => return Err(bad(".id", "invalid_type", "must be a non-empty string")),
    };
    match obj.get("type") {
        None | Some(Value::Null) => {
            return Err(bad(
                ".type",
                "missing_required_parameter",
                "is required (\"function\")",
            ));
        }
        Some(Value::String(t)) if t == "function" => {}
        Some(_) => return Err(bad(".type", "invalid_value", "must be \"function\"")),
    }
    let Some(function) = obj.get("function").and_then(Value::as_object) else {
        return Err(bad(
            ".function",
            "missing_required_parameter",
            "is required ({\"name\": ..., \"arguments\": ...})",
        ));
    };
    let name = match function.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        None | Some(Value::Null) => {
            return Err(bad(
                ".function.name",
                "missing_required_parameter",
                "is required (a string)",
            ));
        }
        Some(_) => {
            return Err(bad(
                ".function.name",
                "invalid_type",
                "must be a non-empty string",
            ));
        }
    };
    let arguments = match function.get("arguments") {
        Some(Value::String(a)) => a.clone(),
        None | Some(Value::Null) => {
            return Err(bad(
                ".function.arguments",
                "missing_required_parameter",
                "is required (the arguments as a JSON string)",
            ));
        }
        Some(_) => {
            return Err(bad(
                ".function.arguments",
                "invalid_type",
                "must be a string (the arguments as JSON text)",
            ));
        }
    };
    no_nul(&arguments, || at(".function.arguments"))?;
    Ok(ChatToolCall {
        id,
        name,
        arguments,
    })
}
