//! The tool-call syntax a model was trained to write, found in its chat template, turned
//! into a grammar and read back into calls.
//!
//! Detection is by what the template text contains (it writes earlier calls in the
//! syntax the model answers in):
//! - `<tool_call>`: Hermes style, used by Qwen 2.5, Qwen 3 and Hermes 2/3, each
//!   call `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, several calls
//!   one per line;
//! - `[TOOL_CALLS]`: Mistral, `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`;
//! - `"parameters": dictionary of argument name` or `<|python_tag|>` (Llama 3.1 to 3.3):
//!   one bare JSON object `{"name": ..., "parameters": {...}}`;
//! - anything else, or a template that does not read `tools`: kiln's own JSON format
//!   (`shape.rs`), described to the model in a system message.
//!
//! The grammar is Lark (llguidance's dialect): the syntax's fixed text as literals (a
//! marker that is one control token of the vocabulary as that token), each tool's
//! arguments as `%json` of its parameters. With `tool_choice` `auto` the answer may also
//! be text that does not start a call.

use serde_json::{Value, json};

use kiln_structured::{Grammar, lark_json};
use kiln_tokenizer::Tokenizer;

use super::shape::{Tool, ToolCall, ToolChoice, ToolUse, arguments_text, call_id};

/// A tool-call syntax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolFormat {
    /// kiln's: one JSON object, a call or `{"response": ...}` (`shape.rs`).
    #[default]
    Kiln,
    /// `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` per call.
    Hermes,
    /// `{"name": ..., "parameters": ...}`, one call.
    Llama3Json,
    /// `[TOOL_CALLS][{"name": ..., "arguments": ...}, ...]`.
    Mistral,
}

/// Where a syntax's calls start and end.
struct Syntax {
    /// Before the calls (Mistral's marker and the array's bracket).
    head: &'static [&'static str],
    /// Around each call.
    open: &'static str,
    close: &'static str,
    /// Between calls; None: one call only.
    sep: Option<&'static str>,
    /// After the calls.
    tail: &'static str,
    /// The key of the arguments.
    key: &'static str,
}

impl ToolFormat {
    /// The syntax `template` writes tool calls in (kiln's when none is known).
    pub fn detect(template: Option<&str>) -> ToolFormat {
        let Some(t) = template.filter(|t| t.contains("tools")) else {
            return ToolFormat::Kiln;
        };
        if t.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if t.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if t.contains("\"parameters\": dictionary of argument name")
            || t.contains("<|python_tag|>")
        {
            ToolFormat::Llama3Json
        } else {
            ToolFormat::Kiln
        }
    }

    fn syntax(self) -> Syntax {
        match self {
            ToolFormat::Hermes => Syntax {
                head: &[],
                open: "<tool_call>\n",
                close: "\n</tool_call>",
                sep: Some("\n"),
                tail: "",
                key: "arguments",
            },
            ToolFormat::Mistral => Syntax {
                head: &["[TOOL_CALLS]", "["],
                open: "",
                close: "",
                sep: Some(", "),
                tail: "]",
                key: "arguments",
            },
            ToolFormat::Llama3Json | ToolFormat::Kiln => Syntax {
                head: &[],
                open: "",
                close: "",
                sep: None,
                tail: "",
                key: "parameters",
            },
        }
    }

