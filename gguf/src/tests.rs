//! Tests of the GGUF reader and writer: helpers and exact layouts and round trips here,
//! one test per error a file can trigger in `tests/errors.rs`, the data layout, raw
//! headers and files that are not files in `tests/layout.rs`, property tests and the
//! reference model in `tests/prop.rs`.

mod errors;
mod layout;
mod prop;

use kiln_ir::DType;

use super::*;

/// `n` bytes of a recognisable pattern.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Bytes of a tensor of `dtype` with `dims`, filled with a pattern.
fn data_for(dtype: DType, dims: &[u64], seed: u8) -> Vec<u8> {
    pattern(
        dtype.bytes_for(dims.iter().product()).unwrap() as usize,
        seed,
    )
}

/// A small valid file: three metadata keys and two tensors.
fn small_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("llama".into()))
        .metadata("n", Value::U32(7))
        .metadata(
            "list",
            Value::Array(ValueType::I16, vec![Value::I16(-1), Value::I16(2)]),
        )
        .tensor("tensor.a", &[4, 2], DType::F32, pattern(32, 1))
        .tensor("tensor.b", &[32], DType::Q8_0, pattern(34, 2));
    w
}

fn small() -> Vec<u8> {
    small_writer().to_bytes()
}

fn load(bytes: Vec<u8>) -> Gguf {
    Gguf::from_bytes(bytes).expect("a valid file")
}

fn fail(bytes: Vec<u8>) -> GgufError {
    Gguf::from_bytes(bytes).expect_err("the file should be rejected")
}

fn fail_writer(w: &GgufWriter) -> GgufError {
    fail(w.to_bytes())
}

/// The position just past the first stored string `s` (u64 length, then bytes).
fn after_str(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle);
    at.expect("string in file") + needle.len()
}

