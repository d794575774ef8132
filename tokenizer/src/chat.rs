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

use minijinja::{Error, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

use super::{Tokenizer, TokenizerError};

mod python;

use python::{environment, python_json};

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
}
