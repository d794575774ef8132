//! The shape of a chat answer: `response_format` (any JSON object, or a value of a JSON
//! schema) and `tools` with `tool_choice`, turned into a grammar that constrains sampling;
//! and, once the answer is complete, its text turned back into `tool_calls`.
//!
//! kiln's tool-call format, for models whose template has none (SmolLM2's ChatML): the
//! answer is one JSON object, `{"name": <tool>, "arguments": {...}}` for a call (arguments
//! valid against that tool's `parameters`), or `{"response": <text>}` for a plain answer
//! when `tool_choice` is `auto`. The grammar allows nothing else, so the output always
//! parses; the tools and this format are described to the model in a system message.
//! A model whose template has a tool-call syntax of its own is held to that syntax
//! instead (`tool_format.rs`).

use serde_json::{Value, json};

use kiln_structured::{Constraint, Grammar, Structured};
use kiln_tokenizer::{ChatMessage, Tokenizer};

use super::api::ApiError;
use super::tool_format::ToolFormat;

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

/// What `tool_choice` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// A call or a plain answer, as the model decides.
    Auto,
    /// A call of some tool.
    Required,
    /// A call of this tool.
    Named(String),
}

/// Tools a request offers, and how the answer is read back.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// The syntax of calls: the model's own, or kiln's.
    pub format: ToolFormat,
    /// Several calls in one answer may be made (`parallel_tool_calls`, where the syntax
    /// has room for them).
    pub parallel: bool,
}

/// The grammar and the tool use a chat request asks for.
#[derive(Debug, Default)]
pub struct Shape {
    pub constraint: Option<Constraint>,
    pub tools: Option<ToolUse>,
}

fn field_error(
    param: impl Into<String>,
    code: &'static str,
    message: impl Into<String>,
) -> ApiError {
    ApiError::invalid_field(param.into(), code, message)
}

/// `response_format`: None for text.
pub fn response_format(value: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(obj) = v.as_object() else {
        return Err(field_error(
            "response_format",
            "invalid_type",
            "response_format must be an object such as {\"type\": \"json_object\"}",
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Grammar::JsonObject)),
        Some("json_schema") => {
            let Some(js) = obj.get("json_schema").and_then(Value::as_object) else {
                return Err(field_error(
                    "response_format.json_schema",
                    "missing_required_parameter",
                    "response_format.json_schema is required for type json_schema: {\"name\": ..., \"schema\": {...}}",
                ));
            };
            match js.get("name") {
                Some(Value::String(n)) if valid_name(n) => {}
                Some(Value::String(n)) => {
                    return Err(field_error(
                        "response_format.json_schema.name",
                        "invalid_value",
                        format!(
                            "response_format.json_schema.name {n:?} must be 1 to 64 letters, digits, '_' or '-'"
                        ),
                    ));
                }
                _ => {
                    return Err(field_error(
                        "response_format.json_schema.name",
                        "missing_required_parameter",
                        "response_format.json_schema.name is required (a string)",
                    ));
                }
            }
            if js
                .get("strict")
                .is_some_and(|s| !s.is_boolean() && !s.is_null())
            {
                return Err(field_error(
                    "response_format.json_schema.strict",
                    "invalid_type",
                    "response_format.json_schema.strict must be a boolean",
                ));
            }
            match js.get("schema") {
                // OpenAI takes a missing schema as any JSON object.
                None | Some(Value::Null) => Ok(Some(Grammar::JsonObject)),
                Some(s @ (Value::Object(_) | Value::Bool(true))) => {
                    Ok(Some(Grammar::JsonSchema(s.clone())))
                }
                Some(_) => Err(field_error(
                    "response_format.json_schema.schema",
                    "invalid_type",
                    "response_format.json_schema.schema must be a JSON schema object",
                )),
            }
        }
        Some(other) => Err(field_error(
            "response_format.type",
            "invalid_value",
            format!("response_format.type {other:?} is not one of text, json_object, json_schema"),
        )),
        None => Err(field_error(
            "response_format.type",
            "missing_required_parameter",
            "response_format.type is required: text, json_object or json_schema",
        )),
    }
}

