//! Structure-aware fuzzing of what a model file means: the input is a list of edits to a
//! small valid model's header (set, remove or truncate a metadata value; change a
//! tensor's type, dimension, offset or name; drop a tensor), not bytes. The edited file
//! goes through `Model::from_gguf`; it must be refused with an error or load into a model
//! that keeps the promises of `model/validate.rs`, runs a token through the reference
//! pass and samples (or reports NaN logits) — never a panic, an abort or a huge
//! allocation.

#![no_main]

use kiln_engine::gguf::{Gguf, GgufWriter, Header, Value, ValueType};
use kiln_engine::model::Model;
use kiln_engine::reference::Reference;
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::{Sampler, SamplerConfig};
use kiln_ir::DType;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Keys worth hitting often (an index picks one; metadata entries are also picked by
/// position).
const KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.rope.freq_base",
    "llama.rope.dimension_count",
    "llama.rope.scaling.type",
    "llama.rope.scaling.factor",
    "llama.vocab_size",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
];

/// Numbers at the edges.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Edge {
    Zero,
    One,
    MinusOne,
    Pow2(u8),
    U32Max,
    U64Max,
    Nan,
    Inf,
    NegInf,
    Tiny,
}

#[derive(Arbitrary, Debug, Clone)]
enum Scalar {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Edge(Edge, bool),
    Strings(Vec<String>),
}

#[derive(Arbitrary, Debug)]
enum Edit {
    SetKnown { key: u8, value: Scalar },
    SetNth { nth: u8, value: Scalar },
    Remove { nth: u8 },
    Truncate { nth: u8, len: u16 },
    TensorType { tensor: u8, type_id: u8 },
    TensorDim { tensor: u8, dim: u8, value: Edge },
    TensorDimNear { tensor: u8, dim: u8, delta: i8 },
    TensorOffset { tensor: u8, value: Edge },
    RenameLayer { tensor: u8, layer: u8 },
    Drop { tensor: u8 },
}

fn edge_value(e: Edge, float: bool) -> Value {
    match (e, float) {
        (Edge::Zero, false) => Value::U32(0),
        (Edge::One, false) => Value::U32(1),
        (Edge::MinusOne, false) => Value::I32(-1),
        (Edge::Pow2(p), false) => Value::U64(1u64 << (p % 64)),
        (Edge::U32Max, _) => Value::U32(u32::MAX),
        (Edge::U64Max, _) => Value::U64(u64::MAX),
        (Edge::Zero, true) => Value::F32(0.0),
        (Edge::One, true) => Value::F32(1.0),
        (Edge::MinusOne, true) => Value::F32(-1.0),
        (Edge::Pow2(p), true) => Value::F64(2f64.powi(i32::from(p as i8))),
        (Edge::Nan, _) => Value::F32(f32::NAN),
        (Edge::Inf, _) => Value::F32(f32::INFINITY),
        (Edge::NegInf, _) => Value::F32(f32::NEG_INFINITY),
        (Edge::Tiny, _) => Value::F32(f32::MIN_POSITIVE),
    }
}

fn edge_u64(e: Edge) -> u64 {
    match e {
        Edge::Zero => 0,
        Edge::One => 1,
        Edge::MinusOne | Edge::U64Max => u64::MAX,
        Edge::Pow2(p) => 1 << (p % 64),
        Edge::U32Max => u64::from(u32::MAX),
        _ => 32,
    }
}

fn value_of(s: Scalar) -> Value {
    match s {
        Scalar::U32(v) => Value::U32(v),
        Scalar::I32(v) => Value::I32(v),
        Scalar::U64(v) => Value::U64(v),
        Scalar::F32(v) => Value::F32(v),
        Scalar::F64(v) => Value::F64(v),
        Scalar::Bool(v) => Value::Bool(v),
        Scalar::Str(v) => Value::String(v),
        Scalar::Edge(e, float) => edge_value(e, float),
        Scalar::Strings(items) => Value::Array(
            ValueType::String,
            items.into_iter().take(512).map(Value::String).collect(),
        ),
    }
}

const N_LAYERS: usize = 2;
const WIDTH: u64 = 8;
const VOCAB: usize = 40;
const LAYER: [(&str, &[u64]); 9] = [
    ("attn_norm", &[WIDTH]),
    ("attn_q", &[WIDTH, WIDTH]),
    ("attn_k", &[WIDTH, 4]),
    ("attn_v", &[WIDTH, 4]),
    ("attn_output", &[WIDTH, WIDTH]),
    ("ffn_norm", &[WIDTH]),
    ("ffn_gate", &[WIDTH, 16]),
    ("ffn_up", &[WIDTH, 16]),
    ("ffn_down", &[16, WIDTH]),
];

