//! Requests checked into parameters: error objects, stop sequences, malformed bodies, and
//! the strict checks of chat messages and prompts.

use super::*;

#[test]
fn error_objects_have_openai_fields() {
    let e = ApiError::invalid(Some("top_p"), "top_p 2 must be in [0, 1]");
    let body = e.body();
    assert_eq!(e.status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "top_p");
    assert!(body["error"]["code"].is_null());
    assert_eq!(ApiError::busy(8).status, 429);
    assert_eq!(
        ApiError::busy(8).body()["error"]["code"],
        "rate_limit_exceeded"
    );
}

#[test]
fn stop_takes_a_string_or_up_to_four_strings() {
    assert_eq!(stop_sequences(None).unwrap(), Vec::<String>::new());
    assert_eq!(stop_sequences(Some(json!("\n"))).unwrap(), ["\n"]);
    assert_eq!(stop_sequences(Some(json!(["a", "b"]))).unwrap(), ["a", "b"]);
    for bad in [
        json!(["a", "b", "c", "d", "e"]),
        json!([1]),
        json!(""),
        json!({}),
    ] {
        let e = stop_sequences(Some(bad.clone())).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("stop")), "{bad}");
    }
}

#[test]
fn malformed_bodies_are_400_with_the_parser_message() {
    let e = parse_json::<Common>(b"{\"temperature\": \"hot\"}").unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("invalid type"), "{}", e.message);
    assert_eq!(parse_json::<Common>(b"  ").unwrap_err().status, 400);
}

/// A well-formed call of an assistant message.
fn call() -> Value {
    json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}})
}

fn chat_error(messages: Value) -> ApiError {
    let items = messages.as_array().expect("an array").clone();
    chat_messages(&items).expect_err("refused")
}

#[test]
fn chat_messages_are_checked_strictly_naming_the_field() {
    for (messages, param, code) in [
        (
            json!([{"role": "wizard", "content": "hi"}]),
            "messages[0].role",
            "invalid_value",
        ),
        (
            json!([{"role": "user", "content": "a"}, {"role": "function", "content": "b"}]),
            "messages[1].role",
            "invalid_value",
        ),
        (
            json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]),
            "messages[1].tool_call_id",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "b", "tool_call_id": "x"}]),
            "messages[1].tool_call_id",
            "invalid_value",
        ),
        (
            json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "b", "tool_call_id": 3}]),
            "messages[1].tool_call_id",
            "invalid_type",
        ),
        (
            json!([{"role": "assistant", "content": null, "tool_calls": [call()]}, {"role": "tool", "tool_call_id": "c1"}]),
            "messages[1].content",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "assistant", "content": null}]),
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "user", "content": "a", "tool_calls": [call()]}]),
            "messages[0].tool_calls",
            "invalid_value",
        ),
        (
            json!([{"role": "user", "content": "a", "tool_call_id": "c1"}]),
            "messages[0].tool_call_id",
            "invalid_value",
        ),
        (
            json!([{"role": "assistant", "tool_calls": {"id": "c1"}}]),
            "messages[0].tool_calls",
            "invalid_type",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].id",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "code", "function": {"name": "f", "arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].type",
            "invalid_value",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}]),
            "messages[0].tool_calls[0].function",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].function.name",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]),
            "messages[0].tool_calls[0].function.arguments",
            "invalid_type",
        ),
        (
            json!([{"content": "hi"}]),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            json!([{"role": 7, "content": "hi"}]),
            "messages[0].role",
            "invalid_type",
        ),
        (
            json!([{"role": "user"}]),
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "user", "content": null}]),
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            json!([{"role": "user", "content": 5}]),
            "messages[0].content",
            "invalid_type",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0]",
            "invalid_value",
        ),
        (
            json!([{"role": "user", "content": "a\u{0}b"}]),
            "messages[0].content",
            "invalid_value",
        ),
        (json!(["hello"]), "messages[0]", "invalid_type"),
    ] {
        let e = chat_error(messages.clone());
        assert_eq!(e.status, 400, "{messages}");
        assert_eq!(e.param.as_deref(), Some(param), "{messages}: {}", e.message);
        assert_eq!(e.code, Some(code), "{messages}: {}", e.message);
        assert!(e.message.contains(param), "{}", e.message);
        assert_eq!(e.body()["error"]["param"], param);
    }
    let ok = json!([
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": ""},
    ]);
    let messages = chat_messages(ok.as_array().unwrap()).unwrap();
    assert_eq!(messages.len(), 3);
    // An agent loop: calls (content null) and their results.
    let ok = json!([
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": null, "tool_calls": [call()]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": "It is 42."},
    ]);
    let messages = chat_messages(ok.as_array().unwrap()).unwrap();
    assert_eq!(messages[1].tool_calls[0].name, "f");
    assert_eq!(messages[1].tool_calls[0].arguments, "{\"a\": 1}");
    assert_eq!(messages[1].content, "");
    assert_eq!(
        (
            messages[2].role.as_str(),
            messages[2].tool_call_id.as_deref()
        ),
        ("tool", Some("c1"))
    );
    assert_eq!(messages[2].content, "42");
}

#[test]
fn body_errors_are_openai_objects_with_their_status() {
    let e = ApiError::too_large(2 << 20);
    assert_eq!((e.status, e.code), (413, Some("request_too_large")));
    assert_eq!(e.body()["error"]["type"], "invalid_request_error");
    let e = ApiError::body_timeout(std::time::Duration::from_secs(3));
    assert_eq!((e.status, e.code), (408, Some("request_timeout")));
    let e = ApiError::not_json("text/plain");
    assert_eq!((e.status, e.code), (400, Some("unsupported_content_type")));
    assert!(e.message.contains("text/plain"), "{}", e.message);
}