/// OpenAI's function names: `^[a-zA-Z0-9_-]{1,64}$`.
fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `tools` and `tool_choice`: None when no tool may be called.
pub fn tool_use(
    tools: Option<&Value>,
    choice: Option<&Value>,
) -> Result<Option<ToolUse>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(field_error(
                "tools",
                "invalid_type",
                "tools must be an array of {\"type\": \"function\", \"function\": {...}} objects",
            ));
        }
    };
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|u| u.name == t.name) {
            return Err(field_error(
                format!("tools[{i}].function.name"),
                "invalid_value",
                format!("tools[{i}].function.name {:?} is given twice", t.name),
            ));
        }
    }
    let choice = match choice {
        None | Some(Value::Null) => (!tools.is_empty()).then_some(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => None,
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Required),
            other => {
                return Err(field_error(
                    "tool_choice",
                    "invalid_value",
                    format!(
                        "tool_choice {other:?} is not one of none, auto, required, or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                ));
            }
        },
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => Some(ToolChoice::Named(name.to_string())),
                _ => {
                    return Err(field_error(
                        "tool_choice",
                        "invalid_value",
                        "tool_choice as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(field_error(
                "tool_choice",
                "invalid_type",
                "tool_choice must be a string or an object",
            ));
        }
    };
    let Some(choice) = choice else {
        return Ok(None);
    };
    if tools.is_empty() {
        return Err(field_error(
            "tool_choice",
            "invalid_value",
            "tool_choice is only allowed when tools are given",
        ));
    }
    if let ToolChoice::Named(name) = &choice
        && !tools.iter().any(|t| t.name == *name)
    {
        return Err(field_error(
            "tool_choice",
            "invalid_value",
            format!("tool_choice names the function {name:?}, which is not among the tools"),
        ));
    }
    Ok(Some(ToolUse {
        tools,
        choice,
        format: ToolFormat::Kiln,
        parallel: true,
    }))
}

fn tool(i: usize, t: &Value) -> Result<Tool, ApiError> {
    let at = |f: &str| format!("tools[{i}]{f}");
    let Some(obj) = t.as_object() else {
        return Err(field_error(
            at(""),
            "invalid_type",
            format!("{} must be an object", at("")),
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(field_error(
                at(".type"),
                "invalid_value",
                format!(
                    "{} is {other:?}: kiln takes function tools only",
                    at(".type")
                ),
            ));
        }
        None => {
            return Err(field_error(
                at(".type"),
                "missing_required_parameter",
                format!("{} is required (\"function\")", at(".type")),
            ));
        }
    }
    let Some(f) = obj.get("function").and_then(Value::as_object) else {
        return Err(field_error(
            at(".function"),
            "missing_required_parameter",
            format!("{} is required (an object)", at(".function")),
        ));
    };
    let name = match f.get("name") {
        Some(Value::String(n)) if valid_name(n) => n.clone(),
        Some(Value::String(n)) => {
            return Err(field_error(
                at(".function.name"),
                "invalid_value",
                format!(
                    "{} {n:?} must be 1 to 64 letters, digits, '_' or '-'",
                    at(".function.name")
                ),
            ));
        }
        _ => {
            return Err(field_error(
                at(".function.name"),
                "missing_required_parameter",
                format!("{} is required (a string)", at(".function.name")),
            ));
        }
    };
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(field_error(
                at(".function.description"),
                "invalid_type",
                format!("{} must be a string", at(".function.description")),
            ));
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(field_error(
                at(".function.parameters"),
                "invalid_type",
                format!(
                    "{} must be a JSON schema object",
                    at(".function.parameters")
                ),
            ));
        }
    };
    Ok(Tool {
        name,
        description,
        parameters,
    })
}

