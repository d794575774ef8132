//! Pre-tokenizers: text → words, chosen by `tokenizer.ggml.pre` as llama.cpp's
//! `llm_tokenizer_bpe` chooses its list of regexes.
//!
//! The list is applied as llama.cpp's `unicode_regex_split` applies it: each regex splits
//! every piece the previous ones produced, sees only that piece (a look-ahead stops at its
//! end), and keeps the text between two matches as a piece of its own. The two regexes that
//! llama.cpp runs with hand-written matchers (GPT-2's and Llama 3's) and `\p{N}` are
//! hand-written here too, as ports of those matchers, over the same character classes
//! ([`super::unicode`]); the others go to fancy-regex.

use fancy_regex::Regex;

use super::TokenizerError;
use super::unicode::{Kind, kind};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DIGITS: &str = r"\p{N}";

/// The pre-tokenizer settings of one `tokenizer.ggml.pre` value.
#[derive(Clone, Copy, Debug)]
pub(super) struct PreConfig {
    pub regexes: &'static [&'static str],
    /// A word that is itself a token is emitted whole, without merges (Llama 3).
    pub ignore_merges: bool,
    /// The default of `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
    /// No BOS token unless the metadata names one (ChatGLM).
    pub no_bos: bool,
}

const fn cfg(regexes: &'static [&'static str]) -> PreConfig {
    PreConfig {
        regexes,
        ignore_merges: false,
        add_bos: false,
        no_bos: false,
    }
}

