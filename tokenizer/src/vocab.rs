//! The vocabulary: token texts, types and attributes, special ids and the
//! end-of-generation set, read from GGUF metadata the way llama.cpp's
//! `llama_vocab::impl::load` reads them.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use kiln_gguf::{Gguf, Value};

use super::TokenizerError;
use super::decode;

/// A fast hasher for token texts (FxHash's multiply-rotate over 8-byte words): the 49k
/// vocabulary is inserted and 150k merge strings looked up while loading, where SipHash
/// was a tenth of load time. Keys come from the model file, not from requests.
#[derive(Default)]
pub(super) struct TextHasher(u64);

impl TextHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl Hasher for TextHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }
}

/// Token text → id, with [`TextHasher`].
pub(super) type TextMap = HashMap<String, u32, BuildHasherDefault<TextHasher>>;

/// Token attributes, llama.cpp's `llama_token_attr` bits. A token's type from the file sets
/// one of the first six; loading may add CONTROL, UNUSED, LSTRIP or RSTRIP.
pub(super) mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// A token's type as stored in `tokenizer.ggml.token_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    fn from_id(id: i64) -> TokenType {
        match id {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    fn attr(self) -> u32 {
        match self {
            TokenType::Undefined => 0,
            TokenType::Normal => attr::NORMAL,
            TokenType::Unknown => attr::UNKNOWN,
            TokenType::Control => attr::CONTROL,
            TokenType::UserDefined => attr::USER_DEFINED,
            TokenType::Unused => attr::UNUSED,
            TokenType::Byte => attr::BYTE,
        }
    }
}

/// Special token ids; `None` is llama.cpp's `LLAMA_TOKEN_NULL`.
#[derive(Clone, Debug, Default)]
pub(super) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// What the pre-tokenizer choice changes in the vocabulary's defaults.
#[derive(Clone, Copy, Debug)]
pub(super) struct VocabDefaults {
    pub add_bos: bool,
    pub no_bos: bool,
}

#[derive(Debug)]
pub(super) struct Vocab {
    pub texts: Vec<String>,
    pub types: Vec<TokenType>,
    pub attrs: Vec<u32>,
    pub text_to_id: TextMap,
    pub special: SpecialIds,
    pub add_bos: bool,
    pub add_eos: bool,
    /// Sorted end-of-generation ids.
    pub eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which
    /// they are cut out of the input.
    pub special_tokens: Vec<u32>,
    /// Every token's piece with special tokens rendered, `piece_ends[id]` marks its end.
    pub pieces: Vec<u8>,
    pub piece_ends: Vec<usize>,
    pub chat_template: Option<String>,
}

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";

// Texts llama.cpp recognises when the metadata does not name these tokens.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts that end generation whatever the metadata says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

