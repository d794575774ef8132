//! Any bytes given to the GGUF reader give an error or a file whose every tensor can be
//! read; never a panic or an out-of-bounds read.

#![no_main]

use kiln_gguf::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::from_bytes(data.to_vec()) else {
        return;
    };
    for (key, value) in gguf.metadata() {
        assert!(gguf.get(key).is_some());
        std::hint::black_box(value.summary());
    }
    for info in gguf.tensors() {
        let bytes = gguf.tensor_data(info);
        assert_eq!(bytes.len() as u64, info.n_bytes);
        std::hint::black_box(bytes.iter().fold(0u8, |acc, &b| acc ^ b));
        std::hint::black_box(info.rows());
    }
});
