//! Property tests: random valid files round-trip; damaged files (random ones and the
//! reference model's first 64 KiB) give an error or a usable file, never a panic. Also the
//! reference model's exact contents.

use std::io::Read;
use std::path::Path;

use kiln_ir::DType;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestRunner;

use super::super::*;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

const VALUE_TYPES: [ValueType; 13] = {
    use ValueType::*;
    [
        U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
    ]
};

/// A value of type `ty`; arrays nest at most `depth` more levels. Floats include NaNs.
fn value_of(ty: ValueType, depth: u32) -> BoxedStrategy<Value> {
    match ty {
        ValueType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        ValueType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        ValueType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        ValueType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        ValueType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        ValueType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        ValueType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        ValueType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        ValueType::F32 => any::<u32>()
            .prop_map(|b| Value::F32(f32::from_bits(b)))
            .boxed(),
        ValueType::F64 => any::<u64>()
            .prop_map(|b| Value::F64(f64::from_bits(b)))
            .boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::String => "\\PC{0,8}".prop_map(Value::String).boxed(),
        ValueType::Array => {
            let elem_types = match depth {
                0 => VALUE_TYPES
                    .iter()
                    .copied()
                    .filter(|&t| t != ValueType::Array)
                    .collect(),
                _ => VALUE_TYPES.to_vec(),
            };
            select(elem_types)
                .prop_flat_map(move |t| {
                    vec(value_of(t, depth.saturating_sub(1)), 0..4)
                        .prop_map(move |items| Value::Array(t, items))
                })
                .boxed()
        }
    }
}

fn any_value() -> impl Strategy<Value = Value> {
    select(VALUE_TYPES.to_vec()).prop_flat_map(|t| value_of(t, 2))
}

/// Equality that compares floats by their bits, so that NaNs round-trip too.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(t, xs), Value::Array(u, ys)) => {
            t == u && xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}

type TensorSpec = (String, Vec<u64>, DType, Vec<u8>);

/// A tensor of a loadable dtype, 0 to 4 dims (zeros included), with random data.
fn tensor_spec() -> impl Strategy<Value = (Vec<u64>, DType, Vec<u8>)> {
    let dtypes = vec![
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
    ];
    (select(dtypes), vec(0u64..4, 0..=4)).prop_flat_map(|(dtype, mut dims)| {
        if dtype.is_quantized() {
            if dims.is_empty() {
                dims.push(1);
            }
            dims[0] *= dtype.block_len() as u64;
        }
        let n_bytes = dtype.bytes_for(dims.iter().product()).unwrap() as usize;
        vec(any::<u8>(), n_bytes).prop_map(move |data| (dims.clone(), dtype, data))
    })
}

/// A valid file: metadata in random order (with `general.alignment` when `alignment`).
#[derive(Clone, Debug)]
struct FileSpec {
    alignment: Option<u32>,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
}

impl FileSpec {
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (key, value) in &self.metadata {
            w.metadata(key.clone(), value.clone());
        }
        for (name, dims, dtype, data) in &self.tensors {
            w.tensor(name.clone(), dims, *dtype, data.clone());
        }
        w.to_bytes()
    }
}

fn file_spec() -> impl Strategy<Value = FileSpec> {
    let key = "[a-z_]{1,8}(\\.[a-z_]{1,8}){0,2}";
    let metadata = btree_map(key, any_value(), 0..6)
        .prop_map(|m| {
            m.into_iter()
                .filter(|(k, _)| k != "general.alignment")
                .collect::<Vec<_>>()
        })
        .prop_shuffle();
    let alignment = prop::option::of((0u32..9).prop_map(|shift| 1 << shift));
    (alignment, metadata, vec(tensor_spec(), 0..5)).prop_map(
        |(alignment, mut metadata, tensors)| {
            if let Some(a) = alignment {
                metadata.insert(
                    metadata.len() / 2,
                    ("general.alignment".into(), Value::U32(a)),
                );
            }
            let tensors = tensors
                .into_iter()
                .enumerate()
                .map(|(i, (dims, dtype, data))| (format!("blk.{i}.weight"), dims, dtype, data))
                .collect();
            FileSpec {
                alignment,
                metadata,
                tensors,
            }
        },
    )
}

/// Writes a parsed file again, from what the reader returned.
fn rewrite(g: &Gguf) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata() {
        w.metadata(key.clone(), value.clone());
    }
    for t in g.tensors() {
        w.tensor(t.name.clone(), &t.dims, t.dtype, g.tensor_data(t).to_vec());
    }
    w.to_bytes()
}