    /// The grammar of an answer to `use_` in this syntax (not kiln's: see
    /// [`ToolUse::grammar`]).
    pub fn grammar(self, use_: &ToolUse, tokenizer: &Tokenizer) -> Grammar {
        let syntax = self.syntax();
        let lit = |text: &str| literal(tokenizer, text);
        let mut rules = Vec::new();
        let tools: Vec<(usize, &Tool)> = match &use_.choice {
            ToolChoice::Named(name) => use_
                .tools
                .iter()
                .enumerate()
                .filter(|(_, t)| t.name == *name)
                .collect(),
            _ => use_.tools.iter().enumerate().collect(),
        };
        let mut alternatives = Vec::new();
        for (i, t) in tools {
            let head = format!("{{\"name\": {}, \"{}\": ", json!(t.name), syntax.key);
            let mut parts = Vec::new();
            if !syntax.open.is_empty() {
                parts.push(lit(syntax.open));
            }
            parts.extend([lit(&head), format!("args{i}"), lit("}")]);
            if !syntax.close.is_empty() {
                parts.push(lit(syntax.close));
            }
            rules.push(format!("call{i}: {}", parts.join(" ")));
            rules.push(format!("args{i}: {}", lark_json(&t.parameters)));
            alternatives.push(format!("call{i}"));
        }
        rules.push(format!("call: {}", alternatives.join(" | ")));
        let calls = match syntax.sep.filter(|_| use_.parallel) {
            Some(sep) => format!("call ({} call)*", lit(sep)),
            None => "call".to_string(),
        };
        let mut parts: Vec<String> = syntax.head.iter().map(|h| lit(h)).collect();
        parts.push(calls);
        if !syntax.tail.is_empty() {
            parts.push(lit(syntax.tail));
        }
        rules.push(format!("calls: {}", parts.join(" ")));
        if use_.choice == ToolChoice::Auto {
            // Text that does not start a call (a marker that is a control token never
            // appears in text).
            let start = match self {
                ToolFormat::Hermes => lit(syntax.open),
                ToolFormat::Mistral => lit(syntax.head[0]),
                _ => lit("{"),
            };
            let guard = if start.starts_with("<[") {
                String::new()
            } else {
                format!(" & ~(/[ \\t\\n]*/ {start} /(.|\\n)*/)")
            };
            rules.push(format!("TEXT: /(.|\\n)+/{guard}"));
            rules.insert(0, "start: calls | TEXT".to_string());
        } else {
            rules.insert(0, "start: calls".to_string());
        }
        Grammar::Lark(rules.join("\n"))
    }

    /// Read a complete answer in this syntax: Ok(calls), or Err(text) for a plain answer
    /// (or text that is not a complete call, as when max_tokens cut it).
    pub fn read(self, use_: &ToolUse, text: &str) -> Result<Vec<ToolCall>, String> {
        let syntax = self.syntax();
        let not_calls = || text.to_string();
        let body = text.trim();
        let objects: Vec<Value> = match self {
            ToolFormat::Hermes => {
                if !body.starts_with(syntax.open.trim()) {
                    return Err(not_calls());
                }
                let mut objects = Vec::new();
                let mut rest = body;
                while let Some(after) = rest.trim_start().strip_prefix(syntax.open.trim()) {
                    let Some(end) = after.find(syntax.close.trim()) else {
                        return Err(not_calls());
                    };
                    let Ok(v) = serde_json::from_str(after[..end].trim()) else {
                        return Err(not_calls());
                    };
                    objects.push(v);
                    rest = &after[end + syntax.close.trim().len()..];
                }
                if !rest.trim().is_empty() {
                    return Err(not_calls());
                }
                objects
            }
            ToolFormat::Mistral => {
                // The marker is a control token: decoded text may lack it.
                let array = body.strip_prefix("[TOOL_CALLS]").unwrap_or(body);
                match serde_json::from_str(array.trim()) {
                    Ok(Value::Array(items)) if !items.is_empty() => items,
                    _ => return Err(not_calls()),
                }
            }
            ToolFormat::Llama3Json | ToolFormat::Kiln => {
                let object = body.strip_prefix("<|python_tag|>").unwrap_or(body);
                match serde_json::from_str(object.trim()) {
                    Ok(v) => vec![v],
                    Err(_) => return Err(not_calls()),
                }
            }
        };
        objects
            .iter()
            .map(|o| {
                let name = o.get("name").and_then(Value::as_str)?;
                let args = o.get(syntax.key).or_else(|| o.get("arguments"))?;
                (args.is_object() && use_.tools.iter().any(|t| t.name == name)).then(|| ToolCall {
                    id: self.call_id(),
                    name: name.to_string(),
                    arguments: arguments_text(args),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_calls)
    }

    /// A fresh call id: Mistral's templates take 9 letters and digits, others `call_...`.
    pub fn call_id(self) -> String {
        let id = call_id();
        match self {
            ToolFormat::Mistral => {
                let digits = id.trim_start_matches("call_");
                let tail = &digits[digits.len().saturating_sub(9)..];
                format!("{tail:0>9}")
            }
            _ => id,
        }
    }
}

/// `text` as a Lark literal: the control token it is, if it is one (`<[id]>`), else a
/// string.
fn literal(tokenizer: &Tokenizer, text: &str) -> String {
    match tokenizer.token_id(text) {
        Some(id) if tokenizer.is_control(id) => format!("<[{id}]>"),
        _ => Value::from(text).to_string(),
    }
}

#[cfg(test)]
#[path = "tool_format_tests.rs"]
mod tests;
