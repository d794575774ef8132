//! Attention at long context (issue 15's figures), meant for GPUs: causal prefill of 8,192
//! tokens (TFLOP/s: the flash prefill target) and a decode step of 32 sequences over 8,192
//! positions each (GB/s of KV read: the decode-at-depth target), Llama-3-8B's heads (32
//! over 8 KV heads of 128), FP8 KV; Gemma 3's heads (4 over 1 of 256) prefilling 8,192.
//! Minutes a case on a CPU: `cargo bench --bench attention_long cuda/` on a GPU machine.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_bench::Case;
use kiln_bench::cases::{Attention, AttentionMode};
use kiln_ir::kv_layout::KvDtype;

fn attention_long(c: &mut Criterion) {
    let llama = |mode| Attention {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
        kv: KvDtype::F8E4M3,
        mode,
    };
    let cases: Vec<Box<dyn Case>> = vec![
        Box::new(llama(AttentionMode::Prefill { tokens: 8192 })),
        Box::new(llama(AttentionMode::Batch {
            ctx: 8192,
            seqs: 32,
        })),
        Box::new(Attention {
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            kv: KvDtype::F8E4M3,
            mode: AttentionMode::Prefill { tokens: 8192 },
        }),
    ];
    kiln_bench::run_suite(c, &cases);
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = attention_long
}
criterion_main!(benches);
