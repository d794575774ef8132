//! kiln's tools as a library, for the CLI, the benches and the tests: [`synth`] writes
//! random-weight GGUF models of known shapes (benchmarks without downloads), and [`bench`]
//! is what `kiln bench` measures.

pub mod bench;
pub mod synth;