/// A valid 2-layer model (width 8, 2 heads, 1 KV head) with a 40-token byte-level BPE
/// vocabulary, all weights F32 and finite.
fn base() -> Vec<u8> {
    let mut w = GgufWriter::new();
    let u = Value::U32;
    let tokens: Vec<Value> = ('a'..='z')
        .chain('0'..='9')
        .map(|c| c.to_string())
        .chain(["ab", "<s>", "</s>", "<|im_end|>"].map(String::from))
        .map(Value::String)
        .collect();
    assert_eq!(tokens.len(), VOCAB);
    let merges = Value::Array(ValueType::String, vec![Value::String("a b".into())]);
    for (k, v) in [
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", u(N_LAYERS as u32)),
        ("llama.context_length", u(64)),
        ("llama.embedding_length", u(WIDTH as u32)),
        ("llama.feed_forward_length", u(16)),
        ("llama.attention.head_count", u(2)),
        ("llama.attention.head_count_kv", u(1)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.rope.dimension_count", u(4)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", Value::Array(ValueType::String, tokens)),
        ("tokenizer.ggml.merges", merges),
        ("tokenizer.ggml.bos_token_id", u(37)),
        ("tokenizer.ggml.eos_token_id", u(38)),
    ] {
        w.metadata(k, v);
    }
    let mut seed = 1u32;
    let mut tensor = |w: &mut GgufWriter, name: String, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let data = (0..n)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (((seed >> 16) % 200) as f32 / 100.0 - 1.0).to_le_bytes()
            })
            .collect();
        w.tensor(name, dims, DType::F32, data);
    };
    tensor(&mut w, "token_embd.weight".into(), &[WIDTH, VOCAB as u64]);
    for i in 0..N_LAYERS {
        for (name, dims) in LAYER {
            tensor(&mut w, format!("blk.{i}.{name}.weight"), dims);
        }
    }
    tensor(&mut w, "output_norm.weight".into(), &[WIDTH]);
    w.to_bytes()
}

fn apply(h: &mut Header, edit: Edit) {
    let n_meta = h.metadata.len().max(1);
    let n_tensors = h.tensors.len().max(1);
    match edit {
        Edit::SetKnown { key, value } => {
            let key = KEYS[key as usize % KEYS.len()];
            let value = value_of(value);
            match h.metadata.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => h.metadata.push((key.to_string(), value)),
            }
        }
        Edit::SetNth { nth, value } => {
            if let Some((_, v)) = h.metadata.get_mut(nth as usize % n_meta) {
                *v = value_of(value);
            }
        }
        Edit::Remove { nth } => {
            if !h.metadata.is_empty() {
                h.metadata.remove(nth as usize % n_meta);
            }
        }
        Edit::Truncate { nth, len } => {
            if let Some((_, Value::Array(_, items))) = h.metadata.get_mut(nth as usize % n_meta) {
                items.truncate(len as usize);
            }
        }
        Edit::TensorType { tensor, type_id } => {
            if let Some(t) = h.tensors.get_mut(tensor as usize % n_tensors) {
                t.type_id = u32::from(type_id % 40);
            }
        }
        Edit::TensorDim { tensor, dim, value } => {
            if let Some(t) = h.tensors.get_mut(tensor as usize % n_tensors)
                && !t.dims.is_empty()
            {
                let d = dim as usize % t.dims.len();
                t.dims[d] = edge_u64(value);
            }
        }
        Edit::TensorDimNear { tensor, dim, delta } => {
            if let Some(t) = h.tensors.get_mut(tensor as usize % n_tensors)
                && !t.dims.is_empty()
            {
                let d = dim as usize % t.dims.len();
                t.dims[d] = t.dims[d].wrapping_add_signed(i64::from(delta));
            }
        }
        Edit::TensorOffset { tensor, value } => {
            if let Some(t) = h.tensors.get_mut(tensor as usize % n_tensors) {
                t.offset = edge_u64(value);
            }
        }
        Edit::RenameLayer { tensor, layer } => {
            if let Some(t) = h.tensors.get_mut(tensor as usize % n_tensors)
                && let Some(rest) = t.name.strip_prefix("blk.").and_then(|r| r.split_once('.'))
            {
                t.name = format!("blk.{}.{}", layer % 4, rest.1);
            }
        }
        Edit::Drop { tensor } => {
            if !h.tensors.is_empty() {
                h.tensors.remove(tensor as usize % n_tensors);
            }
        }
    }
}

fuzz_target!(|edits: Vec<Edit>| {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = BASE.get_or_init(base);
    let mut header = Header::parse(&bytes).expect("the base parses");
    let data_start = header.data_offset().expect("the base is aligned") as usize;
    for edit in edits.into_iter().take(16) {
        apply(&mut header, edit);
    }
    let mut file = header.encode(32);
    file.extend_from_slice(&bytes[data_start..]);
    let Ok(gguf) = Gguf::from_bytes(file) else {
        return;
    };
    let Ok(model) = Model::from_gguf(gguf) else {
        return;
    };
    // Accepted: the promises of validation hold.
    let c = &model.config;
    assert_eq!(model.weights.layers.len(), c.n_layers);
    assert!(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0, "{c:?}");
    assert!(c.rope_theta.is_finite() && c.rope_theta > 0.0, "{c:?}");
    assert!(c.rope_dims > 0 && c.rope_dims <= c.head_dim && c.rope_dims % 2 == 0);
    assert_eq!(model.tokenizer.vocab_size(), c.vocab_size);
    for id in [model.tokenizer.bos_id(), model.tokenizer.eos_id(), model.tokenizer.eot_id()]
        .into_iter()
        .flatten()
    {
        assert!((id as usize) < c.vocab_size);
    }
    let ids = model.tokenizer.encode("ab1", true, true);
    assert!(ids.iter().all(|&id| (id as usize) < c.vocab_size));
    let mut runner = Reference::new(&model, 8);
    let token = ids.first().copied().unwrap_or(0);
    if let Ok(logits) = runner.forward(&[token], LogitsFor::Last) {
        let mut sampler = Sampler::new(SamplerConfig::greedy()).expect("greedy");
        if let Ok(id) = sampler.sample(&logits) {
            assert!((id as usize) < c.vocab_size);
        }
    }
});
