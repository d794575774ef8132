//! Each check of `validate.rs` on a tiny model (2 layers, width 8, 8 tokens, F32), damaged
//! one key or tensor at a time.

use kiln_gguf::{GgufWriter, ValueType};
use kiln_ir::DType;

use super::*;

const LAYER_TENSORS: [(&str, [u64; 2]); 9] = [
    ("attn_norm", [8, 1]),
    ("attn_q", [8, 8]),
    ("attn_k", [8, 4]),
    ("attn_v", [8, 4]),
    ("attn_output", [8, 8]),
    ("ffn_norm", [8, 1]),
    ("ffn_gate", [8, 16]),
    ("ffn_up", [8, 16]),
    ("ffn_down", [16, 8]),
];

/// A finite, non-constant F32 tensor.
fn f32_data(n: u64, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .flat_map(|i| (1.0 + ((i * 7 + seed) % 13) as f32 / 13.0).to_le_bytes())
        .collect()
}

/// The tiny model's keys and tensors, for a test to edit before writing.
struct Tiny {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>)>,
}

impl Tiny {
    fn new() -> Tiny {
        let tokens = (0..8).map(|i| Value::String(format!("t{i}"))).collect();
        let metadata = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(8)),
            ("llama.feed_forward_length", Value::U32(16)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(1)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.rope.dimension_count", Value::U32(4)),
            (
                "tokenizer.ggml.tokens",
                Value::Array(ValueType::String, tokens),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ];
        let mut tensors = vec![("token_embd.weight".to_string(), vec![8, 8])];
        for layer in 0..2 {
            for (name, [cols, rows]) in LAYER_TENSORS {
                let dims = if rows == 1 {
                    vec![cols]
                } else {
                    vec![cols, rows]
                };
                tensors.push((format!("blk.{layer}.{name}.weight"), dims));
            }
        }
        tensors.push(("output_norm.weight".into(), vec![8]));
        Tiny {
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            tensors,
        }
    }

    fn set(mut self, key: &str, value: Value) -> Tiny {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
        self
    }

    fn gguf(&self) -> Gguf {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.metadata(k.clone(), v.clone());
        }
        for (i, (name, dims)) in self.tensors.iter().enumerate() {
            let data = f32_data(dims.iter().product(), i as u32);
            w.tensor(name.clone(), dims, DType::F32, data);
        }
        Gguf::from_bytes(w.to_bytes()).expect("a well-formed file")
    }

    /// Both stages, as `Model::from_gguf` runs them.
    fn check(&self) -> Result<(), InvalidModel> {
        let gguf = self.gguf();
        metadata(&gguf)?;
        let config = ModelConfig::from_gguf(&gguf).expect("the config reads");
        against_config(&gguf, &config)
    }

    fn error(&self) -> String {
        let e = self.check().expect_err("the damage is found");
        let message = e.to_string();
        assert!(!message.contains('\n'), "{message}");
        message
    }
}

#[test]
fn the_tiny_model_is_valid_and_loads() {
    Tiny::new().check().unwrap();
    let gguf = Tiny::new().gguf();
    let config = ModelConfig::from_gguf(&gguf).unwrap();
    super::super::Weights::from_gguf(&gguf, &config).unwrap();
}

#[test]
fn a_block_count_the_tensors_do_not_back_is_refused() {
    for n in [3u64, 1 << 31, u64::from(u32::MAX), 1 << 40, 1 << 63] {
        let message = Tiny::new().set("llama.block_count", Value::U64(n)).error();
        assert_eq!(
            message,
            format!(
                "llama.block_count is {n}, but the file holds tensors for 2 layers (blk.0 to blk.1)"
            )
        );
    }
    let message = Tiny::new().set("llama.block_count", Value::U32(0)).error();
    assert_eq!(message, "llama.block_count is 0: it must be at least 1");
    let message = Tiny::new().set("llama.block_count", Value::U32(1)).error();
    assert!(
        message.starts_with("llama.block_count is 1, but the file also holds layer 1 (\"blk.1."),
        "{message}"
    );
}

#[test]
fn missing_uneven_and_unknown_tensors_are_refused() {
    let mut t = Tiny::new();
    for (name, _) in &mut t.tensors {
        if let Some(rest) = name.strip_prefix("blk.1.") {
            *name = format!("blk.2.{rest}");
        }
    }
    let t = t.set("llama.block_count", Value::U32(3));
    assert_eq!(
        t.error(),
        "layer 1 has no tensors (no blk.1.*), but the layers after it do"
    );

    let mut t = Tiny::new();
    t.tensors
        .push(("blk.1.ffn_up_extra.weight".into(), vec![8]));
    assert!(
        t.error()
            .starts_with("tensor \"blk.1.ffn_up_extra.weight\" has no counterpart"),
        "{}",
        t.error()
    );
    let mut t = Tiny::new();
    t.tensors.retain(|(n, _)| n != "blk.1.ffn_up.weight");
    assert!(t.error().contains("blk.1.ffn_up.weight"), "{}", t.error());

    let mut t = Tiny::new();
    t.tensors.push(("mystery.weight".into(), vec![8]));
    assert_eq!(
        t.error(),
        "tensor \"mystery.weight\" is not part of a llama model: kiln would ignore it"
    );
}