impl ToolUse {
    /// The schema of one call of `t`.
    fn call_schema(t: &Tool) -> Value {
        json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    }

    /// The grammar of the answer in this use's format.
    pub fn grammar(&self, tokenizer: &Tokenizer) -> Grammar {
        match self.format {
            ToolFormat::Kiln => self.kiln_grammar(),
            format => format.grammar(self, tokenizer),
        }
    }

    /// kiln's format: a call of the tools `tool_choice` allows, or (auto) a plain
    /// `{"response": ...}`.
    fn kiln_grammar(&self) -> Grammar {
        let mut branches: Vec<Value> = match &self.choice {
            ToolChoice::Named(name) => self
                .tools
                .iter()
                .filter(|t| t.name == *name)
                .map(Self::call_schema)
                .collect(),
            _ => self.tools.iter().map(Self::call_schema).collect(),
        };
        if self.choice == ToolChoice::Auto {
            branches.push(json!({
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
                "additionalProperties": false,
            }));
        }
        match branches.len() {
            1 => Grammar::JsonSchema(branches.remove(0)),
            _ => Grammar::JsonSchema(json!({"anyOf": branches})),
        }
    }

    /// The system text that tells the model about the tools and the answer's format.
    pub fn instructions(&self) -> String {
        let mut out = String::from("You can call these functions:\n");
        for t in &self.tools {
            let line =
                json!({"name": t.name, "description": t.description, "parameters": t.parameters});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out.push_str(
            "To call a function, answer with one JSON object: {\"name\": <function name>, \"arguments\": <its arguments>}.",
        );
        if self.choice == ToolChoice::Auto {
            out.push_str(" To answer without a call, answer {\"response\": <your answer>}.");
        }
        // How plain_tool_turns writes results.
        out.push_str(
            " A call's result comes back as a user message \"Result of <function name>:\".",
        );
        out
    }

    /// The tools as chat templates take them (`[{"type": "function", "function": {...}}]`).
    pub fn template_tools(&self) -> Value {
        Value::Array(
            self.tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect(),
        )
    }

    /// Read a complete answer: Ok(calls) for a call, Err(text) for a plain answer (or text
    /// that is not a complete call, as when max_tokens cut it).
    pub fn read(&self, text: &str) -> Result<Vec<ToolCall>, String> {
        match self.format {
            ToolFormat::Kiln => self.read_kiln(text),
            format => format.read(self, text),
        }
    }

    fn read_kiln(&self, text: &str) -> Result<Vec<ToolCall>, String> {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            return Err(text.to_string());
        };
        if let Some(Value::String(r)) = obj.get("response") {
            return Err(r.clone());
        }
        match (obj.get("name"), obj.get("arguments")) {
            (Some(Value::String(name)), Some(args))
                if self.tools.iter().any(|t| t.name == *name) =>
            {
                Ok(vec![ToolCall {
                    id: call_id(),
                    name: name.clone(),
                    arguments: arguments_text(args),
                }])
            }
            _ => Err(text.to_string()),
        }
    }
}

/// One call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON string (OpenAI's `function.arguments`).
    pub arguments: String,
}

impl ToolCall {
    pub fn to_json(&self, index: Option<usize>) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        });
        if let Some(i) = index {
            v["index"] = json!(i);
        }
        v
    }
}

/// A call's arguments as OpenAI's JSON text. An integer the model wrote as `-0` (JSON
/// allows it) reads as the float -0.0 and would come back as `-0.0`, which a strict
/// client's integer field refuses: it goes back as `0`.
pub(crate) fn arguments_text(args: &Value) -> String {
    fn fix(v: &mut Value) {
        match v {
            Value::Number(n) if n.as_f64().is_some_and(|x| x == 0.0 && x.is_sign_negative()) => {
                *v = json!(0);
            }
            Value::Array(items) => items.iter_mut().for_each(fix),
            Value::Object(map) => map.values_mut().for_each(fix),
            _ => {}
        }
    }
    let mut args = args.clone();
    fix(&mut args);
    args.to_string()
}

