//! Dequantizing matrix-vector products (1, 4 and 8 tokens) and a matrix-matrix product
//! (128 tokens), weights rotating through more memory than the last-level cache.
//! Throughput: weight bytes read.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_bench::Case;
use kiln_bench::cases::Matvec;
use kiln_ir::DType;

fn cases() -> Vec<Box<dyn Case>> {
    let all = [DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::F16];
    let mut cases: Vec<Box<dyn Case>> = Vec::new();
    // (inputs, outputs, dtypes): SmolLM2-135M's up and down projections, Llama-3-8B's up.
    let shapes: [(usize, usize, &[DType]); 3] = [
        (576, 1536, &all),
        (1536, 576, &all),
        (4096, 14336, &[DType::Q4_0, DType::Q8_0]),
    ];
    for (k, n, dtypes) in shapes {
        for &dtype in dtypes {
            for tokens in [1, 4, 8] {
                cases.push(Box::new(Matvec {
                    dtype,
                    k,
                    n,
                    tokens,
                }));
            }
        }
    }
    for dtype in all {
        cases.push(Box::new(Matvec {
            dtype,
            k: 576,
            n: 1536,
            tokens: 128,
        }));
    }
    cases
}

fn matvec(c: &mut Criterion) {
    kiln_bench::run_suite(c, &cases());
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = matvec
}
criterion_main!(benches);
