//! A SentencePiece vocabulary built in the test: `<unk>`, `<s>`, `</s>`, the 256 byte
//! tokens `<0x00>`..`<0xFF>` (ids 3-258), pieces with scores, and special tokens.

use kiln_gguf::{Gguf, GgufWriter, Value, ValueType};
use proptest::prelude::*;

use super::super::*;

const N: u32 = 3;
/// The id of byte `b`'s token.
fn byte(b: u8) -> u32 {
    N + u32::from(b)
}

const BYTES_END: u32 = N + 256;

/// Pieces after the byte tokens: (text, score, type).
const PIECES: &[(&str, f32, i32)] = &[
    ("▁", -1.0, 1),              // 259
    ("a", -2.0, 1),              // 260
    ("b", -2.0, 1),              // 261
    ("c", -2.0, 1),              // 262
    ("h", -2.0, 1),              // 263
    ("e", -2.0, 1),              // 264
    ("l", -2.0, 1),              // 265
    ("o", -2.0, 1),              // 266
    ("he", -3.0, 1),             // 267
    ("ll", -3.0, 1),             // 268
    ("llo", -4.0, 1),            // 269
    ("hello", -5.0, 1),          // 270
    ("▁hello", -1.5, 1),         // 271
    ("▁h", -6.0, 1),             // 272
    ("ab", -4.0, 1),             // 273
    ("bc", -3.5, 1),             // 274: outscores "ab"
    ("aa", -4.0, 1),             // 275
    ("▁▁", -2.5, 1),             // 276
    ("日", -2.0, 1),             // 277
    ("本", -2.0, 1),             // 278
    ("日本", -1.0, 1),           // 279
    ("xyz", -1.0, 1),            // 280: "xy" is no piece, so never reached
    ("x", -2.0, 1),              // 281
    ("y", -2.0, 1),              // 282
    ("z", -2.0, 1),              // 283
    ("<start_of_turn>", 0.0, 3), // 284
    ("<end_of_turn>", 0.0, 3),   // 285
    ("<tool>", 0.0, 4),          // 286: user-defined
    ("<unused0>", 0.0, 3),       // 287
    ("q", -0.0, 1),              // 288: -0.0 ties with 0.0
    ("qc", -0.0, 1),             // 289
    ("▁a", -1.2, 1),             // 290
    ("\n", -2.0, 4),             // 291: user-defined, like Gemma's
    ("ca", 0.0, 1),              // 292
    ("cab", -0.0, 1),            // 293
];

fn id(text: &str) -> u32 {
    let i = PIECES.iter().position(|p| p.0 == text).expect("a piece");
    BYTES_END + i as u32
}

fn writer(add_space_prefix: Option<bool>) -> GgufWriter {
    let mut texts: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        texts.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for &(t, s, ty) in PIECES {
        texts.push(t.to_string());
        scores.push(s);
        types.push(ty);
    }
    let mut w = GgufWriter::new();
    w.metadata("tokenizer.ggml.model", Value::String("llama".into()))
        .metadata(
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                texts.into_iter().map(Value::String).collect(),
            ),
        )
        .metadata(
            "tokenizer.ggml.scores",
            Value::Array(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
        )
        .metadata(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        );
    if let Some(prefix) = add_space_prefix {
        w.metadata("tokenizer.ggml.add_space_prefix", Value::Bool(prefix));
    }
    w
}

fn build(w: &GgufWriter) -> Tokenizer {
    Tokenizer::from_gguf(&Gguf::from_bytes(w.to_bytes()).expect("valid GGUF"))
        .expect("the tiny SentencePiece vocabulary loads")
}

/// Gemma-like: no space prefix.
fn plain() -> Tokenizer {
    build(&writer(Some(false)))
}

/// Llama-like: SentencePiece's default space prefix.
fn prefixed() -> Tokenizer {
    build(&writer(None))
}

/// The merge rule written the slow, obvious way: among the adjacent pairs whose joined
/// text is a piece, join the one of highest score (the leftmost of equal scores), again
/// and again; then what is no piece becomes bytes.
pub(super) fn naive(t: &Tokenizer, text: &str) -> Vec<u32> {
    let mut symbols: Vec<String> = text.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 1..symbols.len() {
            let joined = format!("{}{}", symbols[i - 1], symbols[i]);
            if let Some(id) = t.token_id(&joined) {
                let score = t.token_score(id).expect("a SentencePiece token") + 0.0;
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i - 1));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = symbols.remove(i + 1);
        symbols[i].push_str(&right);
    }
    let mut out = Vec::new();
    for s in symbols {
        match t.token_id(&s) {
            Some(id) => out.push(id),
            None => out.extend(
                s.bytes()
                    .filter_map(|b| t.token_id(&format!("<0x{b:02X}>"))),
            ),
        }
    }
    out
}