#[test]
fn hyperparameters_out_of_range_name_their_key() {
    let eps = "llama.attention.layer_norm_rms_epsilon";
    let base = "llama.rope.freq_base";
    for (key, value, needle) in [
        (eps, f32::NAN, "finite number above 0"),
        (eps, f32::INFINITY, "finite number above 0"),
        (eps, -1.0, "finite number above 0"),
        (eps, 0.0, "finite number above 0"),
        (eps, 2.0, "below 1"),
        (base, 0.0, "finite number above 0"),
        (base, -1.0, "finite number above 0"),
        (base, f32::INFINITY, "finite number above 0"),
        (base, f32::NAN, "finite number above 0"),
        ("llama.some_future_float", f32::NAN, "a finite number"),
    ] {
        let message = Tiny::new().set(key, Value::F32(value)).error();
        assert!(
            message.starts_with(&format!("{key} is ")) && message.contains(needle),
            "{key} = {value}: {message}"
        );
    }
    // f64 values are used as f32: one that rounds to 0 or to infinity is refused too
    // (found by the model_meaning fuzzer).
    for value in [1e-300, 1e300] {
        let message = Tiny::new().set(base, Value::F64(value)).error();
        assert!(message.contains("finite number above 0"), "{message}");
    }
    let rope = "llama.rope.dimension_count";
    for (value, needle) in [(0, "at least 1"), (3, "must be even"), (6, "head size 4")] {
        let message = Tiny::new().set(rope, Value::U32(value)).error();
        assert!(
            message.starts_with(&format!("{rope} is {value}: ")) && message.contains(needle),
            "{message}"
        );
    }
    let kv = "llama.attention.head_count_kv";
    let message = Tiny::new().set(kv, Value::U32(3)).error();
    assert!(message.starts_with(&format!("{kv} is 3: ")), "{message}");
    let message = Tiny::new()
        .set("llama.attention.key_length", Value::U32(4))
        .set("llama.attention.value_length", Value::U32(8))
        .error();
    assert!(
        message.starts_with("llama.attention.value_length is 8"),
        "{message}"
    );
    let message = Tiny::new()
        .set("llama.attention.value_length", Value::U32(8))
        .error();
    assert!(
        message.ends_with("equal to the key head size 4"),
        "{message}"
    );
    let message = Tiny::new()
        .set("llama.embedding_length", Value::U32(16))
        .error();
    assert_eq!(
        message,
        "llama.embedding_length is 16: tensor \"token_embd.weight\" has rows of 8 values (dims [8, 8])"
    );
}

#[test]
fn token_ids_and_vocabulary_sizes_must_agree() {
    for (key, value) in [
        ("tokenizer.ggml.bos_token_id", Value::U32(8)),
        ("tokenizer.ggml.eos_token_id", Value::I32(-1)),
        ("tokenizer.ggml.padding_token_id", Value::U64(1 << 40)),
        ("tokenizer.ggml.eot_token_id", Value::U32(u32::MAX)),
    ] {
        let shown = value.summary();
        let message = Tiny::new().set(key, value).error();
        assert_eq!(
            message,
            format!("{key} is {shown}, outside the vocabulary of 8 tokens (ids 0 to 7)")
        );
    }
    let message = Tiny::new()
        .set("tokenizer.ggml.unknown_token_id", Value::String("0".into()))
        .error();
    assert!(message.starts_with("tokenizer.ggml.unknown_token_id is \"0\""));

    let types = Value::Array(ValueType::I32, vec![Value::I32(1); 9]);
    let message = Tiny::new().set("tokenizer.ggml.token_type", types).error();
    assert!(message.ends_with("but tokenizer.ggml.token_type has 9 entries"));

    let message = Tiny::new().set("llama.vocab_size", Value::U32(16)).error();
    assert!(message.ends_with("but llama.vocab_size is 16"), "{message}");

    // A short tokenizer in front of the full embedding (no vocab_size key to agree with).
    let tokens = (0..4).map(|i| Value::String(format!("t{i}"))).collect();
    let message = Tiny::new()
        .set(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, tokens),
        )
        .set("tokenizer.ggml.eos_token_id", Value::U32(2))
        .error();
    assert_eq!(
        message,
        "the tokenizer has 4 tokens (tokenizer.ggml.tokens), but tensor \"token_embd.weight\" has 8 rows (one per token, dims [8, 8])"
    );
}

#[test]
fn a_norm_holding_nan_is_refused() {
    let gguf = Tiny::new().gguf();
    let mut bytes = gguf.bytes().to_vec();
    let t = gguf.tensor("blk.1.ffn_norm.weight").unwrap();
    let at = (gguf.data_offset() + t.offset) as usize + 4 * 5;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let gguf = Gguf::from_bytes(bytes).unwrap();
    let e = finite_vectors(&gguf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor \"blk.1.ffn_norm.weight\": value 5 is NaN, and weights must be finite"
    );
}