/// The position of a tensor info's ggml type id (its offset follows, 4 bytes later).
fn tensor_type_at(bytes: &[u8], name: &str) -> usize {
    let at = after_str(bytes, name);
    at + 4 + 8 * read_u32(bytes, at) as usize
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Little-endian bytes for headers built by hand.
struct Raw(Vec<u8>);

impl Raw {
    fn header(n_tensors: u64, n_kv: u64) -> Raw {
        let mut raw = Raw(b"GGUF".to_vec());
        raw.u32(3).u64(n_tensors).u64(n_kv);
        raw
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

// ---- exact layouts and round trips ----

#[test]
fn writer_emits_the_spec_layout() {
    let mut w = GgufWriter::new();
    w.metadata("k", Value::U32(7));
    let mut want = b"GGUF".to_vec();
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(&0u64.to_le_bytes()); // tensors
    want.extend_from_slice(&1u64.to_le_bytes()); // metadata
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'k');
    want.extend_from_slice(&4u32.to_le_bytes()); // u32
    want.extend_from_slice(&7u32.to_le_bytes());
    want.resize(64, 0); // 41 bytes padded to 32
    assert_eq!(w.to_bytes(), want);

    // One f32 tensor [2, 3]: dims innermost first, then type 0 and offset 0.
    let mut w = GgufWriter::new();
    w.tensor("t", &[2, 3], DType::F32, pattern(24, 9));
    let mut want = Raw::header(1, 0);
    want.str("t").u32(2).u64(2).u64(3).u32(0).u64(0);
    let mut want = want.0;
    assert_eq!(want.len(), 65);
    want.resize(96, 0);
    want.extend_from_slice(&pattern(24, 9));
    assert_eq!(w.to_bytes(), want);
}

/// One value of every type, nested and empty arrays, with the spec's type ids.
fn every_value() -> Vec<(&'static str, Value, u32)> {
    use Value as V;
    use ValueType as T;
    vec![
        ("u8", V::U8(200), 0),
        ("i8", V::I8(-100), 1),
        ("u16", V::U16(65000), 2),
        ("i16", V::I16(-30000), 3),
        ("u32", V::U32(4_000_000_000), 4),
        ("i32", V::I32(-2_000_000_000), 5),
        ("f32", V::F32(-1.5e-7), 6),
        ("bool.true", V::Bool(true), 7),
        ("bool.false", V::Bool(false), 7),
        ("string", V::String("héllo ✓ \0 end".into()), 8),
        ("string.empty", V::String(String::new()), 8),
        ("u64", V::U64(u64::MAX), 10),
        ("i64", V::I64(i64::MIN), 11),
        ("f64", V::F64(std::f64::consts::PI), 12),
        ("", V::U8(0), 0),
        ("arr.u8", V::Array(T::U8, vec![V::U8(1), V::U8(255)]), 9),
        (
            "arr.str",
            V::Array(T::String, vec![V::String("a".into()), V::String("".into())]),
            9,
        ),
        ("arr.f64.empty", V::Array(T::F64, vec![]), 9),
        ("arr.arr.empty", V::Array(T::Array, vec![]), 9),
        (
            "arr.nested",
            V::Array(
                T::Array,
                vec![
                    V::Array(T::I32, vec![V::I32(1), V::I32(-2)]),
                    V::Array(T::String, vec![V::String("x".into())]),
                    V::Array(T::Array, vec![V::Array(T::Bool, vec![V::Bool(true)])]),
                    V::Array(T::U64, vec![]),
                ],
            ),
            9,
        ),
    ]
}

#[test]
fn every_value_type_round_trips() {
    let mut w = GgufWriter::new();
    for (key, value, _) in every_value() {
        w.metadata(key, value);
    }
    let bytes = w.to_bytes();
    for (key, _, type_id) in every_value().iter().filter(|(k, ..)| !k.is_empty()) {
        assert_eq!(read_u32(&bytes, after_str(&bytes, key)), *type_id, "{key}");
    }
    let g = load(bytes);
    assert_eq!((g.version, g.alignment, g.tensors().len()), (3, 32, 0));
    let want: Vec<(String, Value)> = every_value()
        .into_iter()
        .map(|(k, v, _)| (k.to_string(), v))
        .collect();
    assert_eq!(g.metadata(), &want[..]);
    for (key, value) in &want {
        assert_eq!(g.get(key), Some(value), "{key}");
    }
    assert_eq!(g.get_u64("u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_str("string").unwrap(), "héllo ✓ \0 end");
    assert!(matches!(g.get_u64("i8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(g.get_str("nope"), Err(GgufError::MissingKey(k)) if k == "nope"));
}

#[test]
fn version_2_loads() {
    let mut bytes = small();
    put_u32(&mut bytes, 4, 2);
    let (v2, v3) = (load(bytes), load(small()));
    assert_eq!((v2.version, v3.version), (2, 3));
    assert_eq!(v2.metadata(), v3.metadata());
    assert_eq!(v2.tensors(), v3.tensors());
    for t in v2.tensors() {
        assert_eq!(v2.tensor_data(t), v3.tensor_data(t));
    }
}

#[test]
fn tensors_are_aligned_and_read_back_exactly() {
    for alignment in [None, Some(64), Some(1), Some(256)] {
        let tensors = [
            ("x.f32", vec![3], DType::F32),
            ("x.f16", vec![5], DType::F16),
            ("x.q4_0", vec![32, 2], DType::Q4_0),
            ("x.bf16", vec![1, 1, 7], DType::BF16),
        ];
        let mut w = GgufWriter::new();
        w.metadata("general.name", Value::String("aligned".into()));
        if let Some(a) = alignment {
            w.metadata("general.alignment", Value::U32(a));
        }
        for (i, (name, dims, dtype)) in tensors.iter().enumerate() {
            w.tensor(*name, dims, *dtype, data_for(*dtype, dims, i as u8));
        }
        let bytes = w.to_bytes();
        let g = load(bytes.clone());
        let a = u64::from(alignment.unwrap_or(32));
        assert_eq!(g.alignment, a);
        let header_end = tensor_type_at(&bytes, "x.bf16") as u64 + 12;
        assert_eq!(g.data_offset(), header_end.div_ceil(a) * a);
        for (i, (name, dims, dtype)) in tensors.iter().enumerate() {
            let t = g.require_tensor(name).unwrap();
            assert_eq!((&t.dims, t.dtype), (dims, *dtype));
            assert_eq!(t.offset % a, 0, "{name} at {}", t.offset);
            assert_eq!(g.tensor_data(t), data_for(*dtype, dims, i as u8));
            let start = (g.data_offset() + t.offset) as usize;
            assert_eq!(&bytes[start..start + t.n_bytes as usize], g.tensor_data(t));
        }
    }
}

#[test]
fn every_dtype_has_its_ggml_id() {
    let cases = [
        (DType::F32, 0, vec![3, 2]),
        (DType::F16, 1, vec![4]),
        (DType::Q4_0, 2, vec![64]),
        (DType::Q4_1, 3, vec![32, 3]),
        (DType::Q8_0, 8, vec![32]),
        (DType::BF16, 30, vec![2, 2, 2, 2]),
    ];
    let mut w = GgufWriter::new();
    for (i, (dtype, _, dims)) in cases.iter().enumerate() {
        w.tensor(dtype.name(), dims, *dtype, data_for(*dtype, dims, i as u8));
    }
    let bytes = w.to_bytes();
    let g = load(bytes.clone());
    assert_eq!(g.tensors().len(), cases.len());
    for (i, (dtype, id, dims)) in cases.iter().enumerate() {
        assert_eq!(read_u32(&bytes, tensor_type_at(&bytes, dtype.name())), *id);
        assert_eq!(
            (ggml_type_id(*dtype), dtype_from_ggml(*id)),
            (Some(*id), Ok(*dtype))
        );
        let t = &g.tensors()[i];
        assert_eq!(
            (t.name.as_str(), &t.dims, t.dtype),
            (dtype.name(), dims, *dtype)
        );
        assert_eq!(t.n_bytes, dtype.bytes_for(t.n_elements()).unwrap());
        assert_eq!(g.tensor_data(t), data_for(*dtype, dims, i as u8));
    }
    assert_eq!(ggml_type_id(DType::F8E4M3), None);
    let mut w = GgufWriter::new();
    w.tensor("fp8", &[4], DType::F8E4M3, vec![0; 4]);
    assert!(w.write_to(&mut Vec::new()).is_err());
}

#[test]
fn scalar_tensors_pack_tightly() {
    // Found by review: the tensor count check assumed every tensor info has a dim, so
    // twenty packed scalars (25 + 4 bytes each) were rejected as CountTooLarge.
    let mut w = GgufWriter::new();
    w.metadata("general.alignment", Value::U32(1));
    for i in 0..20u8 {
        w.tensor(
            ((b'a' + i) as char).to_string(),
            &[],
            DType::F32,
            pattern(4, i),
        );
    }
    let g = load(w.to_bytes());
    assert_eq!(g.tensors().len(), 20);
    for (i, t) in g.tensors().iter().enumerate() {
        assert_eq!((t.n_elements(), t.rows()), (1, (1, 1)));
        assert_eq!(g.tensor_data(t), pattern(4, i as u8));
    }
}

#[test]
fn empty_tensors_need_their_data_section() {
    // Found by review: a zero-byte tensor was accepted when the file ended before the
    // data section, and `tensor_data` then sliced past the end and panicked.
    let mut w = GgufWriter::new();
    w.tensor("empty", &[0, 3], DType::Q4_1, vec![]);
    let bytes = w.to_bytes();
    let g = load(bytes.clone());
    assert_eq!(
        (g.tensors()[0].n_bytes, g.data_offset()),
        (0, bytes.len() as u64)
    );
    assert!(g.tensor_data(&g.tensors()[0]).is_empty());
    let header_end = tensor_type_at(&bytes, "empty") + 12;
    for cut in header_end..bytes.len() {
        let e = fail(bytes[..cut].to_vec());
        assert!(
            matches!(
                e,
                GgufError::TensorOutOfRange {
                    bytes: 0,
                    data_len: 0,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
