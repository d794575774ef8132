//! Tests of the whole tokenizer: tiny hand-made BPE and SentencePiece vocabularies (no
//! model needed), and the two reference models' vocabularies.

mod gemma;
mod model;
mod tiny;
mod tiny_spm;

use std::path::PathBuf;

use super::{StreamDecoder, Tokenizer};

/// A reference model: the file `variable` names, or `name` in the repository's models/.
fn model_file(variable: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models")
                .join(name)
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model.sh",
        path.display()
    );
    path
}

/// The text of `ids` through the streaming decoder, special tokens rendered.
fn streamed(t: &Tokenizer, ids: &[u32]) -> String {
    let mut d = StreamDecoder::with_special(t, true);
    ids.iter().map(|&id| d.push(id)).collect::<String>() + &d.finish()
}