impl Vocab {
    pub fn load(g: &Gguf, defaults: VocabDefaults) -> Result<Vocab, TokenizerError> {
        let (texts, text_to_id) = read_tokens(g)?;
        let n = texts.len();
        let types = read_types(g, n)?;
        let mut attrs: Vec<u32> = types.iter().map(|t| t.attr()).collect();

        // GPT-2 vocabularies default BOS and EOS to id 11; out of range means none.
        let default_id = |id: u32| (id < n as u32).then_some(id);
        let mut special = SpecialIds {
            bos: if defaults.no_bos {
                None
            } else {
                default_id(11)
            },
            eos: default_id(11),
            ..SpecialIds::default()
        };
        for (key, slot) in [
            ("tokenizer.ggml.bos_token_id", &mut special.bos),
            ("tokenizer.ggml.eos_token_id", &mut special.eos),
            ("tokenizer.ggml.eot_token_id", &mut special.eot),
            ("tokenizer.ggml.eom_token_id", &mut special.eom),
            ("tokenizer.ggml.unknown_token_id", &mut special.unk),
            ("tokenizer.ggml.seperator_token_id", &mut special.sep),
            ("tokenizer.ggml.padding_token_id", &mut special.pad),
            ("tokenizer.ggml.mask_token_id", &mut special.mask),
            ("tokenizer.ggml.fim_pre_token_id", &mut special.fim_pre),
            ("tokenizer.ggml.fim_suf_token_id", &mut special.fim_suf),
            ("tokenizer.ggml.fim_mid_token_id", &mut special.fim_mid),
            ("tokenizer.ggml.fim_pad_token_id", &mut special.fim_pad),
            ("tokenizer.ggml.fim_rep_token_id", &mut special.fim_rep),
            ("tokenizer.ggml.fim_sep_token_id", &mut special.fim_sep),
        ] {
            read_special_id(g, key, n, slot)?;
        }
        // Deprecated names of the FIM ids; llama.cpp reads them after the new ones.
        read_special_id(g, "tokenizer.ggml.prefix_token_id", n, &mut special.fim_pre)?;
        read_special_id(g, "tokenizer.ggml.suffix_token_id", n, &mut special.fim_suf)?;
        read_special_id(g, "tokenizer.ggml.middle_token_id", n, &mut special.fim_mid)?;

        let add_bos = read_bool(g, "tokenizer.ggml.add_bos_token")?.unwrap_or(defaults.add_bos);
        let add_eos = read_bool(g, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && special.bos.is_none() {
            return Err(TokenizerError::invalid(
                "tokenizer.ggml.add_bos_token",
                "is true, but tokenizer.ggml.bos_token_id is not set",
            ));
        }
        if add_eos && special.eos.is_none() {
            return Err(TokenizerError::invalid(
                "tokenizer.ggml.add_eos_token",
                "is true, but tokenizer.ggml.eos_token_id is not set",
            ));
        }

        // Find unnamed end-of-turn and FIM tokens by their text (llama.cpp walks a hash
        // map; kiln takes the lowest matching id, so the choice is reproducible).
        for (slot, list) in [
            (&mut special.eot, EOT_TEXTS),
            (&mut special.eom, EOM_TEXTS),
            (&mut special.fim_pre, FIM_PRE_TEXTS),
            (&mut special.fim_suf, FIM_SUF_TEXTS),
            (&mut special.fim_mid, FIM_MID_TEXTS),
            (&mut special.fim_pad, FIM_PAD_TEXTS),
            (&mut special.fim_rep, FIM_REP_TEXTS),
            (&mut special.fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_some() {
                continue;
            }
            if let Some(&id) = list.iter().filter_map(|t| text_to_id.get(*t)).min() {
                *slot = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }

        // Control tokens named "unused" are unused.
        for (text, a) in texts.iter().zip(attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && text.contains("unused") {
                *a |= attr::UNUSED;
            }
        }

        let mut eog = BTreeSet::new();
        eog.extend(special.fim_pad);
        eog.extend(special.fim_rep);
        eog.extend(special.fim_sep);
        for &id in EOG_TEXTS.iter().filter_map(|t| text_to_id.get(*t)) {
            eog.insert(id);
            attrs[id as usize] |= attr::CONTROL;
        }
        // gpt-oss: these are always rendered.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = text_to_id.get(t) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend(special.eos);
        eog.extend(special.eot);
        eog.extend(special.eom);
        eog_workarounds(&texts, &mut attrs, &mut eog);

        // Cut-out order: longest text first (a stable sort, so equal lengths keep id order).
        let mut special_tokens: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_tokens.sort_by_key(|&i| std::cmp::Reverse(texts[i as usize].len()));

        strip_rules(g, &texts, &text_to_id, &special_tokens, &mut attrs);

        let mut pieces = Vec::new();
        let mut piece_ends = Vec::with_capacity(n);
        for (text, &a) in texts.iter().zip(&attrs) {
            decode::render_piece(text, a, &mut pieces);
            piece_ends.push(pieces.len());
        }

        let chat_template = match g.get("tokenizer.chat_template") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| {
                        TokenizerError::invalid("tokenizer.chat_template", "not a string")
                    })?
                    .to_string(),
            ),
        };

        Ok(Vocab {
            texts,
            types,
            attrs,
            text_to_id,
            special,
            add_bos,
            add_eos,
            eog: eog.into_iter().collect(),
            special_tokens,
            pieces,
            piece_ends,
            chat_template,
        })
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// The rendered piece of `id` (special tokens included), empty when out of range.
    pub fn cached_piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match self.piece_ends.get(i) {
            Some(&end) => {
                let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
                &self.pieces[start..end]
            }
            None => &[],
        }
    }
}

