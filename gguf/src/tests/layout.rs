//! The data section's layout (ggml's rule: tensors in table order, each where the previous
//! one ends, padded), raw headers that round-trip, and paths that are not regular files.

use std::time::Duration;

use kiln_ir::DType;

use super::*;

/// Three F32 tensors of 64, 8 and 16 values (256, 32 and 64 bytes: offsets 0, 256, 288).
fn three() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("llama".into()))
        .tensor("a", &[64], DType::F32, data_for(DType::F32, &[64], 1))
        .tensor("b", &[8], DType::F32, data_for(DType::F32, &[8], 2))
        .tensor("c", &[16], DType::F32, data_for(DType::F32, &[16], 3));
    w.to_bytes()
}

fn layout_error(bytes: Vec<u8>) -> (String, u64, &'static str, String, u64) {
    match fail(bytes) {
        GgufError::TensorLayout {
            tensor,
            offset,
            relation,
            previous,
            expected,
        } => (tensor, offset, relation, previous, expected),
        e => panic!("expected a layout error, got {e:?}"),
    }
}

#[test]
fn the_writer_lays_tensors_out_as_ggml_expects() {
    let g = load(three());
    let offsets: Vec<u64> = g.tensors().iter().map(|t| t.offset).collect();
    assert_eq!(offsets, [0, 256, 288]);
}

#[test]
fn a_tensor_moved_onto_another_overlaps_it() {
    let mut bytes = three();
    let at = tensor_type_at(&bytes, "c") + 4;
    put_u64(&mut bytes, at, 0);
    let (tensor, offset, relation, previous, expected) = layout_error(bytes);
    assert_eq!((tensor.as_str(), offset, relation), ("c", 0, "overlaps"));
    assert!(previous.contains("\"b\""), "{previous}");
    assert_eq!(expected, 288);
}

#[test]
fn a_type_change_that_grows_a_tensor_overlaps_the_next() {
    // "a" as F32 -> Q8_0 is impossible (64 values make two Q8_0 blocks of 34 bytes: it
    // shrinks); F16 -> F32 grows. Build "a" as F16, then claim F32.
    let mut w = GgufWriter::new();
    w.tensor("a", &[64], DType::F16, data_for(DType::F16, &[64], 1))
        .tensor("b", &[8], DType::F32, data_for(DType::F32, &[8], 2))
        .tensor("c", &[64], DType::F32, data_for(DType::F32, &[64], 3));
    let mut bytes = w.to_bytes();
    let at = tensor_type_at(&bytes, "a");
    put_u32(&mut bytes, at, 0); // F32
    let (tensor, offset, relation, previous, expected) = layout_error(bytes);
    assert_eq!((tensor.as_str(), offset, relation), ("b", 128, "overlaps"));
    assert!(
        previous.contains("\"a\" (f32 [64], 256 bytes"),
        "{previous}"
    );
    assert_eq!(expected, 256);
}

#[test]
fn a_type_change_that_shrinks_a_tensor_leaves_a_gap() {
    let mut bytes = three();
    let at = tensor_type_at(&bytes, "a");
    put_u32(&mut bytes, at, 1); // F16: 128 bytes where 256 are stored
    let (tensor, offset, relation, _, expected) = layout_error(bytes);
    assert_eq!(
        (tensor.as_str(), offset, relation, expected),
        ("b", 256, "leaves a gap after", 128)
    );
}

#[test]
fn the_first_tensor_starts_the_data_section() {
    let mut bytes = three();
    // Swap the offsets of "a" and "b": both in range, aligned, and disjoint, but not
    // where ggml would look for them.
    let (at_a, at_b) = (
        tensor_type_at(&bytes, "a") + 4,
        tensor_type_at(&bytes, "b") + 4,
    );
    put_u64(&mut bytes, at_a, 32);
    put_u64(&mut bytes, at_b, 0);
    let (tensor, offset, relation, previous, _) = layout_error(bytes);
    assert_eq!((tensor.as_str(), offset), ("a", 32));
    assert_eq!(relation, "leaves a gap after");
    assert_eq!(previous, "the start of the data section");
}

#[test]
fn raw_headers_round_trip_and_reencode_exactly() {
    let bytes = three();
    let header = Header::parse(&bytes).unwrap();
    let g = load(bytes.clone());
    assert_eq!(header.data_offset().unwrap(), g.data_offset());
    let encoded = header.encode(header.alignment().unwrap());
    assert_eq!(encoded, bytes[..g.data_offset() as usize]);
    // Only the header is needed, and unknown tensor types are kept as they are.
    let mut edited = header.clone();
    edited.tensors[0].type_id = 12; // Q4_K
    let reparsed = Header::parse(&edited.encode(32)).unwrap();
    assert_eq!(reparsed.tensors[0].type_id, 12);
    assert_eq!(reparsed.metadata, header.metadata);
}

/// A path that is not a regular file is refused before it is opened for reading, with
/// what it is in the message.
fn refused(path: &std::path::Path, kind: &str) {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let opened = path.clone();
    // Opening a FIFO for reading would block forever; the open runs on a thread.
    std::thread::spawn(move || tx.send(Gguf::open(&opened).map(|_| ())));
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("opening {} blocked", path.display()));
    let e = result.expect_err("not a file");
    assert!(
        matches!(&e, GgufError::NotAFile { path: p, kind: k } if *p == path && *k == kind),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.contains(kind) && !message.contains('\n'),
        "{message}"
    );
}

#[test]
fn directories_devices_fifos_and_sockets_are_refused_unopened() {
    let dir = std::env::temp_dir().join(format!("kiln-gguf-special-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    refused(&dir, "a directory");
    #[cfg(unix)]
    {
        refused(std::path::Path::new("/dev/zero"), "a character device");
        refused(std::path::Path::new("/dev/urandom"), "a character device");
        let fifo = dir.join("fifo.gguf");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
        refused(&fifo, "a named pipe (FIFO)");
        let socket = dir.join("socket.gguf");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        refused(&socket, "a socket");
        // A symbolic link to a device is the device.
        let link = dir.join("link.gguf");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        refused(&link, "a character device");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
