//! One test per error a file can trigger: a valid file, damaged precisely.

use kiln_ir::DType;

use super::*;

#[test]
fn bad_magic() {
    let mut bytes = small();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(fail(bytes), GgufError::BadMagic(m) if &m == b"GGML"));
}

#[test]
fn unsupported_versions() {
    for version in [0, 1, 4, u32::MAX] {
        let mut bytes = small();
        put_u32(&mut bytes, 4, version);
        assert!(matches!(fail(bytes), GgufError::UnsupportedVersion(v) if v == version));
    }
}

#[test]
fn truncated_at_every_byte() {
    let bytes = small();
    let header_end = tensor_type_at(&bytes, "tensor.b") + 12;
    for cut in 0..bytes.len() {
        match fail(bytes[..cut].to_vec()) {
            GgufError::Truncated {
                offset,
                needed,
                available,
                ..
            } if cut < header_end => {
                assert_eq!(offset + available, cut as u64);
                assert!(needed > available);
            }
            GgufError::CountTooLarge { .. } if cut < header_end => {}
            GgufError::TensorOutOfRange { .. } if cut >= header_end => {}
            e => panic!("cut at {cut} (header ends at {header_end}): {e:?}"),
        }
    }
    assert!(matches!(fail(vec![]), GgufError::Truncated { what, .. } if what == "magic"));
}

#[test]
fn unknown_value_type() {
    let mut bytes = small();
    let at = after_str(&bytes, "n");
    put_u32(&mut bytes, at, 13);
    let e = fail(bytes);
    assert!(matches!(e, GgufError::UnknownValueType { key, type_id: 13 } if key == "n"));

    let mut bytes = small();
    let at = after_str(&bytes, "list") + 4; // the array's element type
    put_u32(&mut bytes, at, 99);
    let e = fail(bytes);
    assert!(matches!(e, GgufError::UnknownValueType { key, type_id: 99 } if key == "list"));
}

/// A file with one key holding `levels` arrays nested in each other, the innermost empty.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let mut raw = Raw::header(0, 1);
    raw.str("deep").u32(9);
    for _ in 1..levels {
        raw.u32(9).u64(1);
    }
    raw.u32(4).u64(0);
    raw.0
}

#[test]
fn arrays_nested_too_deep() {
    let g = load(nested_arrays(8));
    let mut value = g.get("deep").unwrap();
    for _ in 1..8 {
        value = &value.as_array().unwrap()[0];
    }
    assert_eq!(value, &Value::Array(ValueType::U32, vec![]));
    let e = fail(nested_arrays(9));
    assert!(matches!(e, GgufError::NestingTooDeep { key, max_depth: 8 } if key == "deep"));
    assert!(matches!(
        fail(nested_arrays(10_000)),
        GgufError::NestingTooDeep { .. }
    ));
}

#[test]
fn duplicate_key() {
    let mut w = small_writer();
    w.metadata("n", Value::U32(8));
    assert!(matches!(fail_writer(&w), GgufError::DuplicateKey(k) if k == "n"));
}

#[test]
fn bad_alignment() {
    let bad = [
        Value::U32(0),
        Value::U32(3),
        Value::U32(48),
        Value::U64(32),
        Value::String("32".into()),
    ];
    for value in bad {
        let mut w = small_writer();
        w.metadata("general.alignment", value.clone());
        let e = fail_writer(&w);
        assert!(matches!(e, GgufError::BadAlignment(_)), "{value:?}: {e:?}");
    }
}

#[test]
fn too_many_dims() {
    let mut w = GgufWriter::new();
    w.tensor("t", &[1, 1, 1, 1], DType::F32, vec![0; 4]);
    load(w.to_bytes());
    w.tensor("u", &[1, 1, 1, 1, 1], DType::F32, vec![0; 4]);
    let e = fail_writer(&w);
    assert!(matches!(e, GgufError::TooManyDims { tensor, n_dims: 5, max: 4 } if tensor == "u"));

    let mut bytes = small();
    let at = after_str(&bytes, "tensor.a");
    put_u32(&mut bytes, at, u32::MAX);
    assert!(matches!(
        fail(bytes),
        GgufError::TooManyDims {
            n_dims: u32::MAX,
            ..
        }
    ));
}

#[test]
fn dimension_overflow() {
    let cases: [&[u64]; 5] = [
        &[u64::MAX, 2],
        &[1 << 32, 1 << 31],    // 2^63 elements, past i64::MAX
        &[1 << 62],             // fits, but 2^64 bytes of f32 do not
        &[0, 1 << 40, 1 << 40], // zero elements, but the row count overflows
        &[1 << 40, 1 << 40, 0],
    ];
    for dims in cases {
        let mut w = GgufWriter::new();
        w.tensor("t", dims, DType::F32, vec![]);
        let e = fail_writer(&w);
        assert!(
            matches!(&e, GgufError::DimensionOverflow { dims: d, .. } if d == dims),
            "{e:?}"
        );
    }
}