#[test]
fn loads_as_sentencepiece_with_its_defaults() {
    let t = prefixed();
    assert_eq!(t.vocab_type(), VocabType::Spm);
    assert!(t.add_space_prefix() && t.add_bos() && !t.add_eos());
    assert_eq!((t.bos(), t.eos()), (1, 2));
    assert!(!plain().add_space_prefix());
    assert_eq!(t.token_type(byte(0x41)), Some(TokenType::Byte));
    assert_eq!(t.token_type(0), Some(TokenType::Unknown));
    assert_eq!(t.token_score(id("bc")), Some(-3.5));
    assert_eq!(t.token_score(99_999), None);
    // EOS and <end_of_turn> (found by its text) end generation; <start_of_turn> does not.
    assert_eq!(t.eog_ids(), [2, id("<end_of_turn>")]);
    assert_eq!(t.eot_id(), Some(id("<end_of_turn>")));
    assert_eq!(t.chat_format(), ChatFormat::Gemma);
}

#[test]
fn merges_follow_score() {
    let t = plain();
    assert_eq!(t.encode("hello", false, false), [id("hello")]);
    // "bc" (-3.5) outscores "ab" (-4); "a" stays.
    assert_eq!(t.encode("abc", false, false), [id("a"), id("bc")]);
    // Equal scores: the leftmost pair merges first.
    assert_eq!(t.encode("aaa", false, false), [id("aa"), id("a")]);
    // "xyz" is a piece, but no pair of "x", "y", "z" is: no merge reaches it.
    assert_eq!(t.encode("xyz", false, false), [id("x"), id("y"), id("z")]);
    // "qc" scores -0.0 and "ca" 0.0: equal (llama.cpp compares with <), so the leftmost
    // merges first.
    assert_eq!(t.encode("qca", false, false), [id("qc"), id("a")]);
    assert_eq!(t.encode("cab", false, false), [id("cab")]);
    for text in [
        "hello", "abc", "aaaa", "xyz", "qca", "he llo", "abcab", "a  a",
    ] {
        assert_eq!(
            t.encode(text, false, false),
            naive(&t, &text.replace(' ', "▁"))
        );
    }
}

#[test]
fn characters_without_a_piece_fall_back_to_bytes() {
    let t = plain();
    assert_eq!(
        t.encode("héllo", false, false),
        [id("h"), byte(0xC3), byte(0xA9), id("llo")]
    );
    assert_eq!(
        t.encode("🤖", false, false),
        [0xF0, 0x9F, 0xA4, 0x96].map(byte)
    );
    assert_eq!(
        t.encode("日本語", false, false),
        [id("日本"), byte(0xE8), byte(0xAA), byte(0x9E)]
    );
    assert_eq!(t.encode("\t\r", false, false), [byte(b'\t'), byte(b'\r')]);
    // "<0x41>" typed as text is text, merged from its characters.
    let ids = t.encode("<0x41>", false, true);
    assert!(!ids.contains(&byte(0x41)), "{ids:?}");
}

#[test]
fn spaces_are_the_space_marker() {
    let t = plain();
    let sp = id("▁");
    assert_eq!(t.encode(" hello", false, false), [id("▁hello")]);
    assert_eq!(
        t.encode("hello hello", false, false),
        [id("hello"), id("▁hello")]
    );
    // "▁a" (-1.2) outscores "▁▁" (-2.5).
    assert_eq!(t.encode("a  a", false, false), [id("a"), sp, id("▁a")]);
    assert_eq!(t.encode("a   ", false, false), [id("a"), id("▁▁"), sp]);
    assert_eq!(t.encode(" ", false, false), [sp]);
    // Only ' ' is a space: other white space is bytes.
    assert_eq!(t.encode("\u{A0}", false, false), [byte(0xC2), byte(0xA0)]);
    // The space prefix: one "▁" in front of the text.
    let p = prefixed();
    assert_eq!(p.encode("hello", false, false), [id("▁hello")]);
    assert_eq!(p.encode(" hello", false, false), [id("▁▁"), id("hello")]);
    assert_eq!(p.encode("a", false, false), [id("▁a")]);
    assert!(p.encode("", false, false).is_empty());
    assert_eq!(p.encode("", true, false), [1]);
}

