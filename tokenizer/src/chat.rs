//! Chat prompts: the model's own Jinja template (`tokenizer.chat_template`) rendered with
//! minijinja the way Hugging Face renders it, or a built-in format when the model has none
//! (or one that does not parse): Gemma's turns for a vocabulary with `<start_of_turn>`,
//! ChatML otherwise.
//!
//! Hugging Face renders templates with `trim_blocks` and `lstrip_blocks`, a
//! `raise_exception` function, a `tojson` filter that writes Python's `json.dumps` format,
//! and Python string and dict methods (`.strip()`, `.items()`…); those are provided here.
//!
//! Tool use in a conversation (an agent loop): an assistant message may carry
//! `tool_calls`, and a `tool` message carries a call's result and its `tool_call_id`. A
//! template receives them as Hugging Face passes them (`message.tool_calls[i]` is
//! `{id, type: "function", function: {name, arguments}}` with `arguments` a dict when it is
//! a JSON object, `content` none when an assistant message has only calls). The built-in
//! formats, and templates that do not know tools, get [`plain_tool_turns`] instead: the
//! calls written in kiln's JSON tool-call format and each result as a user turn.
//! JSON objects (tools, arguments) keep the request's key order where serde_json and
//! minijinja keep order (their `preserve_order`), as in every build with kiln-serve;
//! elsewhere their keys are sorted.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value, context};
use serde::{Deserialize, Serialize};

use super::{Tokenizer, TokenizerError};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// The text; empty for an assistant message that only calls tools.
    pub content: String,
    /// An assistant message's calls of tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ChatToolCall>,
    /// A `tool` message: the id of the call whose result `content` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// One call of a tool in an assistant message, as OpenAI's API writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant turn that calls tools (`content` may be empty).
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ChatToolCall>) -> ChatMessage {
        ChatMessage {
            tool_calls: calls,
            ..ChatMessage::new("assistant", content)
        }
    }

    /// The result of the call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            tool_call_id: Some(tool_call_id.into()),
            ..ChatMessage::new("tool", content)
        }
    }

    /// This message as a template reads it (Hugging Face's dicts): keys that are absent
    /// stay absent, since templates test `'tool_calls' in message`.
    fn template_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("role".into(), self.role.clone().into());
        let content = if self.content.is_empty() && !self.tool_calls.is_empty() {
            serde_json::Value::Null
        } else {
            self.content.clone().into()
        };
        m.insert("content".into(), content);
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.iter().map(|c| {
                // Templates take the arguments as a dict (Qwen's also as a string).
                let arguments = match serde_json::from_str::<serde_json::Value>(&c.arguments) {
                    Ok(v @ serde_json::Value::Object(_)) => v,
                    _ => c.arguments.clone().into(),
                };
                serde_json::json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": arguments},
                })
            });
            m.insert("tool_calls".into(), calls.collect());
        }
        if let Some(id) = &self.tool_call_id {
            m.insert("tool_call_id".into(), id.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// Tool use written as plain turns, for a chat format that has no syntax for it (kiln's
/// own way): an assistant's calls become its text, one call per line in kiln's JSON
/// tool-call format `{"name": ..., "arguments": {...}}` (what the model was asked to
/// write, so it reads its own earlier calls), and a `tool` result becomes a `user` turn
/// `Result of <name>:\n<content>`: models without tool training know only system, user
/// and assistant turns, and the user turn is where new information comes from; the
/// function's name (found by the call id) ties the result to the call.
pub fn plain_tool_turns(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .map(|m| {
            if !m.tool_calls.is_empty() {
                let mut text = m.content.clone();
                for c in &m.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    let arguments = serde_json::from_str::<serde_json::Value>(&c.arguments)
                        .unwrap_or_else(|_| c.arguments.clone().into());
                    let call = serde_json::json!({"name": c.name, "arguments": arguments});
                    let _ = write!(text, "{}", python_json(&call));
                }
                ChatMessage::new(m.role.clone(), text)
            } else if m.role == "tool" {
                let name = m.tool_call_id.as_ref().and_then(|id| {
                    messages
                        .iter()
                        .flat_map(|p| &p.tool_calls)
                        .find(|c| c.id == *id)
                        .map(|c| c.name.as_str())
                });
                let head = match name {
                    Some(name) => format!("Result of {name}:"),
                    None => "Result:".to_string(),
                };
                ChatMessage::new("user", format!("{head}\n{}", m.content))
            } else {
                m.clone()
            }
        })
        .collect()
}

/// `json.dumps(value)`: `", "` and `": "` between items, as kiln's grammars write JSON.
fn python_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    // A serde_json value always converts and writes.
    let _ = write_json(&Value::from_serialize(value), None, 0, &mut out);
    out
}

