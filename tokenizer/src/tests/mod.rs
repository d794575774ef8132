//! Tests of the whole tokenizer: tiny hand-made BPE and SentencePiece vocabularies (no
//! model needed), and the two reference models' vocabularies.

mod gemma;
mod model;
mod tiny;
mod tiny_spm;
