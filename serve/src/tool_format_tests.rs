//! Tool-call syntaxes detected in real chat templates (tests/data/templates), their
//! grammars walked with random logits over the reference vocabulary (every walk ends in
//! calls that read back and keep to the tools' schemas), answers read back, and a chat
//! request in an agent loop rendered with Qwen 2.5's template.

use std::sync::OnceLock;

use serde_json::{Value, json};

use kiln_engine::gguf::Gguf;
use kiln_structured::Structured;
use kiln_tokenizer::Tokenizer;

use super::*;
use crate::shape::tool_use;

const QWEN25: &str = include_str!("../../tests/data/templates/qwen2.5-instruct.jinja");
const LLAMA31: &str = include_str!("../../tests/data/templates/llama3.1-instruct.jinja");
const MISTRAL: &str = include_str!("../../tests/data/templates/mistral-nemo-instruct.jinja");

/// The reference model's tokenizer (SmolLM2's 49k vocabulary) and its token trie.
fn vocab() -> &'static (Tokenizer, Structured) {
    static V: OnceLock<(Tokenizer, Structured)> = OnceLock::new();
    V.get_or_init(|| {
        let g = Gguf::open(kiln_tests::reference_model()).expect("the reference model opens");
        let t = Tokenizer::from_gguf(&g).expect("its tokenizer loads");
        let s = Structured::new(&t).expect("its trie builds");
        (t, s)
    })
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Tokyo"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "add", "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": -99, "maximum": 99}, "b": {"type": "boolean"}},
            "required": ["a", "b"], "additionalProperties": false}}},
    ])
}

fn use_of(format: ToolFormat, choice: Value, parallel: bool) -> ToolUse {
    let mut u = tool_use(Some(&tools()), Some(&choice)).unwrap().unwrap();
    u.format = format;
    u.parallel = parallel;
    u
}

#[test]
fn formats_are_detected_from_the_template_text() {
    assert_eq!(ToolFormat::detect(Some(QWEN25)), ToolFormat::Hermes);
    assert_eq!(ToolFormat::detect(Some(LLAMA31)), ToolFormat::Llama3Json);
    assert_eq!(ToolFormat::detect(Some(MISTRAL)), ToolFormat::Mistral);
    assert_eq!(ToolFormat::detect(None), ToolFormat::Kiln);
    // SmolLM2's template reads no tools; one that reads them in an unknown syntax.
    let (t, _) = vocab();
    assert_eq!(ToolFormat::detect(t.chat_template()), ToolFormat::Kiln);
    let unknown = "{% for t in tools %}<fn>{{ t | tojson }}</fn>{% endfor %}";
    assert_eq!(ToolFormat::detect(Some(unknown)), ToolFormat::Kiln);
    // A <tool_call> in a template that never reads tools is no tool syntax.
    assert_eq!(ToolFormat::detect(Some("<tool_call>")), ToolFormat::Kiln);
}

/// xorshift64*: random logits without a dependency.
fn next(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
}

/// Sample the grammar of `use_` greedily from random logits until it ends; the text.
fn walk(use_: &ToolUse, seed: u64) -> String {
    let (t, s) = vocab();
    let grammar = use_.grammar(t);
    let mut c = s
        .compile(&grammar)
        .unwrap_or_else(|e| panic!("{e}\n{grammar:?}"));
    let mut rng = seed | 1;
    let mut ids = Vec::new();
    for _ in 0..400 {
        let mut logits: Vec<f32> = (0..t.vocab_size()).map(|_| next(&mut rng) * 8.0).collect();
        c.apply(&mut logits).unwrap();
        let id = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as u32;
        assert!(logits[id as usize].is_finite(), "nothing allowed");
        c.accept(id).unwrap();
        if t.is_eog(id) || c.is_finished() {
            if !t.is_eog(id) {
                ids.push(id);
            }
            return t.decode(&ids);
        }
        ids.push(id);
    }
    panic!("no end in 400 tokens: {:?}", t.decode(&ids));
}