pub(crate) fn call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "call_{:x}{:04x}",
        t & 0xffff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

/// The tool instructions merged into the conversation: appended to the first system
/// message, or a system message of their own in front.
pub fn with_instructions(messages: &mut Vec<ChatMessage>, text: &str) {
    match messages.iter_mut().find(|m| m.role == "system") {
        Some(m) => {
            m.content.push_str("\n\n");
            m.content.push_str(text);
        }
        None => messages.insert(0, ChatMessage::new("system", text)),
    }
}

/// Compile the request's grammar; an error names `param`.
pub fn compile(
    structured: Option<&Structured>,
    grammar: &Grammar,
    param: String,
) -> Result<Constraint, ApiError> {
    let Some(s) = structured else {
        return Err(field_error(
            param,
            "invalid_value",
            "constrained output is not available on this server",
        ));
    };
    s.compile(grammar).map_err(|e| {
        field_error(
            param.clone(),
            "invalid_value",
            format!("{param}: the schema cannot be used: {e}"),
        )
    })
}

/// Compile each tool's parameters alone, so that an error names the tool at fault.
pub fn check_tools(structured: Option<&Structured>, use_: &ToolUse) -> Result<(), ApiError> {
    for (i, t) in use_.tools.iter().enumerate() {
        compile(
            structured,
            &Grammar::JsonSchema(t.parameters.clone()),
            format!("tools[{i}].function.parameters"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "add", "parameters": {"type": "object",
                "properties": {"a": {"type": "integer"}}, "required": ["a"]}}},
            {"type": "function", "function": {"name": "now"}},
        ])
    }

    #[test]
    fn answers_are_read_back_into_calls_or_text() {
        let t = tool_use(Some(&tools()), None).unwrap().unwrap();
        assert_eq!(t.choice, ToolChoice::Auto);
        let calls = t.read(r#"{"name": "add", "arguments": {"a": 2}}"#).unwrap();
        assert_eq!(
            (calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("add", r#"{"a":2}"#)
        );
        assert!(calls[0].id.starts_with("call_"));
        assert_eq!(t.read(r#"{"response": "hi"}"#).unwrap_err(), "hi");
        // Cut by max_tokens, or a tool that is not offered: the text as it is.
        assert_eq!(t.read(r#"{"name": "ad"#).unwrap_err(), r#"{"name": "ad"#);
        assert!(t.read(r#"{"name": "rm", "arguments": {}}"#).is_err());
        // The grammar has one branch per tool, and the plain answer under auto.
        let Grammar::JsonSchema(g) = t.kiln_grammar() else {
            panic!()
        };
        assert_eq!(g["anyOf"].as_array().unwrap().len(), 3);
        let named = tool_use(
            Some(&tools()),
            Some(&json!({"type": "function", "function": {"name": "now"}})),
        )
        .unwrap()
        .unwrap();
        let Grammar::JsonSchema(g) = named.kiln_grammar() else {
            panic!()
        };
        assert_eq!(g["properties"]["name"]["const"], "now");
    }

    #[test]
    fn none_and_errors_name_the_field() {
        assert!(
            tool_use(Some(&tools()), Some(&json!("none")))
                .unwrap()
                .is_none()
        );
        assert!(tool_use(None, None).unwrap().is_none());
        let e = tool_use(None, Some(&json!("required"))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = tool_use(
            Some(&json!([{"type": "function", "function": {"name": 3}}])),
            None,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        let e = response_format(Some(
            &json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}),
        ))
        .unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        assert_eq!(
            response_format(Some(&json!({"type": "text"}))).unwrap(),
            None
        );
        assert_eq!(
            response_format(Some(&json!({"type": "json_object"}))).unwrap(),
            Some(Grammar::JsonObject)
        );
    }
}
