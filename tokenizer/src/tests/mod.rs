//! Tests of the whole tokenizer: a tiny hand-made vocabulary (no model needed), and the
//! reference model against llama.cpp's recorded ids when it is present.

mod model;
mod tiny;