#[test]
fn unknown_tensor_type() {
    for (id, name) in [(10, "Q2_K"), (9, "Q8_1"), (999, "unknown")] {
        let mut bytes = small();
        let at = tensor_type_at(&bytes, "tensor.a");
        put_u32(&mut bytes, at, id);
        let e = fail(bytes);
        assert!(
            matches!(&e, GgufError::UnknownTensorType { tensor, type_id, type_name }
                if tensor == "tensor.a" && *type_id == id && *type_name == name),
            "{e:?}"
        );
    }
}

#[test]
fn row_not_block_multiple() {
    let mut w = GgufWriter::new();
    w.tensor("q", &[16, 2], DType::Q8_0, vec![0; 34]);
    let e = fail_writer(&w);
    assert!(matches!(
        e,
        GgufError::RowNotBlockMultiple {
            dtype: DType::Q8_0,
            row_len: 16,
            block_len: 32,
            ..
        }
    ));
    let mut w = GgufWriter::new();
    w.tensor("scalar", &[], DType::Q4_0, vec![0; 18]);
    let e = fail_writer(&w);
    assert!(matches!(
        e,
        GgufError::RowNotBlockMultiple { row_len: 1, .. }
    ));
}

#[test]
fn misaligned_tensor() {
    let mut bytes = small();
    let at = tensor_type_at(&bytes, "tensor.b") + 4;
    assert_eq!(read_u64(&bytes, at), 32);
    put_u64(&mut bytes, at, 36);
    let e = fail(bytes);
    assert!(
        matches!(e, GgufError::MisalignedTensor { tensor, offset: 36, alignment: 32 }
        if tensor == "tensor.b")
    );
}

#[test]
fn tensor_out_of_range() {
    let bytes = small();
    let e = fail(bytes[..bytes.len() - 1].to_vec());
    assert!(matches!(
        e,
        GgufError::TensorOutOfRange {
            offset: 32,
            bytes: 34,
            data_len: 65,
            ..
        }
    ));
    for offset in [1 << 40, !31] {
        let mut bytes = small();
        let at = tensor_type_at(&bytes, "tensor.b") + 4;
        put_u64(&mut bytes, at, offset);
        let e = fail(bytes);
        assert!(matches!(e, GgufError::TensorOutOfRange { offset: o, .. } if o == offset));
    }
}

#[test]
fn duplicate_tensor() {
    let mut w = small_writer();
    w.tensor("tensor.a", &[1], DType::F32, vec![0; 4]);
    assert!(matches!(fail_writer(&w), GgufError::DuplicateTensor(t) if t == "tensor.a"));
}

#[test]
fn invalid_utf8() {
    let mut w = small_writer();
    w.metadata("key?", Value::U8(0))
        .metadata("value", Value::String("val?".into()))
        .tensor("name?", &[1], DType::F32, vec![0; 4]);
    for (s, what) in [
        ("key?", "metadata key"),
        ("val?", "value of \"value\""),
        ("name?", "tensor name"),
    ] {
        let mut bytes = w.to_bytes();
        let end = after_str(&bytes, s);
        bytes[end - 1] = 0xff;
        let e = fail(bytes);
        assert!(
            matches!(&e, GgufError::InvalidUtf8 { what: w, offset }
                if w == what && *offset == (end - s.len()) as u64),
            "{e:?}"
        );
    }
}

#[test]
fn count_too_large() {
    for (at, what) in [(8, "tensor count"), (16, "metadata count")] {
        let mut bytes = small();
        put_u64(&mut bytes, at, u64::MAX);
        let e = fail(bytes);
        assert!(matches!(e, GgufError::CountTooLarge { what: w, count: u64::MAX } if w == what));
    }
    let mut bytes = small();
    let at = after_str(&bytes, "list") + 8; // type 9, element type, then the count
    put_u64(&mut bytes, at, 1 << 40);
    let e = fail(bytes);
    assert!(matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 40));
}

#[test]
fn open_reads_files_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("kiln-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.gguf");
    let e = Gguf::open(&missing).unwrap_err();
    assert!(
        matches!(&e, GgufError::Io { path, .. } if path == &missing),
        "{e:?}"
    );

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Gguf::open(&empty),
        Err(GgufError::Truncated { .. })
    ));

    let file = dir.join("small.gguf");
    std::fs::write(&file, small()).unwrap();
    let (mapped, owned) = (Gguf::open(&file).unwrap(), load(small()));
    assert_eq!(mapped.metadata(), owned.metadata());
    for t in owned.tensors() {
        assert_eq!(mapped.tensor_data(t), owned.tensor_data(t));
    }

    // A tensor of a type kiln cannot load: open fails, open_metadata reads the metadata.
    let mut bytes = small();
    let at = tensor_type_at(&bytes, "tensor.a");
    put_u32(&mut bytes, at, 11); // Q3_K
    let q3_k = dir.join("q3_k.gguf");
    std::fs::write(&q3_k, &bytes).unwrap();
    assert!(matches!(
        Gguf::open(&q3_k),
        Err(GgufError::UnknownTensorType { .. })
    ));
    let header = Gguf::open_metadata(&q3_k).unwrap();
    assert_eq!(header.metadata(), owned.metadata());
    assert!(header.tensors().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
