//! The tokenizer of the reference model against llama.cpp's recorded ids
//! (`tests/data/reference/smollm2/tokenize.json`): special tokens parsed and not, BOS forced,
//! pieces, the end-of-generation set. Skips when the model is absent.

use kiln_engine::gguf::Gguf;
use kiln_engine::tokenizer::{EncodeOptions, StreamDecoder, Tokenizer};
use serde_json::Value;

fn tokenizer() -> Option<Tokenizer> {
    let path = kiln_tests::reference_model();
    let gguf = Gguf::open(&path).expect("the reference model opens");
    Some(Tokenizer::from_gguf(&gguf).expect("its tokenizer loads"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

fn strings() -> Vec<Value> {
    let data = kiln_tests::reference_json("tokenize.json");
    data["strings"].as_array().expect("strings").clone()
}

fn text(s: &Value) -> &str {
    s["text"].as_str().expect("text")
}

#[test]
fn ids_with_special_tokens_parsed() {
    let Some(t) = tokenizer() else { return };
    for s in strings() {
        // The model sets add_bos_token=false, so add_special adds nothing.
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
    let Some(t) = tokenizer() else { return };
    for s in strings() {
        assert_eq!(
            t.encode(text(&s), false, false),
            ids(&s["ids_no_parse_special"]),
            "{}",
            s["name"]
        );
    }
}

#[test]
fn ids_with_a_forced_bos() {
    let Some(t) = tokenizer() else { return };
    let options = EncodeOptions {
        add_bos: true,
        ..t.encode_options(true, true)
    };
    for s in strings() {
        assert_eq!(
            t.encode_with(text(&s), options),
            ids(&s["ids_with_bos"]),
            "{}",
            s["name"]
        );
    }
}

#[test]
fn pieces_concatenate_to_the_input() {
    let Some(t) = tokenizer() else { return };
    for s in strings() {
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
    let Some(t) = tokenizer() else { return };
    let s = strings()
        .into_iter()
        .find(|s| s["name"] == "unicode")
        .expect("the unicode string");
    let mut d = StreamDecoder::new(&t);
    let mut out = String::new();
    for id in ids(&s["ids"]) {
        let chunk = d.push(id);
        assert!(!chunk.contains('\u{FFFD}'), "{chunk:?}");
        out.push_str(&chunk);
    }
    out.push_str(&d.finish());
    assert_eq!(out, text(&s));
}

#[test]
fn end_of_generation_set() {
    let Some(t) = tokenizer() else { return };
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
