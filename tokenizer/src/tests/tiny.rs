//! A vocabulary built in the test: the 256 byte characters (ids 0-255, in byte order), a
//! few merged tokens and some special tokens.

use kiln_gguf::{Gguf, GgufWriter, Value, ValueType};

use super::super::unicode::BYTE_TO_CHAR;
use super::super::*;

const BASE: u32 = 256;
/// Tokens after the 256 byte characters, with their types.
const EXTRA: &[(&str, i32)] = &[
    ("ll", 1),            // 256
    ("he", 1),            // 257
    ("hell", 1),          // 258
    ("hello", 1),         // 259
    ("aa", 1),            // 260
    ("bc", 1),            // 261
    ("ab", 1),            // 262
    ("xyz", 1),           // 263
    ("<|im_start|>", 3),  // 264
    ("<|im_end|>", 3),    // 265
    ("<|endoftext|>", 3), // 266
    ("<|im", 3),          // 267: shorter, overlaps <|im_start|>
    ("<tool>", 4),        // 268: user-defined
    ("ĠĠ", 1),            // 269: two spaces
    ("<unused0>", 3),     // 270
    ("<reponame>", 3),    // 271
    ("qq", 1),            // 272: no merge makes it
];
const MERGES: &[&str] = &[
    "l l", "h e", "he ll", "hell o", "a a", "b c", "a b", "x y", "xy z", "Ġ Ġ",
];

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(
        ValueType::String,
        items.into_iter().map(Value::String).collect(),
    )
}

fn writer(pre: &str) -> GgufWriter {
    let mut w = GgufWriter::new();
    let tokens = (0..256)
        .map(|b| BYTE_TO_CHAR[b].to_string())
        .chain(EXTRA.iter().map(|(t, _)| t.to_string()));
    let types = std::iter::repeat_n(1, 256).chain(EXTRA.iter().map(|&(_, t)| t));
    w.metadata("tokenizer.ggml.model", Value::String("gpt2".into()))
        .metadata("tokenizer.ggml.pre", Value::String(pre.into()))
        .metadata("tokenizer.ggml.tokens", strings(tokens))
        .metadata(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types.map(Value::I32).collect()),
        )
        .metadata(
            "tokenizer.ggml.merges",
            strings(MERGES.iter().map(|m| m.to_string())),
        )
        .metadata("tokenizer.ggml.bos_token_id", Value::U32(BASE + 8))
        .metadata("tokenizer.ggml.eos_token_id", Value::U32(BASE + 9));
    w
}

fn build(w: &GgufWriter) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_gguf(&Gguf::from_bytes(w.to_bytes()).expect("valid GGUF"))
}

fn tiny() -> Tokenizer {
    build(&writer("gpt-2")).expect("tiny vocabulary loads")
}

fn byte(b: u8) -> u32 {
    u32::from(b)
}

#[test]
fn merges_follow_rank() {
    let t = tiny();
    assert_eq!(t.encode("hello", false, false), [BASE + 3]);
    // "a a" (rank 4) before nothing else: the leftmost pair of equal rank merges first.
    assert_eq!(t.encode("aaa", false, false), [BASE + 4, byte(b'a')]);
    // "b c" (rank 5) outranks "a b" (rank 6).
    assert_eq!(t.encode("abc", false, false), [byte(b'a'), BASE + 5]);
    assert_eq!(t.encode("ab", false, false), [BASE + 6]);
    // Unmerged bytes are their byte tokens.
    assert_eq!(t.encode("hex", false, false), [BASE + 1, byte(b'x')]);
}

#[test]
fn merge_through_a_string_outside_the_vocabulary() {
    let t = tiny();
    // "xy" is not a token, but "x y" then "xy z" gives "xyz".
    assert_eq!(t.encode("xyz", false, false), [BASE + 7]);
    // A word that ends as "xy" falls back to its bytes.
    assert_eq!(t.encode("xy", false, false), [byte(b'x'), byte(b'y')]);
}

