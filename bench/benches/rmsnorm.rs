//! RMSNorm of (tokens, d) activations: SmolLM2-135M's width and Llama-3-8B's, one token
//! and a prefill chunk. Throughput: activations read and written, and the weight.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_bench::Case;
use kiln_bench::cases::RmsNorm;

fn rmsnorm(c: &mut Criterion) {
    let mut cases: Vec<Box<dyn Case>> = Vec::new();
    for d in [576, 4096] {
        for tokens in [1, 128] {
            cases.push(Box::new(RmsNorm { d, tokens }));
        }
    }
    kiln_bench::run_suite(c, &cases);
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = rmsnorm
}
criterion_main!(benches);
