//! The reference models' tokenizers against llama.cpp's recorded ids
//! (`tests/data/reference/<model>/tokenize.json`): SmolLM2's byte-level BPE (special tokens
//! parsed and not, BOS forced, pieces, the end-of-generation set) and Gemma 3's
//! SentencePiece (BOS added, special tokens parsed and not, no BOS; greedy.json's prompts;
//! chat turns). Tokenizers are built from the files' metadata alone, as `kiln tokenize`
//! builds them (kiln need not load Gemma's tensor types for this).

use std::path::Path;

use kiln_engine::gguf::Gguf;
use kiln_engine::tokenizer::{ChatMessage, EncodeOptions, StreamDecoder, Tokenizer};
use serde_json::Value;

const SMOLLM2: &str = "smollm2";
const GEMMA: &str = "gemma3-270m";

fn load(path: &Path) -> Tokenizer {
    let gguf = Gguf::open_metadata(path).expect("the model's header reads");
    Tokenizer::from_gguf(&gguf).expect("its tokenizer loads")
}

fn smollm2() -> Tokenizer {
    load(&kiln_tests::reference_model())
}

fn gemma() -> Tokenizer {
    load(&kiln_tests::gemma_model())
}

/// `tests/data/reference/<model>/<name>` parsed as JSON.
fn reference(model: &str, name: &str) -> Value {
    let path = kiln_tests::reference_dir(model).join(name);
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

fn strings(model: &str) -> Vec<Value> {
    let data = reference(model, "tokenize.json");
    let strings = data["strings"].as_array().expect("strings").clone();
    assert!(strings.len() >= 9, "{model}: {} strings", strings.len());
    strings
}

fn text(s: &Value) -> &str {
    s["text"].as_str().expect("text")
}

/// Every string of `model`'s tokenize.json: `encode` gives llama.cpp's ids under `key`.
fn check_strings(model: &str, key: &str, encode: impl Fn(&str) -> Vec<u32>) {
    for s in strings(model) {
        assert_eq!(
            encode(text(&s)),
            ids(&s[key]),
            "{model} {key} {}",
            s["name"]
        );
    }
}

/// The text of `ids` through the streaming decoder, which must never cut a character.
fn streamed(t: &Tokenizer, ids: &[u32], special: bool) -> String {
    let mut d = StreamDecoder::with_special(t, special);
    let mut out = String::new();
    for &id in ids {
        let chunk = d.push(id);
        assert!(!chunk.contains('\u{FFFD}'), "{chunk:?}");
        out.push_str(&chunk);
    }
    out + &d.finish()
}

#[test]
fn ids_with_special_tokens_parsed() {
    let t = smollm2();
    // The model sets add_bos_token=false, so add_special adds nothing.
    check_strings(SMOLLM2, "ids", |s| t.encode(s, true, true));
}

#[test]
fn ids_without_parsing_special_tokens() {
    let t = smollm2();
    check_strings(SMOLLM2, "ids_no_parse_special", |s| {
        t.encode(s, false, false)
    });
}

#[test]
fn ids_with_a_forced_bos() {
    let t = smollm2();
    let options = EncodeOptions {
        add_bos: true,
        ..t.encode_options(true, true)
    };
    check_strings(SMOLLM2, "ids_with_bos", |s| t.encode_with(s, options));
}

#[test]
fn pieces_concatenate_to_the_input() {
    let t = smollm2();
    for s in strings(SMOLLM2) {
        let ids = ids(&s["ids"]);
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| t.token_piece(id, true)).collect();
        assert_eq!(bytes, text(&s).as_bytes(), "{}", s["name"]);
        // Pieces that are whole characters read as llama.cpp printed them.
        for (&id, expected) in ids.iter().zip(s["pieces"].as_array().expect("pieces")) {
            let expected = expected.as_str().expect("a piece");
            let piece = t.token_piece(id, true);
            match std::str::from_utf8(&piece) {
                Ok(piece) if !expected.contains("\\x") => {
                    assert_eq!(piece, expected, "{} id {id}", s["name"]);
                }
                _ => assert!(expected.contains("\\x"), "{} id {id}", s["name"]),
            }
        }
    }
}

#[test]
fn streaming_holds_back_split_characters() {
    let t = smollm2();
    let s = strings(SMOLLM2)
        .into_iter()
        .find(|s| s["name"] == "unicode")
        .expect("the unicode string");
    assert_eq!(streamed(&t, &ids(&s["ids"]), false), text(&s));
}

#[test]
fn end_of_generation_set() {
    let t = smollm2();
    let meta = kiln_tests::reference_json("meta.json");
    assert_eq!(
        t.eog_ids(),
        ids(&meta["tokenizer"]["llama_cpp_special"]["EOG"])
    );
    assert_eq!(t.eog_ids(), [0, 2, 4]);
    assert!(t.is_eog(2) && !t.is_eog(1) && !t.is_eog(3));
    assert_eq!((t.bos(), t.eos()), (1, 2));
    assert!(!t.add_bos());
    assert_eq!(t.vocab_size(), 49152);
}

#[test]
fn gemma_ids_with_bos_and_special_tokens_parsed() {
    let t = gemma();
    check_strings(GEMMA, "ids", |s| t.encode(s, true, true));
}

#[test]
fn gemma_ids_without_parsing_special_tokens() {
    let t = gemma();
    check_strings(GEMMA, "ids_no_parse_special", |s| t.encode(s, true, false));
}

#[test]
fn gemma_ids_without_bos() {
    let t = gemma();
    let no_bos = EncodeOptions {
        add_bos: false,
        ..t.encode_options(true, true)
    };
    check_strings(GEMMA, "ids_no_bos", |s| t.encode_with(s, no_bos));
}

#[test]
fn gemma_decoding_gives_back_every_string() {
    let t = gemma();
    for s in strings(GEMMA) {
        let ids = ids(&s["ids"]);
        assert_eq!(ids[0], t.bos(), "{}", s["name"]);
        // Spaces from "▁", bytes from <0xNN> tokens, special tokens on request.
        assert_eq!(t.decode_with(&ids[1..], true), text(&s), "{}", s["name"]);
        assert_eq!(streamed(&t, &ids[1..], true), text(&s), "{}", s["name"]);
    }
}

fn gemma_prompts() -> Vec<Value> {
    reference(GEMMA, "greedy.json")["prompts"]
        .as_array()
        .expect("prompts")
        .clone()
}

#[test]
fn gemma_greedy_prompts_tokenize_as_llama_cpp() {
    let t = gemma();
    for p in gemma_prompts() {
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
fn gemma_chat_turns_render_the_reference_prompt() {
    let t = gemma();
    let chat = gemma_prompts()
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
fn gemma_reply_ends_at_end_of_turn() {
    let t = gemma();
    let end_of_turn = t.token_id("<end_of_turn>").expect("<end_of_turn>");
    assert_eq!(end_of_turn, 106);
    assert!(t.is_eog(end_of_turn) && t.is_eog(t.eos()));
    assert_eq!((t.bos(), t.eos()), (2, 1));
    // A reply as the model writes it: text, then <end_of_turn>.
    let reply = t.encode("Paris.<end_of_turn>", false, true);
    assert_eq!(reply.last(), Some(&end_of_turn));
    assert_eq!(t.decode(&reply), "Paris.");
}