#[test]
fn words_do_not_merge_across_the_pre_tokenizer() {
    let t = tiny();
    // " hello" is one word; "Ġ" + "hello" have no merge.
    assert_eq!(t.encode(" hello", false, false), [byte(b' '), BASE + 3]);
    // Three spaces then a word: "ĠĠ" then "Ġhe..." as separate words.
    assert_eq!(
        t.encode("   he", false, false),
        [BASE + 13, byte(b' '), BASE + 1]
    );
    // Every byte of non-ASCII text comes back.
    let ids = t.encode("日本", false, false);
    assert_eq!(ids, [0xE6, 0x97, 0xA5, 0xE6, 0x9C, 0xAC]);
}

#[test]
fn llama3_takes_whole_words_that_are_tokens() {
    // Llama 3 ignores merges for a word that is a token; GPT-2 does not.
    assert_eq!(tiny().encode("qq", false, false), [byte(b'q'), byte(b'q')]);
    let t = build(&writer("llama-bpe")).unwrap();
    assert_eq!(t.encode("qq", false, false), [BASE + 16]);
    assert_eq!(t.encode("qq12345", false, false)[..1], [BASE + 16]);
}

#[test]
fn special_tokens_are_cut_out_longest_first() {
    let t = tiny();
    let start = BASE + 8;
    let end = BASE + 9;
    assert_eq!(
        t.encode("<|im_start|>hello<|im_end|>", false, true),
        [start, BASE + 3, end]
    );
    // "<|im" is a control token too, but "<|im_start|>" is longer and wins.
    assert_eq!(
        t.encode("<|im<|im_start|>", false, true),
        [BASE + 11, start]
    );
    // Without parse_special the same text is ordinary text...
    let plain = t.encode("<|im_start|>", false, false);
    assert!(!plain.contains(&start) && plain.len() > 1, "{plain:?}");
    // ...but user-defined tokens are still cut out.
    assert_eq!(t.encode("<tool>ab", false, false), [BASE + 12, BASE + 6]);
    assert_eq!(t.encode("ab<tool>", false, true), [BASE + 6, BASE + 12]);
}

#[test]
fn bos_and_eos_only_when_asked() {
    let t = tiny();
    assert!(!t.add_bos());
    assert_eq!(t.encode("ab", true, true), [BASE + 6]);
    let forced = EncodeOptions {
        add_bos: true,
        add_eos: true,
        parse_special: true,
    };
    assert_eq!(t.encode_with("ab", forced), [BASE + 8, BASE + 6, BASE + 9]);

    let mut w = writer("gpt-2");
    w.metadata("tokenizer.ggml.add_bos_token", Value::Bool(true));
    let t = build(&w).unwrap();
    assert!(t.add_bos());
    assert_eq!(t.encode("ab", true, true), [BASE + 8, BASE + 6]);
    assert_eq!(t.encode("ab", false, true), [BASE + 6]);
    assert_eq!(t.encode("", true, true), [BASE + 8]);

    // Llama 3's pre-tokenizer adds BOS by default.
    let t = build(&writer("llama-bpe")).unwrap();
    assert!(t.add_bos());
}

#[test]
fn end_of_generation_set() {
    let t = tiny();
    // EOS (<|im_end|>), <|endoftext|> by its text, <reponame> as the FIM repo token.
    assert_eq!(t.eog_ids(), [BASE + 9, BASE + 10, BASE + 15]);
    assert!(t.is_eog(BASE + 9));
    assert!(!t.is_eog(BASE + 8));
    assert!(!t.is_eog(TOKEN_NULL));
    assert_eq!(t.eot_id(), Some(BASE + 9)); // <|im_end|> has the lower id
    assert_eq!(t.bos(), BASE + 8);
    assert_eq!(t.token_text(t.eos()), "<|im_end|>");
}

