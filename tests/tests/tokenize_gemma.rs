//! The second reference model's SentencePiece tokenizer (Gemma 3 270M) against llama.cpp's
//! recorded ids (`tests/data/reference/gemma3-270m`): every string of tokenize.json in its
//! three variants, the prompts of greedy.json, and Gemma's chat turns. The tokenizer is
//! built from the file's metadata alone, as `kiln tokenize` builds it.

use kiln_engine::gguf::Gguf;
use kiln_engine::tokenizer::{ChatMessage, EncodeOptions, StreamDecoder, Tokenizer};
use serde_json::Value;

fn tokenizer() -> Tokenizer {
    let gguf = Gguf::open_metadata(kiln_tests::gemma_model()).expect("the Gemma model's header");
    Tokenizer::from_gguf(&gguf).expect("its tokenizer loads")
}

fn reference(name: &str) -> Value {
    let path = kiln_tests::reference_dir("gemma3-270m").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

fn strings() -> Vec<Value> {
    let strings = reference("tokenize.json")["strings"].clone();
    let strings = strings.as_array().expect("strings").clone();
    assert!(strings.len() >= 11, "{} strings", strings.len());
    strings
}

fn text(s: &Value) -> &str {
    s["text"].as_str().expect("text")
}

fn prompts() -> Vec<Value> {
    reference("greedy.json")["prompts"]
        .as_array()
        .expect("prompts")
        .clone()
}

#[test]
fn ids_with_bos_and_special_tokens_parsed() {
    let t = tokenizer();
    for s in strings() {
        assert_eq!(
            t.encode(text(&s), true, true),
            ids(&s["ids"]),
            "{}",
            s["name"]
        );
    }
}

#[test]
fn ids_without_parsing_special_tokens() {
    let t = tokenizer();
    for s in strings() {
        assert_eq!(
            t.encode(text(&s), true, false),
            ids(&s["ids_no_parse_special"]),
            "{}",
            s["name"]
        );
    }
}

#[test]
fn ids_without_bos() {
    let t = tokenizer();
    let no_bos = EncodeOptions {
        add_bos: false,
        ..t.encode_options(true, true)
    };
    for s in strings() {
        assert_eq!(
            t.encode_with(text(&s), no_bos),
            ids(&s["ids_no_bos"]),
            "{}",
            s["name"]
        );
    }
}

#[test]
fn decoding_gives_back_every_string() {
    let t = tokenizer();
    for s in strings() {
        let ids = ids(&s["ids"]);
        // BOS hidden, specials rendered only on request, spaces and bytes restored.
        assert_eq!(
            t.decode_with(&ids[1..], true),
            text(&s),
            "{}",
            s["name"]
        );
        let mut d = StreamDecoder::with_special(&t, true);
        let mut streamed = String::new();
        for &id in &ids[1..] {
            let chunk = d.push(id);
            assert!(!chunk.contains('\u{FFFD}'), "{}: {chunk:?}", s["name"]);
            streamed.push_str(&chunk);
        }
        streamed.push_str(&d.finish());
        assert_eq!(streamed, text(&s), "{}", s["name"]);
    }
}

#[test]
fn greedy_prompts_tokenize_as_llama_cpp() {
    let t = tokenizer();
    for p in prompts() {
        let prompt = p["prompt"].as_str().expect("prompt");
        assert_eq!(
            t.encode(prompt, true, true),
            ids(&p["prompt_ids"]),
            "{}",
            p["name"]
        );
    }
}

/// Gemma 3's chat template as its instruction-tuned models ship it (tokenizer_config.json
/// of google/gemma-3-*-it); the reference GGUF carries none.
const GEMMA3_TEMPLATE: &str = "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n";

#[test]
fn chat_turns_render_the_reference_prompt() {
    let t = tokenizer();
    let chat = prompts()
        .into_iter()
        .find(|p| p["name"] == "chat_capital")
        .expect("the chat_capital prompt");
    let expected = chat["prompt"].as_str().expect("prompt");
    let messages = [ChatMessage::new(
        "user",
        "What is the capital of France? Answer in one sentence.",
    )];
    // The file has no template: Gemma's built-in turns.
    assert!(t.chat_template().is_none());
    let rendered = t.apply_chat_template(&messages, true).unwrap();
    assert_eq!(rendered, expected);
    assert_eq!(t.encode(&rendered, true, true), ids(&chat["prompt_ids"]));
    // Gemma 3's own template gives the same prompt (its "<bos>" is cut: encoding adds it).
    let from_template = t
        .apply_chat_template_with(Some(GEMMA3_TEMPLATE), &messages, true)
        .unwrap();
    assert_eq!(from_template, expected);

    // A conversation with a system message and a model turn: the two agree again.
    let conversation = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", " Hi "),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "Capital of Italy?"),
    ];
    let built_in = t.apply_chat_template(&conversation, true).unwrap();
    assert_eq!(
        built_in,
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nCapital of Italy?<end_of_turn>\n<start_of_turn>model\n"
    );
    let templated = t
        .apply_chat_template_with(Some(GEMMA3_TEMPLATE), &conversation, true)
        .unwrap();
    assert_eq!(templated, built_in);
    // The template's own rule is an error, not a silent fallback.
    let bad = [ChatMessage::new("assistant", "first")];
    let err = t
        .apply_chat_template_with(Some(GEMMA3_TEMPLATE), &bad, true)
        .unwrap_err();
    assert!(err.to_string().contains("must alternate"), "{err}");
}

#[test]
fn a_reply_ends_at_end_of_turn() {
    let t = tokenizer();
    let end_of_turn = t.token_id("<end_of_turn>").expect("<end_of_turn>");
    assert_eq!(end_of_turn, 106);
    assert!(t.is_eog(end_of_turn) && t.is_eog(t.eos()));
    assert_eq!((t.bos(), t.eos()), (2, 1));
    // A reply as the model writes it: text, then <end_of_turn>.
    let reply = t.encode("Paris.<end_of_turn>", false, true);
    assert_eq!(reply.last(), Some(&end_of_turn));
    assert_eq!(t.decode(&reply), "Paris.");
}
