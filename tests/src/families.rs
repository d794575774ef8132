//! The families' random-weight models (`kiln synth`, `<family>-tiny`, Q8_0, a fixed
//! seed): the bytes llama.cpp's outputs in tests/data/reference/families were recorded
//! on, made once per target folder. tests/tests/families.rs holds them to llama.cpp; the
//! device backends' test files run them against the oracle.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use kiln_ir::DType;
use kiln_tools::synth::{self, Shape, SynthConfig};

use crate::reference_model;

/// The shapes recorded, each `tests/data/reference/families/<shape>.json`.
pub const FAMILIES: [&str; 4] = ["llama3-tiny", "mistral-tiny", "qwen2-tiny", "qwen3-tiny"];
/// The seed and quant llama.cpp's outputs were recorded with.
pub const SEED: u64 = 7;
pub const QUANT: DType = DType::Q8_0;

/// A synthesized model (the same bytes every time), made once per target folder (in its
/// `tmp`, where cargo points integration tests' `CARGO_TARGET_TMPDIR`).
pub fn synthesized(shape: Shape, file: &str) -> PathBuf {
    static ONE_AT_A_TIME: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = ONE_AT_A_TIME.get_or_init(Default::default).lock().unwrap();
    // The test binary is target/<profile>/deps/<name>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.ancestors().nth(3).expect("target/").join("tmp");
    std::fs::create_dir_all(&dir).expect("target/tmp is writable");
    let path = dir.join(file);
    if path.exists() {
        return path;
    }
    // Written under this process's name, then renamed: another test run may race us.
    let part = dir.join(format!("{file}.{}", std::process::id()));
    let config = SynthConfig {
        shape,
        quant: QUANT,
        seed: SEED,
        tokenizer_from: reference_model(),
    };
    synth::synthesize(&config, &part, |_| {}).expect("the model synthesizes");
    std::fs::rename(&part, &path).expect("the synthesized model moves into place");
    path
}

/// The model of family shape `name` (one of [`FAMILIES`]).
pub fn family_file(name: &str) -> PathBuf {
    let shape = Shape::named(name).expect("a named shape");
    synthesized(shape, &format!("{name}-{}-seed{SEED}.gguf", QUANT.name()))
}
