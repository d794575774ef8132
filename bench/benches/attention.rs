//! Paged attention: decode (one token over contexts of 512 and 4096, KV pages rotating
//! through more memory than the last-level cache) and prefill (128 tokens attending
//! causally; Gemma 3 270M's heads over 512 tokens), FP8 and F16 KV. Throughput: KV bytes
//! read.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_bench::Case;
use kiln_bench::cases::{Attention, AttentionMode};
use kiln_ir::kv_layout::KvDtype;

fn attention(c: &mut Criterion) {
    let mut cases: Vec<Box<dyn Case>> = Vec::new();
    // (query heads, KV heads, head dim): SmolLM2-135M and Llama-3-8B.
    for (n_heads, n_kv_heads, head_dim) in [(9, 3, 64), (32, 8, 128)] {
        for kv in [KvDtype::F8E4M3, KvDtype::F16] {
            let modes = [
                AttentionMode::Decode { ctx: 512 },
                AttentionMode::Decode { ctx: 4096 },
                AttentionMode::Prefill { tokens: 128 },
            ];
            for mode in modes {
                cases.push(Box::new(Attention {
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    kv,
                    mode,
                }));
            }
        }
    }
    // Gemma 3 270M: four query heads over one KV head of 256, a 512-token prompt.
    for kv in [KvDtype::F8E4M3, KvDtype::F16] {
        cases.push(Box::new(Attention {
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            kv,
            mode: AttentionMode::Prefill { tokens: 512 },
        }));
    }
    kiln_bench::run_suite(c, &cases);
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = attention
}
criterion_main!(benches);