#[test]
fn special_tokens_inside_text() {
    let t = plain();
    let (start, end) = (id("<start_of_turn>"), id("<end_of_turn>"));
    assert_eq!(
        t.encode("<start_of_turn>hello<end_of_turn>\n", true, true),
        [1, start, id("hello"), end, id("\n")]
    );
    // Without parse_special, control tokens are text; user-defined ones are cut anyway.
    let ids = t.encode("<start_of_turn>", false, false);
    assert!(!ids.contains(&start) && ids.len() > 1, "{ids:?}");
    assert_eq!(
        t.encode("a<tool>a\na", false, false),
        [id("a"), id("<tool>"), id("a"), id("\n"), id("a")]
    );
    assert_eq!(
        t.encode("<unused0><unk>", false, true),
        [id("<unused0>"), 0]
    );
    // With the space prefix, every text fragment after a special token gets a "▁" too,
    // as in llama.cpp (BOS does not count: it is not in the text).
    let p = prefixed();
    assert_eq!(
        p.encode("hello<start_of_turn>hello", true, true),
        [1, id("▁hello"), start, id("▁hello")]
    );
    assert_eq!(p.encode("<tool>a", false, false), [id("<tool>"), id("▁a")]);
}

#[test]
fn bos_and_eos_from_metadata() {
    let mut w = writer(Some(false));
    w.metadata("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .metadata("tokenizer.ggml.add_eos_token", Value::Bool(true))
        .metadata(
            "tokenizer.ggml.bos_token_id",
            Value::U32(id("<start_of_turn>")),
        )
        .metadata(
            "tokenizer.ggml.eos_token_id",
            Value::U32(id("<end_of_turn>")),
        );
    let t = build(&w);
    assert!(!t.add_bos() && t.add_eos());
    assert_eq!(t.encode("a", true, true), [id("a"), id("<end_of_turn>")]);
    let forced = EncodeOptions {
        add_bos: true,
        ..t.encode_options(false, true)
    };
    assert_eq!(t.encode_with("a", forced), [id("<start_of_turn>"), id("a")]);
}

#[test]
fn pieces_restore_spaces_and_bytes() {
    let t = plain();
    assert_eq!(t.token_piece(id("▁hello"), false), b" hello");
    assert_eq!(t.token_piece(id("▁▁"), false), b"  ");
    assert_eq!(t.token_piece(byte(0xC3), false), [0xC3]);
    assert_eq!(t.token_piece(1, false), b"");
    assert_eq!(t.token_piece(1, true), b"<s>");
    assert_eq!(t.token_piece(id("<tool>"), false), b"<tool>");
    assert_eq!(t.token_text(id("▁hello")), "▁hello");
    let ids = t.encode("<start_of_turn> héllo 日本語🤖\n", true, true);
    assert_eq!(t.decode(&ids), " héllo 日本語🤖\n");
    assert_eq!(
        t.decode_with(&ids, true),
        "<s><start_of_turn> héllo 日本語🤖\n"
    );
}

#[test]
fn decoding_drops_the_space_prefix_as_llama_cpp_does() {
    let p = prefixed();
    let ids = p.encode("hello hello", false, false);
    assert_eq!(ids, [id("▁hello"), id("▁hello")]);
    assert_eq!(p.decode(&ids), "hello hello");
    // After BOS the first piece keeps its space (llama_detokenize strips the first token's,
    // and BOS has none).
    assert_eq!(p.decode(&p.encode("hello", true, false)), " hello");
    // Only one space goes.
    assert_eq!(p.decode(&p.encode("  a", false, false)), "  a");
    // Without the prefix nothing is dropped.
    let t = plain();
    assert_eq!(t.decode(&t.encode(" hello", false, false)), " hello");
}

#[test]
fn stream_decoder_assembles_byte_tokens_into_characters() {
    let t = plain();
    let text = "é🤖 日本語!";
    let ids = t.encode(text, false, false);
    let mut d = StreamDecoder::new(&t);
    let outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    assert_eq!(outs.concat(), text);
    // é is two byte tokens, 🤖 four: the text comes out when a character is whole.
    assert_eq!(outs[..2], ["", "é"]);
    assert_eq!(outs[2..6], ["", "", "", "🤖"]);
    assert_eq!(d.finish(), "");
    let mut d = StreamDecoder::new(&t);
    assert_eq!(d.push(byte(0xE8)), "");
    assert_eq!(d.push(id("a")), "\u{FFFD}a");
}

#[test]
fn chat_template_or_gemma_turns() {
    let t = plain();
    let messages = [ChatMessage::new("user", "hello")];
    // No template in the file: Gemma's turns, because the vocabulary has them.
    assert_eq!(
        t.apply_chat_template(&messages, true).unwrap(),
        "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n"
    );
    // A template that writes BOS: cut, since encoding adds it.
    let tmpl = "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}";
    assert_eq!(
        t.apply_chat_template_with(Some(tmpl), &messages, true)
            .unwrap(),
        "[hello]</s>"
    );
    // A template that does not parse: the built-in format; one that raises: an error.
    assert_eq!(
        t.apply_chat_template_with(Some("{% for %}"), &messages, true)
            .unwrap(),
        t.apply_chat_template(&messages, true).unwrap()
    );
    let raising = "{{ raise_exception('no system role') }}";
    let err = t.apply_chat_template_with(Some(raising), &messages, true);
    assert!(err.unwrap_err().to_string().contains("no system role"));
}

#[test]
fn never_panics_on_odd_text() {
    for t in [plain(), prefixed()] {
        for text in [
            "",
            "\0",
            " ",
            "▁",
            "▁▁ ",
            "<s",
            "<start_of_turn",
            "\u{10FFFF}",
            "\r\n",
        ] {
            for parse in [false, true] {
                let ids = t.encode(text, true, parse);
                assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
                // A "▁" in the text is a space to SentencePiece.
                let expected = text.replace('▁', " ");
                assert_eq!(t.decode_with(&ids[1..], true), expected, "{text:?}");
            }
        }
    }
}

fn text_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(vec![
            "a", "b", "c", "h", "e", "l", "o", "x", "y", "z", "q", " ", "  ", "hello", "日",
            "本", "▁",
        ])
        .prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
        1 => proptest::sample::select(vec![
            "<start_of_turn>", "<end_of_turn>", "<tool>", "<unk>", "<s>", "\n", "<0x41>",
        ])
        .prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_the_text(text in text_strategy()) {
        // Every byte has a token, so every text can be represented; a "▁" in the text is a
        // space to SentencePiece.
        let expected = text.replace('▁', " ");
        let t = plain();
        for parse_special in [false, true] {
            let ids = t.encode(&text, false, parse_special);
            prop_assert_eq!(t.decode_with(&ids, true), expected.as_str());
            prop_assert_eq!(super::streamed(&t, &ids), expected.as_str());
        }
        // With the space prefix, decoding drops the "▁" encoding put in front. (After a
        // special token it puts another, which stays: llama.cpp's behaviour.)
        let text = text.replace(['\n'], "").replace("<tool>", "");
        let p = prefixed();
        let ids = p.encode(&text, false, false);
        prop_assert_eq!(p.decode_with(&ids, true), text.replace('▁', " "));
    }

    #[test]
    fn fast_merge_equals_the_obvious_one(text in text_strategy()) {
        let t = plain();
        // Without special tokens in the way (user-defined ones are always cut out).
        let text: String = text.replace(['\n'], "").replace("<tool>", "");
        prop_assert_eq!(t.encode(&text, false, false), naive(&t, &text.replace(' ', "▁")));
    }
}