fn has_tool_turns(messages: &[ChatMessage]) -> bool {
    messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some() || m.role == "tool")
}

/// A chat format kiln writes itself, for a model without a usable template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\ncontent<|im_end|>\n`: [`chatml`].
    ChatMl,
    /// `<start_of_turn>user\ncontent<end_of_turn>\n`: [`gemma_turns`].
    Gemma,
}

impl ChatFormat {
    pub fn render(self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        match self {
            ChatFormat::ChatMl => chatml(messages, add_generation_prompt),
            ChatFormat::Gemma => gemma_turns(messages, add_generation_prompt),
        }
    }
}

/// Render `messages` with `template` (ChatML when `None`). With `add_generation_prompt`
/// the prompt ends where the assistant's answer starts.
pub fn render_chat(
    template: Option<&str>,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, TokenizerError> {
    let Some(template) = template else {
        return Ok(chatml(messages, add_generation_prompt));
    };
    let env = environment();
    let tmpl = env.template_from_str(template).map_err(template_error)?;
    render(
        &tmpl,
        messages,
        None,
        add_generation_prompt,
        bos_token,
        eos_token,
    )
}

/// An environment with Hugging Face's settings and the Python helpers templates use.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.set_unknown_method_callback(python_method);
    env
}

/// `tools`, when given, is the request's tool list as Hugging Face passes it
/// (`[{"type": "function", "function": {...}}]`); absent, it is undefined in the template.
fn render(
    tmpl: &minijinja::Template<'_, '_>,
    messages: &[ChatMessage],
    tools: Option<&serde_json::Value>,
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, TokenizerError> {
    let tools = tools.map_or(Value::UNDEFINED, Value::from_serialize);
    let messages: Vec<serde_json::Value> =
        messages.iter().map(ChatMessage::template_value).collect();
    tmpl.render(context! {
        messages => Value::from_serialize(&messages),
        tools => tools,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(template_error)
}

/// llama.cpp's built-in Gemma format: system messages (trimmed) go in front of the next
/// user turn, "assistant" is "model", every message is trimmed.
pub fn gemma_turns(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    if has_tool_turns(messages) {
        return gemma_turns(&plain_tool_turns(messages), add_generation_prompt);
    }
    // C's isspace, as llama.cpp's trim uses.
    let trim = |s: &str| {
        s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r'))
            .to_string()
    };
    let mut out = String::new();
    let mut system = String::new();
    for m in messages {
        if m.role == "system" {
            system.push_str(&trim(&m.content));
            continue;
        }
        let role = if m.role == "assistant" {
            "model"
        } else {
            &m.role
        };
        let _ = writeln!(out, "<start_of_turn>{role}");
        if !system.is_empty() && role != "model" {
            let _ = write!(out, "{system}\n\n");
            system.clear();
        }
        let _ = writeln!(out, "{}<end_of_turn>", trim(&m.content));
    }
    if add_generation_prompt {
        out.push_str("<start_of_turn>model\n");
    }
    out
}

/// llama.cpp's ChatML: `<|im_start|>role\ncontent<|im_end|>\n` per message.
pub fn chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    if has_tool_turns(messages) {
        return chatml(&plain_tool_turns(messages), add_generation_prompt);
    }
    let mut out = String::new();
    for m in messages {
        let _ = write!(out, "<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

impl Tokenizer {
    /// The prompt for `messages`, to encode with [`Tokenizer::encode`]`(_, true, true)`:
    /// this model's template, or [`Tokenizer::chat_format`] when it has none or its
    /// template does not parse (an error the template raises while rendering is an error).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.apply_chat_template_with(self.chat_template(), messages, add_generation_prompt)
    }

    /// [`Tokenizer::apply_chat_template`] with the request's `tools` in the template's
    /// context (the built-in formats have no tool syntax and ignore them).
    pub fn apply_chat_template_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_with(self.chat_template(), messages, tools, add_generation_prompt)
    }

    /// Whether this model's template reads `tools` (writes a tool format of its own).
    pub fn template_takes_tools(&self) -> bool {
        self.chat_template().is_some_and(|t| t.contains("tools"))
    }

    /// [`Tokenizer::apply_chat_template`] with another template (`None`: the built-in
    /// format). A template that does not read `tool_calls` gets [`plain_tool_turns`]. As llama.cpp does, a BOS (EOS) text the template writes at the start (end)
    /// is cut when encoding adds that token anyway, so it is not there twice.
    pub fn apply_chat_template_with(
        &self,
        template: Option<&str>,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_with(template, messages, None, add_generation_prompt)
    }

    fn render_with(
        &self,
        template: Option<&str>,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let env = environment();
        let Some(tmpl) = template.and_then(|t| env.template_from_str(t).ok()) else {
            return Ok(self.chat_format().render(messages, add_generation_prompt));
        };
        let bos = self.bos_id().map_or("", |id| self.token_text(id));
        let eos = self.eos_id().map_or("", |id| self.token_text(id));
        let plain;
        let messages = match template {
            Some(t) if !t.contains("tool_calls") && has_tool_turns(messages) => {
                plain = plain_tool_turns(messages);
                &plain[..]
            }
            _ => messages,
        };
        let mut text = render(&tmpl, messages, tools, add_generation_prompt, bos, eos)?;
        if self.add_bos() && !bos.is_empty() && text.starts_with(bos) {
            text.drain(..bos.len());
        }
        if self.add_eos() && !eos.is_empty() && text.ends_with(eos) {
            text.truncate(text.len() - eos.len());
        }
        Ok(text)
    }

    /// The built-in format for this vocabulary: Gemma's turns when it has
    /// `<start_of_turn>` and `<end_of_turn>`, ChatML otherwise.
    pub fn chat_format(&self) -> ChatFormat {
        if self.token_id("<start_of_turn>").is_some() && self.token_id("<end_of_turn>").is_some() {
            ChatFormat::Gemma
        } else {
            ChatFormat::ChatMl
        }
    }
}

fn template_error(e: Error) -> TokenizerError {
    let mut msg = match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(detail)) => detail.to_string(),
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    if let Some(line) = e.line() {
        let _ = write!(msg, " (line {line})");
    }
    TokenizerError::Template(msg)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` in UTC, for the common directives.
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Value::from(strftime(&format, secs)))
}

fn strftime(format: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS[(month - 1) as usize];
    let day_name = DAYS[days.rem_euclid(7) as usize];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('d') => write!(out, "{day:02}"),
            Some('m') => write!(out, "{month:02}"),
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year % 100),
            Some('B') => write!(out, "{month_name}"),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('A') => write!(out, "{day_name}"),
            Some('a') => write!(out, "{}", &day_name[..3]),
            Some('H') => write!(out, "{:02}", secs / 3600),
            Some('M') => write!(out, "{:02}", secs / 60 % 60),
            Some('S') => write!(out, "{:02}", secs % 60),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    v: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let _ = write!(out, "{v}");
        }
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(&item, indent, depth + 1, out)?;
            }
            if v.len() != Some(0) {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            let mut empty = true;
            for (i, key) in v.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                empty = false;
                newline(out, depth + 1);
                match key.as_str() {
                    Some(k) => json_string(k, out),
                    None => json_string(&key.to_string(), out),
                }
                out.push_str(": ");
                write_json(&v.get_item(&key)?, indent, depth + 1, out)?;
            }
            if !empty {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => json_string(&v.to_string(), out),
    }
    Ok(())
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The Python `str` and `dict` methods that chat templates call.
fn python_method(
    _state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let arg_str = |i: usize| args.get(i).and_then(|a| a.as_str().map(str::to_string));
    if let Some(s) = value.as_str() {
        let chars: Option<Vec<char>> = arg_str(0).map(|c| c.chars().collect());
        let strip_set = |c: char| match &chars {
            Some(set) => set.contains(&c),
            None => c.is_whitespace(),
        };
        let out = match method {
            "strip" => Value::from(s.trim_matches(strip_set)),
            "lstrip" => Value::from(s.trim_start_matches(strip_set)),
            "rstrip" => Value::from(s.trim_end_matches(strip_set)),
            "lower" => Value::from(s.to_lowercase()),
            "upper" => Value::from(s.to_uppercase()),
            "startswith" | "endswith" => {
                let prefixes: Vec<String> = match args.first() {
                    Some(a) if a.kind() == ValueKind::Seq => a
                        .try_iter()?
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    _ => arg_str(0).into_iter().collect(),
                };
                let hit = prefixes.iter().any(|p| {
                    if method == "startswith" {
                        s.starts_with(p.as_str())
                    } else {
                        s.ends_with(p.as_str())
                    }
                });
                Value::from(hit)
            }
            "split" => {
                let parts: Vec<Value> = match arg_str(0) {
                    Some(sep) if !sep.is_empty() => {
                        s.split(sep.as_str()).map(Value::from).collect()
                    }
                    _ => s.split_whitespace().map(Value::from).collect(),
                };
                Value::from(parts)
            }
            "replace" => match (arg_str(0), arg_str(1)) {
                (Some(a), Some(b)) => Value::from(s.replace(&a, &b)),
                _ => return Err(Error::new(ErrorKind::MissingArgument, "replace(old, new)")),
            },
            "find" => Value::from(
                arg_str(0)
                    .and_then(|n| s.find(&n))
                    .map_or(-1, |i| s[..i].chars().count() as i64),
            ),
            "title" => Value::from(title_case(s)),
            "capitalize" => {
                let mut cs = s.chars();
                Value::from(match cs.next() {
                    Some(f) => f
                        .to_uppercase()
                        .chain(cs.as_str().to_lowercase().chars())
                        .collect(),
                    None => String::new(),
                })
            }
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        return Ok(out);
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| Ok(Value::from(vec![k.clone(), value.get_item(&k)?])))
                    .collect::<Result<Vec<_>, Error>>()?,
            )),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| value.get_item(&k))
                    .collect::<Result<Vec<_>, Error>>()?,
            )),
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let found = value.get_item(&key)?;
                Ok(if found.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    found
                })
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphabetic() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ]
    }

    #[test]
    fn chatml_fallback() {
        let got = render_chat(None, &msgs(), true, "<s>", "</s>").unwrap();
        assert_eq!(
            got,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let got = render_chat(None, &msgs()[1..], false, "", "").unwrap();
        assert_eq!(got, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn gemma_turns_fold_the_system_message_into_the_first_user_turn() {
        let got = gemma_turns(&msgs(), true);
        assert_eq!(
            got,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        // llama.cpp's own test conversation (tests/test-chat-template.cpp).
        let conversation = [
            ChatMessage::new("system", "You are a helpful assistant"),
            ChatMessage::new("user", "Hello"),
            ChatMessage::new("assistant", "Hi there"),
            ChatMessage::new("user", "Who are you"),
            ChatMessage::new("assistant", "   I am an assistant   "),
            ChatMessage::new("user", "Another question"),
        ];
        assert_eq!(
            gemma_turns(&conversation, true),
            "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"
        );
        // A system message after a model turn waits for the next user turn.
        let late = [
            ChatMessage::new("assistant", "Yes"),
            ChatMessage::new("system", " S "),
            ChatMessage::new("user", "\tQ\n"),
        ];
        assert_eq!(
            gemma_turns(&late, false),
            "<start_of_turn>model\nYes<end_of_turn>\n<start_of_turn>user\nS\n\nQ<end_of_turn>\n"
        );
        assert_eq!(
            ChatFormat::Gemma.render(&[], true),
            "<start_of_turn>model\n"
        );
        assert_eq!(
            ChatFormat::ChatMl.render(&msgs(), false),
            chatml(&msgs(), false)
        );
    }

    #[test]
    fn hf_style_template() {
        // trim_blocks/lstrip_blocks, bos_token, python methods, loop variables.
        let t = "{{ bos_token }}{% for m in messages %}\n  {% if m['role'] == 'system' %}\n[{{ m['content'].strip().upper() }}]\n  {% else %}\n{{ m.role.title() }}: {{ m.content }}\n  {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}A:{% endif %}";
        let got = render_chat(Some(t), &msgs(), true, "<s>", "</s>").unwrap();
        assert_eq!(got, "<s>[BE BRIEF.]\nUser: Hi\nA:");
    }

    #[test]
    fn raise_exception_is_a_clear_error() {
        let t = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}";
        let err = render_chat(Some(t), &msgs(), true, "", "").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Conversations must start with a user message"),
            "{text}"
        );
        let err = render_chat(Some("{% for %}"), &msgs(), true, "", "").unwrap_err();
        assert!(matches!(err, TokenizerError::Template(_)), "{err}");
    }

    #[test]
    fn templates_receive_tools() {
        let t = "{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif %}{{ messages[0].content }}";
        let env = environment();
        let tmpl = env.template_from_str(t).unwrap();
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather"}}]);
        let got = render(&tmpl, &msgs()[1..], Some(&tools), true, "", "").unwrap();
        assert_eq!(got, "[get_weather]Hi");
        let got = render(&tmpl, &msgs()[1..], None, true, "", "").unwrap();
        assert_eq!(got, "Hi");
    }

    const QWEN25: &str = include_str!("../../tests/data/templates/qwen2.5-instruct.jinja");
    const LLAMA31: &str = include_str!("../../tests/data/templates/llama3.1-instruct.jinja");

    /// An agent loop's second request: the call the model made and its result.
    fn tool_turns() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("user", "Weather in Paris?"),
            ChatMessage::assistant_calls(
                "",
                vec![ChatToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                }],
            ),
            ChatMessage::tool_result("call_1", "18 C"),
        ]
    }

    fn weather_tool() -> serde_json::Value {
        serde_json::json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    fn render_tools(
        template: &str,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
    ) -> String {
        let env = environment();
        let tmpl = env.template_from_str(template).unwrap();
        render(&tmpl, messages, tools, true, "<s>", "</s>").unwrap()
    }

    #[test]
    fn tool_turns_reach_templates_as_hugging_face_passes_them() {
        let got = render_tools(QWEN25, &tool_turns(), Some(&weather_tool()));
        assert!(
            got.contains(
                "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\""
            ),
            "{got}"
        );
        assert!(
            got.ends_with(concat!(
                "<|im_start|>user\nWeather in Paris?<|im_end|>\n",
                "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n",
                "<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>\n",
                "<|im_start|>assistant\n"
            )),
            "{got}"
        );
        let got = render_tools(LLAMA31, &tool_turns(), Some(&weather_tool()));
        assert!(
            got.contains("\"parameters\": dictionary of argument name"),
            "{got}"
        );
        assert!(
            got.contains(concat!(
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>",
                "<|start_header_id|>ipython<|end_header_id|>\n\n",
            )),
            "{got}"
        );
        assert!(got.contains("18 C"), "{got}");
        // An assistant message without calls has no `tool_calls` key (Llama 3.1 tests
        // `'tool_calls' in message`).
        let plain = [
            ChatMessage::new("user", "a"),
            ChatMessage::new("assistant", "b"),
        ];
        let got = render_tools(LLAMA31, &plain, None);
        assert!(
            got.contains("<|start_header_id|>assistant<|end_header_id|>\n\nb<|eot_id|>"),
            "{got}"
        );
    }

    #[test]
    fn formats_without_tools_get_plain_turns() {
        let want = concat!(
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n",
            "<|im_start|>assistant\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}<|im_end|>\n",
            "<|im_start|>user\nResult of get_weather:\n18 C<|im_end|>\n",
            "<|im_start|>assistant\n"
        );
        assert_eq!(chatml(&tool_turns(), true), want);
        let got = gemma_turns(&tool_turns(), false);
        assert!(
            got.contains("<start_of_turn>model\n{\"name\": \"get_weather\""),
            "{got}"
        );
        assert!(
            got.contains("<start_of_turn>user\nResult of get_weather:\n18 C<end_of_turn>"),
            "{got}"
        );
        // Content beside the calls comes first; an unknown call id still reads.
        let mut turns = tool_turns();
        turns[1].content = "Looking.".into();
        turns[2].tool_call_id = Some("call_9".into());
        let plain = plain_tool_turns(&turns);
        assert_eq!(
            plain[1].content,
            "Looking.\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"
        );
        assert_eq!(
            (plain[2].role.as_str(), plain[2].content.as_str()),
            ("user", "Result:\n18 C")
        );
        assert!(
            plain
                .iter()
                .all(|m| m.tool_calls.is_empty() && m.tool_call_id.is_none())
        );
    }

    #[test]
    fn tojson_is_pythons() {
        let t = "{{ {'a': [1, 'x\"y'], 'b': none} | tojson }}|{{ [1,2] | tojson(indent=2) }}";
        let got = render_chat(Some(t), &[], false, "", "").unwrap();
        assert_eq!(got, "{\"a\": [1, \"x\\\"y\"], \"b\": null}|[\n  1,\n  2\n]");
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-23 10:20:30 UTC was a Tuesday.
        assert_eq!(
            strftime("%d %b %Y %H:%M:%S %A %%", 1_721_730_030),
            "23 Jul 2024 10:20:30 Tuesday %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    }
}