#[test]
fn pieces_and_decode() {
    let t = tiny();
    assert_eq!(t.token_piece(byte(b' '), false), b" ");
    assert_eq!(t.token_piece(BASE + 13, false), b"  ");
    assert_eq!(t.token_piece(0xE6, false), [0xE6]);
    // Control tokens only with special; user-defined always; unused never.
    assert_eq!(t.token_piece(BASE + 8, true), b"<|im_start|>");
    assert_eq!(t.token_piece(BASE + 8, false), b"");
    assert_eq!(t.token_piece(BASE + 12, false), b"<tool>");
    assert_eq!(t.token_piece(BASE + 14, true), b"<unused0>"); // control, so rendered
    assert_eq!(t.token_piece(9999, true), b"");
    let ids = t.encode("<|im_start|>he said 日本<|im_end|>", false, true);
    assert_eq!(
        t.decode_with(&ids, true),
        "<|im_start|>he said 日本<|im_end|>"
    );
    assert_eq!(t.decode(&ids), "he said 日本");
    // A cut character decodes lossily at the end only.
    assert_eq!(t.decode(&[0xE6, 0x97]), "\u{FFFD}");
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let t = tiny();
    let text = "日本語 🤖!";
    let ids = t.encode(text, false, false);
    assert_eq!(ids.len(), text.len()); // one token per byte in this vocabulary
    let mut d = StreamDecoder::new(&t);
    let outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    assert_eq!(outs.concat(), text);
    assert_eq!(outs[..3], ["", "", "日"]);
    assert_eq!(outs[9], " ");
    assert_eq!(outs[10..14], ["", "", "", "🤖"]);
    assert_eq!(d.finish(), "");

    // An incomplete character at the end comes out of finish() as U+FFFD.
    let mut d = StreamDecoder::new(&t);
    assert_eq!(d.push(0xF0), "");
    assert_eq!(d.push(0x9F), "");
    assert_eq!(d.pending(), [0xF0, 0x9F]);
    assert_eq!(d.finish(), "\u{FFFD}");
    // A broken sequence is replaced as soon as it cannot be completed.
    assert_eq!(d.push(0xE6), "");
    assert_eq!(d.push(byte(b'a')), "\u{FFFD}a");
    assert_eq!(d.push_bytes(&[0xFF, b'b']), "\u{FFFD}b");
}

#[test]
fn metadata_errors_name_the_problem() {
    let err = |f: &dyn Fn(&mut GgufWriter)| {
        let mut w = GgufWriter::new();
        f(&mut w);
        build(&w).map(|_| ()).unwrap_err().to_string()
    };
    let base = |w: &mut GgufWriter, model: &str, pre: &str| {
        w.metadata("tokenizer.ggml.model", Value::String(model.into()))
            .metadata("tokenizer.ggml.pre", Value::String(pre.into()));
    };
    let e = err(&|w| base(w, "llama", "default"));
    assert!(
        e.contains("\"llama\"") && e.contains("tokenizer.ggml.model"),
        "{e}"
    );
    let e = err(&|w| base(w, "gpt2", "unheard-of"));
    assert!(e.contains("\"unheard-of\"") && e.contains("smollm"), "{e}");
    let e = err(&|w| base(w, "gpt2", "smollm"));
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
    let e = err(&|w| {
        base(w, "gpt2", "smollm");
        w.metadata(
            "tokenizer.ggml.tokens",
            strings(["a", "b", "a"].map(String::from)),
        );
    });
    assert!(e.contains("duplicate token \"a\""), "{e}");
    let e = err(&|w| {
        base(w, "gpt2", "smollm");
        w.metadata(
            "tokenizer.ggml.tokens",
            strings(["a", "b"].map(String::from)),
        )
        .metadata(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, vec![Value::I32(1)]),
        );
    });
    assert!(
        e.contains("token_type") && e.contains("1 entries for 2 tokens"),
        "{e}"
    );
    let e = err(&|w| {
        base(w, "gpt2", "smollm");
        w.metadata(
            "tokenizer.ggml.tokens",
            strings(["a", "b"].map(String::from)),
        );
    });
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = err(&|w| {
        base(w, "gpt2", "smollm");
        w.metadata(
            "tokenizer.ggml.tokens",
            strings(["a", "b"].map(String::from)),
        )
        .metadata("tokenizer.ggml.merges", strings(["a b".to_string()]))
        .metadata("tokenizer.ggml.add_bos_token", Value::Bool(true));
    });
    assert!(e.contains("bos_token_id is not set"), "{e}");
}

#[test]
fn never_panics_on_odd_text() {
    let t = tiny();
    for text in [
        "",
        "\0",
        "\u{FEFF}\u{200B}",
        "<|im_start|><|im_start|>",
        "<|im_start",
        "'",
        "''s",
        " \u{3000} ",
        "\r\n\r\n",
        "\u{10FFFF}",
    ] {
        for parse in [false, true] {
            let ids = t.encode(text, true, parse);
            assert_eq!(t.decode_with(&ids, true), text);
        }
    }
}