#[test]
fn scores_are_checked_and_may_be_integers() {
    // The tiny vocabulary's metadata with other scores.
    let with_scores = |scores: Value| {
        let mut w = GgufWriter::new();
        let full = writer(Some(false));
        let g = Gguf::from_bytes(full.to_bytes()).unwrap();
        for (k, v) in g.metadata() {
            if k != "tokenizer.ggml.scores" {
                w.metadata(k.clone(), v.clone());
            }
        }
        w.metadata("tokenizer.ggml.scores", scores);
        Tokenizer::from_gguf(&Gguf::from_bytes(w.to_bytes()).unwrap())
    };
    let e = with_scores(Value::Array(ValueType::F32, vec![Value::F32(0.0); 2]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer.ggml.scores") && e.contains("2 entries for"),
        "{e}"
    );
    let e = with_scores(Value::String("high".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an array"), "{e}");
    let n = BYTES_END as usize + PIECES.len();
    let e = with_scores(Value::Array(
        ValueType::String,
        vec![Value::String("x".into()); n],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("entry 0 is a string, not an f32 or i32"), "{e}");
    // Integer scores (llama.cpp reads them too): "bc" outscores "ab" as before.
    let ints = PIECES.iter().map(|p| Value::I32((p.1 * 2.0) as i32));
    let scores = std::iter::repeat_n(Value::I32(0), BYTES_END as usize).chain(ints);
    let t = with_scores(Value::Array(ValueType::I32, scores.collect())).unwrap();
    assert_eq!(t.encode("abc", false, false), [id("a"), id("bc")]);
    assert_eq!(t.token_score(id("bc")), Some(-7.0));
}
