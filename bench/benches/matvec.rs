//! Dequantizing matrix-vector products (1, 4 and 8 tokens) and a matrix-matrix product
//! (128 tokens), weights rotating through more memory than the last-level cache.
//! Throughput: weight bytes read.
//!
//! The block formats of real Q4_K_M files (Q5_0, Q4_K, Q6_K; Q5_1, Q5_K) at Gemma 3
//! 270M's shapes, and every quantized format at llama.cpp's `test-backend-ops perf`
//! matvec shape (m 4096, k 14336: 14336 inputs, 4096 outputs) for the side-by-side in
//! bench/RESULTS.md. Run one group with a filter, e.g.
//! `cargo bench -p kiln-bench --bench matvec -- 14336x4096`.

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
    // Gemma 3 270M Q4_K_M: FFN up/gate in Q5_0 (640 is not whole super-blocks), FFN down
    // and attention output in Q4_K or Q6_K.
    let k_quants = [DType::Q4_K, DType::Q5_K, DType::Q6_K];
    let gemma: [(usize, usize, &[DType]); 3] = [
        (640, 2048, &[DType::Q5_0, DType::Q5_1]),
        (2048, 640, &k_quants),
        (1024, 640, &k_quants),
    ];
    // test-backend-ops' matvec (m = 4096 outputs, k = 14336 inputs).
    let ggml_formats = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];
    for (k, n, dtypes) in gemma.into_iter().chain([(14336, 4096, &ggml_formats[..])]) {
        for &dtype in dtypes {
            for tokens in [1, 8] {
                cases.push(Box::new(Matvec {
                    dtype,
                    k,
                    n,
                    tokens,
                }));
            }
        }
    }
    for dtype in k_quants {
        cases.push(Box::new(Matvec {
            dtype,
            k: 2048,
            n: 640,
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
