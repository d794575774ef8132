//! RoPE of q and k with the KV page write (FP8 with per-(token, head) scales, and F16),
//! for one decode token and a prefill chunk. Throughput: q, k, v read, q and the KV
//! slots written.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_bench::Case;
use kiln_bench::cases::RopeKvWrite;
use kiln_ir::kv_layout::KvDtype;

fn rope_kv_write(c: &mut Criterion) {
    let mut cases: Vec<Box<dyn Case>> = Vec::new();
    // (query heads, KV heads, head dim): SmolLM2-135M and Llama-3-8B.
    for (n_heads, n_kv_heads, head_dim) in [(9, 3, 64), (32, 8, 128)] {
        for kv in [KvDtype::F8E4M3, KvDtype::F16] {
            for tokens in [1, 128] {
                cases.push(Box::new(RopeKvWrite {
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    kv,
                    tokens,
                }));
            }
        }
    }
    kiln_bench::run_suite(c, &cases);
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = rope_kv_write
}
criterion_main!(benches);
