//! The second reference model's SentencePiece vocabulary (Gemma 3 270M, 262,144 pieces):
//! its metadata, the fast merge against the obvious one, round trips and the long text.
//! llama.cpp's recorded ids are checked in tests/tests/tokenize_gemma.rs.

use std::sync::OnceLock;

use proptest::prelude::*;

use kiln_gguf::Gguf;

use super::super::*;
use super::tiny_spm::naive;

/// The tokenizer, loaded once for all tests (from the metadata alone: kiln cannot load
/// every tensor type of this file yet, and the tokenizer needs none).
fn gemma() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = super::model_file("KILN_GEMMA_MODEL", "gemma-3-270m-q4_k_m.gguf");
        let g = Gguf::open_metadata(&path).expect("the Gemma model's header reads");
        let start = std::time::Instant::now();
        let t = Tokenizer::from_gguf(&g).expect("the Gemma tokenizer loads");
        eprintln!("Gemma vocabulary built in {:?}", start.elapsed());
        t
    })
}

#[test]
fn metadata_and_special_ids() {
    let t = gemma();
    assert_eq!(t.vocab_type(), VocabType::Spm);
    assert_eq!(t.vocab_size(), 262_144);
    assert_eq!((t.bos(), t.eos()), (2, 1));
    assert!(t.add_bos() && !t.add_eos() && !t.add_space_prefix());
    assert_eq!(t.token_text(105), "<start_of_turn>");
    assert_eq!(t.token_type(105), Some(TokenType::Control));
    assert_eq!(t.token_type(238), Some(TokenType::Byte));
    assert_eq!(t.token_text(238), "<0x00>");
    assert_eq!(t.token_type(107), Some(TokenType::UserDefined));
    assert_eq!(t.token_piece(107, false), b"\n");
    assert_eq!(t.token_piece(236743, false), b" "); // "▁"
    assert_eq!(t.token_score(1), Some(-1000.0));
    // <eos>, <end_of_turn> (the end-of-turn token, found by its text) and, as llama.cpp
    // decides by text, the HTML tag "</s>" end generation.
    let strike = t.token_id("</s>").expect("Gemma has </s>");
    assert_eq!(t.eot_id(), Some(106));
    assert_eq!(t.eog_ids(), [1, 106, strike]);
    assert!(t.is_eog(106) && !t.is_eog(105) && !t.is_eog(2));
    assert_eq!(t.chat_format(), ChatFormat::Gemma);
}

/// Text the pieces merge in one fragment: no user-defined token (new lines, tabs, runs of
/// spaces, HTML tags) is cut out of it.
fn fragment_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z]{1,8}",
        2 => Just(" ".to_string()),
        1 => "[0-9.,;:!?()'\"-]{1,3}",
        1 => "[\u{E0}-\u{FF}\u{391}-\u{3C9}\u{430}-\u{44F}]{1,4}",
        1 => "[\u{4E00}-\u{9FFF}\u{3040}-\u{30FF}]{1,4}",
        1 => "[\u{1F300}-\u{1FAFF}]{1,2}",
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| {
        let s: String = v.concat();
        let s: String = s.chars().filter(|c| !c.is_control() && *c != '<').collect();
        // One space at a time ("  " is a user-defined token).
        s.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Any text, special-token texts and white space runs included.
fn any_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-zA-Z ]{1,8}",
        1 => any::<char>().prop_map(String::from),
        1 => "[ \t\n\r\u{A0}\u{3000}]{1,4}",
        1 => proptest::sample::select(vec![
            "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "</s>", "<b>", "<table>",
            "<unused7>", "[multimodal]", "<0x41>", "▁", "<start_of", "<", ">",
        ])
        .prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fast_merge_equals_the_obvious_one(text in fragment_text()) {
        let t = gemma();
        prop_assert_eq!(t.encode(&text, false, false), naive(t, &text.replace(' ', "▁")));
    }

    #[test]
    fn decode_of_encode_is_the_text(text in any_text()) {
        let t = gemma();
        // Every byte has a token; "▁" in the text is a space to SentencePiece.
        let expected = text.replace('▁', " ");
        for parse_special in [false, true] {
            let ids = t.encode(&text, true, parse_special);
            prop_assert_eq!(ids[0], t.bos());
            prop_assert_eq!(t.decode_with(&ids[1..], true), expected.as_str());
            prop_assert_eq!(super::streamed(t, &ids[1..]), expected.as_str());
        }
    }
}

#[test]
fn stream_decoder_joins_byte_tokens() {
    let t = gemma();
    // Characters without a piece of their own become <0xNN> tokens, one byte each.
    let text = "\u{10FFFD}\u{F0001} ok";
    let ids = t.encode(text, false, false);
    assert!(
        ids.iter()
            .filter(|&&id| t.token_type(id) == Some(TokenType::Byte))
            .count()
            >= 7,
        "{ids:?}"
    );
    let mut d = StreamDecoder::new(t);
    let mut outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    outs.push(d.finish());
    assert_eq!(outs.concat(), text);
    assert!(outs.iter().all(|o| !o.contains('\u{FFFD}')), "{outs:?}");
    assert!(
        outs.iter().filter(|o| o.is_empty()).count() >= 5,
        "{outs:?}"
    );
}

#[test]
fn long_text_is_fast_and_round_trips() {
    let t = gemma();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/reference/smollm2/gpl-3.txt"
    );
    let text = std::fs::read_to_string(path).expect("gpl-3.txt");
    let start = std::time::Instant::now();
    let ids = t.encode(&text, true, false);
    let elapsed = start.elapsed();
    eprintln!(
        "gpl-3.txt with the Gemma vocabulary: {} bytes -> {} tokens in {elapsed:?}",
        text.len(),
        ids.len()
    );
    assert_eq!(t.decode(&ids), text);
    // llama.cpp (0c1e570, llama_tokenize with add_special on this file) gives 7563 tokens,
    // with special tokens parsed or not (the text has none).
    assert_eq!(ids.len(), 7563);
    assert_eq!(t.encode(&text, true, true), ids);
}

/// SentencePiece merges a fragment whole (no pre-tokenizer): a fragment of 1,000,000
/// characters is merged with a heap in O(n log n), well under a second.
#[test]
fn a_fragment_of_a_million_characters_encodes_in_one_pass() {
    let t = gemma();
    let n = 1_000_000;
    for text in [
        "abcdefghij".repeat(n / 10),
        "!".repeat(n),
        "日本".repeat(n / 2),
    ] {
        let ids = t.encode(&text, false, false);
        assert!(!ids.is_empty() && ids.len() <= text.len());
        assert_eq!(t.decode(&ids), text);
    }
}