fn check_call(call: &ToolCall) {
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    match call.name.as_str() {
        "get_weather" => {
            assert!(
                ["Paris", "Tokyo"].contains(&args["city"].as_str().unwrap()),
                "{args}"
            );
            assert!(
                args["days"].as_i64().is_some_and(|d| (1..=7).contains(&d)),
                "{args}"
            );
        }
        "add" => {
            assert!(
                args["a"].as_i64().is_some_and(|a| (-99..=99).contains(&a)),
                "{args}"
            );
            assert!(args["b"].is_boolean(), "{args}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn forced_calls_in_each_syntax_read_back_valid() {
    for format in [
        ToolFormat::Hermes,
        ToolFormat::Llama3Json,
        ToolFormat::Mistral,
    ] {
        for (choice, parallel) in [
            (json!("required"), false),
            (json!("required"), true),
            (
                json!({"type": "function", "function": {"name": "add"}}),
                true,
            ),
        ] {
            let u = use_of(format, choice.clone(), parallel);
            for seed in 1..4 {
                let text = walk(&u, seed * 7919);
                let calls = u
                    .read(&text)
                    .unwrap_or_else(|t| panic!("{format:?} {choice}: not calls: {t:?}"));
                assert!(!calls.is_empty());
                if !parallel || format == ToolFormat::Llama3Json {
                    assert_eq!(calls.len(), 1, "{text}");
                }
                for c in &calls {
                    check_call(c);
                    if choice.is_object() {
                        assert_eq!(c.name, "add");
                    }
                }
                match format {
                    ToolFormat::Hermes => {
                        assert!(text.starts_with("<tool_call>\n{\"name\": \""), "{text}")
                    }
                    ToolFormat::Llama3Json => assert!(text.starts_with("{\"name\": \""), "{text}"),
                    _ => assert!(text.starts_with("[TOOL_CALLS][{\"name\": \""), "{text}"),
                }
            }
        }
    }
}

#[test]
fn auto_allows_text_or_a_call_never_a_broken_call() {
    let (t, s) = vocab();
    for format in [ToolFormat::Hermes, ToolFormat::Llama3Json] {
        let u = use_of(format, json!("auto"), true);
        let grammar = u.grammar(t);
        // Text that starts a call must continue as one.
        let mut c = s.compile(&grammar).unwrap();
        let opener = match format {
            ToolFormat::Hermes => "<tool_call>\n{\"nome",
            _ => "  {\"nome",
        };
        let ids = t.encode(opener, false, false);
        let accepted = ids
            .iter()
            .take_while(|&&id| c.allows(id).unwrap() && c.accept(id).is_ok());
        assert!(
            accepted.count() < ids.len(),
            "{format:?} let {opener:?} through"
        );
        // Plain text is an answer.
        let mut c = s.compile(&grammar).unwrap();
        for id in t.encode("It is sunny.", false, false) {
            assert!(c.allows(id).unwrap(), "{format:?}");
            c.accept(id).unwrap();
        }
        assert!(c.is_accepting());
        assert_eq!(u.read("It is sunny.").unwrap_err(), "It is sunny.");
    }
}

#[test]
fn answers_read_back() {
    let hermes = use_of(ToolFormat::Hermes, json!("auto"), true);
    let two = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": true}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>";
    let calls = hermes.read(two).unwrap();
    assert_eq!(
        calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect::<Vec<_>>(),
        [
            ("add", r#"{"a":1,"b":true}"#),
            ("get_weather", r#"{"city":"Paris","days":2}"#)
        ]
    );
    assert_ne!(calls[0].id, calls[1].id);
    // Cut by max_tokens, an unknown tool, text after the calls: the text as it is.
    for bad in [
        "<tool_call>\n{\"name\": \"add\", \"argu",
        "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"add\", \"arguments\": {}}\n</tool_call> and so on",
    ] {
        assert_eq!(hermes.read(bad).unwrap_err(), bad);
    }
    let llama = use_of(ToolFormat::Llama3Json, json!("auto"), true);
    let calls = llama
        .read("{\"name\": \"add\", \"parameters\": {\"a\": -0, \"b\": false}}")
        .unwrap();
    assert_eq!(
        (calls[0].name.as_str(), calls[0].arguments.as_str()),
        ("add", r#"{"a":0,"b":false}"#)
    );
    let mistral = use_of(ToolFormat::Mistral, json!("auto"), true);
    for text in [
        "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": false}}]",
        "[{\"name\": \"add\", \"arguments\": {\"a\": 3, \"b\": false}}]",
    ] {
        let calls = mistral.read(text).unwrap();
        assert_eq!(calls[0].name, "add");
        // Mistral's templates refuse ids that are not 9 letters and digits.
        assert_eq!(calls[0].id.len(), 9);
        assert!(calls[0].id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}

#[test]
fn an_agent_loop_renders_with_the_models_template() {
    let g = Gguf::open(kiln_tests::reference_model()).unwrap();
    let mut t = Tokenizer::from_gguf(&g).unwrap();
    t.set_chat_template(Some(QWEN25.to_string()));
    let limits = crate::api::Limits {
        model_id: "m".into(),
        n_ctx: 4096,
        kv_capacity: 4096,
        structured: Some(vocab().1.clone()),
    };
    let body = json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ],
        "tools": tools(),
        "tool_choice": "required",
    });
    let params = crate::api::parse_chat(body.to_string().as_bytes(), &t, &limits).unwrap();
    let prompt = t.decode_with(&params.prompt_ids, true);
    assert!(
        prompt.contains("<tools>\n{\"type\": \"function\""),
        "{prompt}"
    );
    assert!(prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 1}}\n</tool_call><|im_end|>"), "{prompt}");
    assert!(
        prompt.contains("<tool_response>\n18 C\n</tool_response>"),
        "{prompt}"
    );
    assert_eq!(params.tools.as_ref().unwrap().format, ToolFormat::Hermes);
    assert!(params.constraint.is_some());
    // The same conversation on SmolLM2's own template: kiln's format, plain turns.
    t.set_chat_template(
        g.get_str("tokenizer.chat_template")
            .ok()
            .map(str::to_string),
    );
    let params = crate::api::parse_chat(body.to_string().as_bytes(), &t, &limits).unwrap();
    let prompt = t.decode_with(&params.prompt_ids, true);
    assert!(prompt.contains("You can call these functions"), "{prompt}");
    assert!(prompt.contains("<|im_start|>assistant\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 1}}<|im_end|>"), "{prompt}");
    assert!(
        prompt.contains("<|im_start|>user\nResult of get_weather:\n18 C<|im_end|>"),
        "{prompt}"
    );
    assert_eq!(params.tools.as_ref().unwrap().format, ToolFormat::Kiln);
}