/// One way to damage a file.
#[derive(Clone, Debug)]
enum Damage {
    Flip(Index, u8),
    /// Overwrite a u32 or u64 field (or whatever lies there) with an interesting value.
    Word32(Index, u32),
    Word64(Index, u64),
    Insert(Index, Vec<u8>),
    Truncate(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    let words = vec![
        0,
        1,
        2,
        31,
        32,
        1 << 32,
        i64::MAX as u64,
        u64::MAX - 31,
        u64::MAX,
    ];
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<Index>(), prop_oneof![0u32..40, Just(u32::MAX)])
            .prop_map(|(i, w)| Damage::Word32(i, w)),
        (any::<Index>(), select(words)).prop_map(|(i, w)| Damage::Word64(i, w)),
        (any::<Index>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<Index>().prop_map(Damage::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    let overwrite = |bytes: &mut Vec<u8>, at: &Index, word: &[u8]| {
        if !bytes.is_empty() {
            let at = at.index(bytes.len());
            let end = (at + word.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&word[..end - at]);
        }
    };
    match damage {
        Damage::Flip(at, x) => {
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] ^= x;
            }
        }
        Damage::Word32(at, w) => overwrite(bytes, at, &w.to_le_bytes()),
        Damage::Word64(at, w) => overwrite(bytes, at, &w.to_le_bytes()),
        Damage::Insert(at, extra) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        Damage::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
    }
}

/// Parses `bytes`; a file that loads must be fully usable.
fn parse_and_use(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let len = bytes.len() as u64;
    let g = match Gguf::from_bytes(bytes) {
        Ok(g) => g,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    for (key, value) in g.metadata() {
        prop_assert!(g.get(key).is_some());
        let _ = value.summary();
    }
    prop_assert!(g.alignment.is_power_of_two());
    prop_assert_eq!(g.data_offset() % g.alignment, 0);
    for t in g.tensors() {
        prop_assert_eq!(g.tensor(&t.name), Some(t));
        prop_assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
        prop_assert!(g.data_offset() + t.offset + t.n_bytes <= len);
        prop_assert_eq!(t.offset % g.alignment, 0);
        prop_assert_eq!(Some(t.n_bytes), t.dtype.bytes_for(t.n_elements()));
        let (row_len, n_rows) = t.rows();
        prop_assert_eq!(
            (row_len as u64).checked_mul(n_rows as u64),
            Some(t.n_elements())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_files_round_trip(spec in file_spec()) {
        let bytes = spec.to_bytes();
        let g = Gguf::from_bytes(bytes.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(g.version, 3);
        prop_assert_eq!(g.alignment, u64::from(spec.alignment.unwrap_or(32)));
        prop_assert_eq!(g.metadata().len(), spec.metadata.len());
        for ((key, value), (k, v)) in g.metadata().iter().zip(&spec.metadata) {
            prop_assert_eq!(key, k);
            prop_assert!(same(value, v), "{key}: {value:?} != {v:?}");
        }
        prop_assert_eq!(g.tensors().len(), spec.tensors.len());
        for (t, (name, dims, dtype, data)) in g.tensors().iter().zip(&spec.tensors) {
            prop_assert_eq!((&t.name, &t.dims, t.dtype), (name, dims, *dtype));
            prop_assert_eq!(t.offset % g.alignment, 0);
            prop_assert_eq!(g.tensor_data(t), &data[..]);
        }
        prop_assert_eq!(rewrite(&g), bytes);
    }

    #[test]
    fn damaged_files_never_panic(spec in file_spec(), damages in vec(damage(), 1..4)) {
        let mut bytes = spec.to_bytes();
        for d in &damages {
            apply(&mut bytes, d);
        }
        parse_and_use(bytes)?;
    }
}

/// The first `n` bytes of the reference model, or None (with the reason) when it is absent.
fn model_prefix(n: u64) -> Option<Vec<u8>> {
    let Ok(file) = std::fs::File::open(MODEL) else {
        eprintln!("skipping: reference model {MODEL} not found");
        return None;
    };
    let mut bytes = Vec::new();
    file.take(n)
        .read_to_end(&mut bytes)
        .expect("read the model");
    Some(bytes)
}

#[test]
fn damaged_reference_model_prefix_never_panics() {
    let Some(prefix) = model_prefix(64 * 1024) else {
        return;
    };
    // The prefix ends inside the vocabulary, so it is an error as it stands.
    assert!(Gguf::from_bytes(prefix.clone()).is_err());
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&vec(damage(), 1..4), |damages| {
            let mut bytes = prefix.clone();
            for d in &damages {
                apply(&mut bytes, d);
            }
            parse_and_use(bytes)
        })
        .unwrap();
}

#[test]
fn reference_model_contents() {
    if !Path::new(MODEL).exists() {
        eprintln!("skipping: reference model {MODEL} not found");
        return;
    }
    let g = Gguf::open(MODEL).unwrap();
    assert_eq!((g.version, g.alignment), (3, 32));
    assert_eq!((g.tensors().len(), g.metadata().len()), (272, 33));
    let count = |dtype| g.tensors().iter().filter(|t| t.dtype == dtype).count();
    assert_eq!(
        [DType::Q8_0, DType::F32, DType::Q4_1].map(count),
        [1, 61, 210]
    );
    let embd = g.require_tensor("token_embd.weight").unwrap();
    assert_eq!(
        (&embd.dims[..], embd.dtype),
        (&[576, 49152][..], DType::Q8_0)
    );
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    let file_len = std::fs::metadata(MODEL).unwrap().len();
    for t in g.tensors() {
        assert_eq!(g.tensor_data(t).len() as u64, t.n_bytes);
        assert!(g.data_offset() + t.offset + t.n_bytes <= file_len);
    }
}