/// `(names, settings)`, from llama.cpp's `llama_vocab::impl::load` and `llm_tokenizer_bpe`.
const TABLE: &[(&[&str], PreConfig)] = &[
    (
        &["default"],
        cfg(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        PreConfig {
            regexes: &[LLAMA3],
            ignore_merges: true,
            add_bos: true,
            no_bos: false,
        },
    ),
    (&["dbrx", "smaug-bpe"], cfg(&[LLAMA3])),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
            "exaone4",
        ],
        cfg(&[GPT2]),
    ),
    (
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        cfg(&[DIGITS, GPT2]),
    ),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
        ],
        cfg(&[QWEN2]),
    ),
    (
        &["glm4", "chatglm-bpe"],
        PreConfig {
            regexes: &[LLAMA3],
            ignore_merges: false,
            add_bos: false,
            no_bos: true,
        },
    ),
    (
        &["falcon"],
        cfg(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"]),
    ),
    (
        &["deepseek-coder"],
        cfg(&[
            "[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            "[一-龥ࠀ-一가-퟿]+",
            r"\p{N}",
        ]),
    ),
    (
        &["deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"],
        cfg(&[
            r"\p{N}{1,3}",
            "[一-龥぀-ゟ゠-ヿ]+",
            r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
    ),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        cfg(&[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
    ),
    (
        &["tekken"],
        PreConfig {
            regexes: &[
                r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ],
            ignore_merges: true,
            add_bos: true,
            no_bos: false,
        },
    ),
    (
        &["poro-chat", "bloom", "gpt3-finnish"],
        cfg(&[r" ?[^(\s|.,!?…。，、।۔،)]+"]),
    ),
    (&["viking"], cfg(&[r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"])),
    (
        &["seed-coder"],
        cfg(&[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
    ),
    (
        &["grok-2"],
        cfg(&[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ]),
    ),
];

/// The settings of `pre` (a missing key is llama.cpp's "default").
pub(super) fn config(pre: &str) -> Result<PreConfig, TokenizerError> {
    TABLE
        .iter()
        .find(|(names, _)| names.contains(&pre))
        .map(|&(_, c)| c)
        .ok_or_else(|| TokenizerError::UnsupportedPre {
            name: pre.to_string(),
            known: TABLE
                .iter()
                .flat_map(|(names, _)| names.iter().copied())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[derive(Debug)]
enum Step {
    /// `\p{N}`: every number character alone.
    Digits,
    Gpt2,
    Llama3,
    Regex(Box<Regex>),
}

/// A compiled pre-tokenizer.
#[derive(Debug)]
pub(super) struct PreTokenizer {
    steps: Vec<Step>,
}

impl PreTokenizer {
    pub fn new(pre: &str, config: &PreConfig) -> Result<PreTokenizer, TokenizerError> {
        let steps = config
            .regexes
            .iter()
            .map(|&pattern| {
                Ok(match pattern {
                    DIGITS => Step::Digits,
                    GPT2 => Step::Gpt2,
                    LLAMA3 => Step::Llama3,
                    _ => Step::Regex(Box::new(Regex::new(pattern).map_err(|e| {
                        TokenizerError::Regex {
                            pre: pre.to_string(),
                            pattern: pattern.to_string(),
                            message: e.to_string(),
                        }
                    })?)),
                })
            })
            .collect::<Result<_, TokenizerError>>()?;
        Ok(PreTokenizer { steps })
    }

    /// The words of `text` as byte ranges, in order, covering all of it.
    pub fn split(&self, text: &str) -> Vec<(usize, usize)> {
        if text.is_empty() {
            return Vec::new();
        }
        let chars: Vec<char> = text.chars().collect();
        let kinds: Vec<Kind> = chars.iter().map(|&c| kind(c)).collect();
        let mut byte_at: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        byte_at.push(text.len());
        let cx = Chars {
            text,
            chars: &chars,
            kinds: &kinds,
            byte_at: &byte_at,
        };

        // Pieces as their end positions, in characters.
        let mut ends = vec![chars.len()];
        let mut next = Vec::new();
        for step in &self.steps {
            next.clear();
            let mut start = 0;
            for &end in &ends {
                let mut out = Out {
                    ends: &mut next,
                    prev: start,
                };
                match step {
                    Step::Digits => split_digits(&cx, start, end, &mut out),
                    Step::Gpt2 => split_gpt2(&cx, start, end, &mut out),
                    Step::Llama3 => split_llama3(&cx, start, end, &mut out),
                    Step::Regex(re) => split_regex(&cx, re, start, end, &mut out),
                }
                out.push(end);
                start = end;
            }
            std::mem::swap(&mut ends, &mut next);
        }
        let mut start = 0;
        ends.iter()
            .map(|&end| {
                let range = (byte_at[start], byte_at[end]);
                start = end;
                range
            })
            .collect()
    }
}

/// The text being split, per character.
struct Chars<'a> {
    text: &'a str,
    chars: &'a [char],
    kinds: &'a [Kind],
    /// Byte offset of every character, and the text's length at the end.
    byte_at: &'a [usize],
}

/// Collects piece ends, dropping empty pieces.
struct Out<'a> {
    ends: &'a mut Vec<usize>,
    prev: usize,
}

impl Out<'_> {
    fn push(&mut self, end: usize) {
        if end > self.prev {
            self.ends.push(end);
            self.prev = end;
        }
    }
}

fn split_digits(cx: &Chars, start: usize, end: usize, out: &mut Out) {
    for pos in start..end {
        if cx.kinds[pos] == Kind::Number {
            out.push(pos);
            out.push(pos + 1);
        }
    }
}

/// llama.cpp's `unicode_regex_split_custom_gpt2`:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn split_gpt2(cx: &Chars, start: usize, end: usize, out: &mut Out) {
    // Classes and characters past the piece's end read as "nothing".
    let kind_at = |p: usize| (p < end).then(|| cx.kinds[p]);
    let char_at = |p: usize| (p < end).then(|| cx.chars[p]);
    let mut pos = start;
    while pos < end {
        let c = cx.chars[pos];
        if c == '\'' && pos + 1 < end {
            let c1 = cx.chars[pos + 1];
            if matches!(c1, 's' | 't' | 'm' | 'd') {
                pos += 2;
                out.push(pos);
                continue;
            }
            if char_at(pos + 2)
                .is_some_and(|c2| matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')))
            {
                pos += 3;
                out.push(pos);
                continue;
            }
        }
        let k2 = if c == ' ' {
            kind_at(pos + 1)
        } else {
            Some(cx.kinds[pos])
        };
        if let Some(run @ (Kind::Letter | Kind::Number | Kind::Other)) = k2 {
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            pos += usize::from(c == ' ');
            while kind_at(pos) == Some(run) {
                pos += 1;
            }
            out.push(pos);
            continue;
        }
        let spaces = (pos..end)
            .take_while(|&p| cx.kinds[p] == Kind::Space)
            .count();
        if spaces > 1 && pos + spaces < end {
            // `\s+(?!\S)`: leave the last space to the word after it.
            pos += spaces - 1;
        } else if spaces > 0 {
            pos += spaces;
        } else {
            pos += 1;
        }
        out.push(pos);
    }
}

/// llama.cpp's `unicode_regex_split_custom_llama3`:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
fn split_llama3(cx: &Chars, start: usize, end: usize, out: &mut Out) {
    let kind_at = |p: usize| (p < end).then(|| cx.kinds[p]);
    let char_at = |p: usize| (p < end).then(|| cx.chars[p]);
    let newline = |c: Option<char>| matches!(c, Some('\r' | '\n'));
    let mut pos = start;
    while pos < end {
        let c = cx.chars[pos];
        let k = cx.kinds[pos];
        if c == '\'' && pos + 1 < end {
            let c1 = cx.chars[pos + 1].to_ascii_lowercase();
            if matches!(c1, 's' | 't' | 'm' | 'd') {
                pos += 2;
                out.push(pos);
                continue;
            }
            let c2 = char_at(pos + 2).map(|c| c.to_ascii_lowercase());
            if c2.is_some_and(|c2| matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l'))) {
                pos += 3;
                out.push(pos);
                continue;
            }
        }
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(c == '\r' || c == '\n' || k == Kind::Number)
            && (k == Kind::Letter || kind_at(pos + 1) == Some(Kind::Letter))
        {
            pos += 1;
            while kind_at(pos) == Some(Kind::Letter) {
                pos += 1;
            }
            out.push(pos);
            continue;
        }
        // `\p{N}{1,3}`
        if k == Kind::Number {
            let mut first = pos;
            while kind_at(pos) == Some(Kind::Number) {
                pos += 1;
                if pos - first >= 3 {
                    out.push(pos);
                    first = pos;
                }
            }
            out.push(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (a lone space at the piece's end also lands here)
        let k2 = if c == ' ' { kind_at(pos + 1) } else { Some(k) };
        if matches!(k2, Some(Kind::Other) | None) {
            pos += usize::from(c == ' ');
            while kind_at(pos) == Some(Kind::Other) {
                pos += 1;
            }
            while newline(char_at(pos)) {
                pos += 1;
            }
            out.push(pos);
            continue;
        }
        let mut spaces = 0;
        let mut after_newline = None;
        while kind_at(pos + spaces) == Some(Kind::Space) {
            if newline(char_at(pos + spaces)) {
                after_newline = Some(pos + spaces + 1);
            }
            spaces += 1;
        }
        if let Some(e) = after_newline {
            // `\s*[\r\n]+`
            pos = e;
        } else if spaces > 1 && pos + spaces < end {
            // `\s+(?!\S)`
            pos += spaces - 1;
        } else if spaces > 0 {
            pos += spaces;
        } else {
            pos += 1;
        }
        out.push(pos);
    }
}

/// Any other regex, with fancy-regex on the piece alone.
fn split_regex(cx: &Chars, re: &Regex, start: usize, end: usize, out: &mut Out) {
    let base = cx.byte_at[start];
    let piece = &cx.text[base..cx.byte_at[end]];
    let to_char = |byte: usize| cx.byte_at.partition_point(|&b| b < base + byte);
    for m in re.find_iter(piece) {
        // A regex that gives up (fancy-regex's backtracking limit) leaves the rest whole.
        let Ok(m) = m else { break };
        out.push(to_char(m.start()));
        out.push(to_char(m.end()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::new(pre, &config(pre).unwrap()).unwrap();
        p.split(text)
            .into_iter()
            .map(|(a, b)| text[a..b].to_string())
            .collect()
    }

    #[test]
    fn smollm_splits_every_digit() {
        assert_eq!(
            words("smollm", "12345 3.14159"),
            [
                "1", "2", "3", "4", "5", " ", "3", ".", "1", "4", "1", "5", "9"
            ]
        );
        assert_eq!(words("smollm", "abc123def"), ["abc", "1", "2", "3", "def"]);
        // Non-ASCII numbers too.
        assert_eq!(words("smollm", "x²٣"), ["x", "²", "٣"]);
    }

    #[test]
    fn gpt2_words_and_contractions() {
        assert_eq!(
            words("gpt-2", "I'm sure they'll say it's fine"),
            [
                "I", "'m", " sure", " they", "'ll", " say", " it", "'s", " fine"
            ]
        );
        // Contractions are case-sensitive for GPT-2, not for Llama 3.
        assert_eq!(words("gpt-2", "IT'S"), ["IT", "'", "S"]);
        assert_eq!(words("llama-bpe", "IT'S"), ["IT", "'S"]);
        assert_eq!(
            words("gpt-2", "hello, world!"),
            ["hello", ",", " world", "!"]
        );
    }

    #[test]
    fn whitespace_before_a_word_leaves_one_space() {
        // `\s+(?!\S)`: the run minus its last space, then " word".
        assert_eq!(words("gpt-2", "a    b"), ["a", "   ", " b"]);
        assert_eq!(words("smollm", "x \t\n  y"), ["x", " \t\n ", " y"]);
        // At the end of the text the whole run is one word.
        assert_eq!(words("gpt-2", "a   "), ["a", "   "]);
        // A tab does not attach to the next word.
        assert_eq!(words("gpt-2", "\t\tb"), ["\t", "\t", "b"]);
        assert_eq!(words("gpt-2", " "), [" "]);
    }

    #[test]
    fn llama3_rules() {
        assert_eq!(words("llama-bpe", "12345"), ["123", "45"]);
        assert_eq!(
            words("llama-bpe", "hello\n\nworld"),
            ["hello", "\n\n", "world"]
        );
        assert_eq!(words("llama-bpe", "a  \n b"), ["a", "  \n", " b"]);
        assert_eq!(words("llama-bpe", "(x)!!\n"), ["(x", ")!!\n"]);
        assert_eq!(words("llama-bpe", " ?"), [" ?"]);
    }

    #[test]
    fn matchers_agree_with_fancy_regex() {
        let texts = [
            "Hello world! It's 2024, isn't it?  Yes...\n\n\tindented  line\r\nend ",
            "héllo wörld 日本語 🤖 ¿qué? — “quotes” 12,345.67",
            "fn main() { println!(\"hi\"); }   \n",
            "a'b 'll 're'VE  '  x\u{3000}y\u{85}z",
        ];
        for (by_hand, by_regex) in hand_and_regex() {
            for t in texts {
                assert_eq!(by_hand.split(t), by_regex.split(t), "{t:?}");
            }
        }
    }

    /// Characters that draw on every class the matchers distinguish; characters assigned
    /// after Unicode 15.1 are left out (the regex crate knows them, llama.cpp does not).
    fn test_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let newer = Regex::new(r"[\P{Cn}--\p{Age=V15_1}]").unwrap();
        let c = prop_oneof![
            3 => proptest::sample::select(
                " \t\n\r\u{0B}\u{0C}\u{85}\u{A0}\u{3000}'sStTlLdDmMrReEvV09aZ.,!?\"-_()[]{}<>|/\\".chars().collect::<Vec<_>>()
            ),
            1 => any::<char>(),
            1 => proptest::char::range('\u{80}', '\u{2FF}'),
            1 => proptest::char::range('\u{300}', '\u{36F}'),
            1 => proptest::char::range('\u{4E00}', '\u{4E20}'),
            1 => proptest::char::range('\u{1F600}', '\u{1F610}'),
            1 => proptest::char::range('\u{660}', '\u{669}'),
        ]
        .prop_filter("assigned after Unicode 15.1", move |c| {
            !newer.is_match(c.encode_utf8(&mut [0; 4])).unwrap_or(true)
        });
        proptest::collection::vec(c, 0..40).prop_map(String::from_iter)
    }

    /// Each hand-written pre-tokenizer next to the same regexes run by fancy-regex.
    fn hand_and_regex() -> &'static [(PreTokenizer, PreTokenizer)] {
        static PAIRS: std::sync::OnceLock<Vec<(PreTokenizer, PreTokenizer)>> =
            std::sync::OnceLock::new();
        PAIRS.get_or_init(|| {
            ["gpt-2", "llama-bpe", "smollm"]
                .into_iter()
                .map(|name| {
                    let c = config(name).unwrap();
                    let by_regex = PreTokenizer {
                        steps: c
                            .regexes
                            .iter()
                            .map(|p| Step::Regex(Box::new(Regex::new(p).unwrap())))
                            .collect(),
                    };
                    let by_hand = PreTokenizer::new(name, &c).unwrap();
                    assert!(by_hand.steps.iter().all(|s| !matches!(s, Step::Regex(_))));
                    (by_hand, by_regex)
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(1000))]

        /// The ports of llama.cpp's hand-written matchers equal the regexes they stand for.
        #[test]
        fn matchers_equal_their_regexes(text in test_text()) {
            for (by_hand, by_regex) in hand_and_regex() {
                proptest::prop_assert_eq!(by_hand.split(&text), by_regex.split(&text));
            }
        }
    }

    #[test]
    fn every_table_regex_compiles() {
        for (names, c) in TABLE {
            for name in *names {
                PreTokenizer::new(name, c).unwrap();
            }
        }
        assert!(matches!(
            config("no-such-pre"),
            Err(TokenizerError::UnsupportedPre { .. })
        ));
    }

    /// Runs of one class of character as long as a whole long prompt, through every
    /// pre-tokenizer: each is split in one pass (a matcher or regex that rescanned the
    /// run from each position would take minutes at 200,000 characters, not
    /// milliseconds), and the words cover the text.
    #[test]
    fn long_runs_split_in_linear_time() {
        let n = 200_000;
        let texts = [
            "a".repeat(n),
            " ".repeat(n) + "a",
            " \n".repeat(n / 2) + "a",
            "\t ".repeat(n / 2) + "a",
            "1".repeat(n),
            "!".repeat(n),
            "'x".repeat(n / 2),
            "日".repeat(n),
            "a\u{301}".repeat(n / 2),
        ];
        for (names, c) in TABLE {
            let p = PreTokenizer::new(names[0], c).unwrap();
            for text in &texts {
                let words = p.split(text);
                assert_eq!(words.first().map(|w| w.0), Some(0), "{}", names[0]);
                assert_eq!(words.last().map(|w| w.1), Some(text.len()), "{}", names[0]);
                assert!(words.windows(2).all(|w| w[0].1 == w[1].0), "{}", names[0]);
            }
        }
    }

    #[test]
    fn regex_pieces_cover_the_text() {
        let t = "Qwen2: 123 apples, 4 oranges.\n\nDone";
        let w = words("qwen2", t);
        assert_eq!(w.concat(), t);
        assert_eq!(&w[..4], ["Qwen", "2", ":", " "]);
    }
}