fn read_tokens(g: &Gguf) -> Result<(Vec<String>, TextMap), TokenizerError> {
    let list = g.get_array(KEY_TOKENS)?;
    if list.len() > u32::MAX as usize {
        return Err(TokenizerError::invalid(KEY_TOKENS, "more than 2^32 tokens"));
    }
    let mut texts = Vec::with_capacity(list.len());
    let mut text_to_id = TextMap::with_capacity_and_hasher(list.len(), Default::default());
    for (i, v) in list.iter().enumerate() {
        let text = v.as_str().ok_or_else(|| {
            TokenizerError::invalid(
                KEY_TOKENS,
                format!("entry {i} is a {}, not a string", v.value_type()),
            )
        })?;
        // llama.cpp renames empty tokens so that every text is distinct and non-empty.
        let text = if text.is_empty() {
            format!("[EMPTY_{i}]")
        } else {
            text.to_string()
        };
        if let Some(first) = text_to_id.insert(text.clone(), i as u32) {
            return Err(TokenizerError::DuplicateToken {
                text,
                first,
                second: i as u32,
            });
        }
        texts.push(text);
    }
    if texts.is_empty() {
        return Err(TokenizerError::invalid(
            KEY_TOKENS,
            "the vocabulary is empty",
        ));
    }
    Ok((texts, text_to_id))
}

fn read_types(g: &Gguf, n: usize) -> Result<Vec<TokenType>, TokenizerError> {
    let Some(v) = g.get(KEY_TOKEN_TYPE) else {
        return Ok(vec![TokenType::Normal; n]);
    };
    let list = v.as_array().ok_or_else(|| {
        TokenizerError::invalid(
            KEY_TOKEN_TYPE,
            format!("a {}, not an array", v.value_type()),
        )
    })?;
    if list.len() < n {
        return Err(TokenizerError::invalid(
            KEY_TOKEN_TYPE,
            format!("{} entries for {n} tokens", list.len()),
        ));
    }
    list[..n]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_i64().map(TokenType::from_id).ok_or_else(|| {
                TokenizerError::invalid(
                    KEY_TOKEN_TYPE,
                    format!("entry {i} is a {}, not an integer", v.value_type()),
                )
            })
        })
        .collect()
}

/// Overwrite `slot` with the key's id when the key is present and in range.
fn read_special_id(
    g: &Gguf,
    key: &str,
    n: usize,
    slot: &mut Option<u32>,
) -> Result<(), TokenizerError> {
    let Some(v) = g.get(key) else {
        return Ok(());
    };
    let id = v.as_i64().ok_or_else(|| {
        TokenizerError::invalid(key, format!("a {}, not an integer", v.value_type()))
    })?;
    // llama.cpp keeps the default for an id outside the vocabulary.
    if (0..n as i64).contains(&id) {
        *slot = Some(id as u32);
    }
    Ok(())
}

fn read_bool(g: &Gguf, key: &str) -> Result<Option<bool>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(TokenizerError::invalid(
            key,
            format!("a {}, not a bool", v.value_type()),
        )),
    }
}

/// llama.cpp's special cases: with `<|return|>` and `<|call|>` (or `<|calls|>` and
/// `<|flush|>`), `<|end|>` does not end generation; with `<|tool_response>`, `</s>` does not.
fn eog_workarounds(texts: &[String], attrs: &mut [u32], eog: &mut BTreeSet<u32>) {
    let has = |eog: &BTreeSet<u32>, t: &str| eog.iter().any(|&i| texts[i as usize] == t);
    let find = |eog: &BTreeSet<u32>, t: &str| eog.iter().copied().find(|&i| texts[i as usize] == t);
    let has_call = has(eog, "<|call|>") || has(eog, "<|calls|>");
    let end_is_not_eog = has_call && (has(eog, "<|return|>") || has(eog, "<|flush|>"));
    if let Some(end) = find(eog, "<|end|>").filter(|_| end_is_not_eog) {
        eog.remove(&end);
        attrs[end as usize] = attr::USER_DEFINED;
    }
    let s_is_not_eog = has(eog, "<|tool_response>");
    if let Some(s) = find(eog, "</s>").filter(|_| s_is_not_eog) {
        eog.remove(&s);
        attrs[s as usize] = attr::NORMAL;
    }
}

/// Per-model strip attributes that llama.cpp sets by name.
fn strip_rules(
    g: &Gguf,
    texts: &[String],
    text_to_id: &TextMap,
    special_tokens: &[u32],
    attrs: &mut [u32],
) {
    let get = |key: &str| g.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let name = get("general.name").to_lowercase();
    let pre = get("tokenizer.ggml.pre");
    let arch = get("general.architecture");
    let mut set = |text: &str, bit: u32, on: bool| {
        if let Some(&id) = text_to_id.get(text) {
            let a = &mut attrs[id as usize];
            *a = if on { *a | bit } else { *a & !bit };
        }
    };
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
    if any(&pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
        || any(&arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set("<mask>", attr::LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        for &id in special_tokens {
            set(&texts[id as usize], attr::RSTRIP, true);
        }
        set("</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(t, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set("[MASK]", attr::LSTRIP, true);
    }
}
