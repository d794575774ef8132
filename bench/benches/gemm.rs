//! Prefill GEMMs of 512 tokens (issue 15): on CUDA the int8 tensor-core matmul of packed
//! weights (kiln_kernels_cuda::mmq; `cuda_wgmma/`: on an H100/H200 its warpgroup-MMA
//! matmul, matmul_wgmma.cu). The Llama-3-8B shape's FFN up (4096 inputs to 14336
//! outputs: the GEMM whose target is half the measured bf16 peak) and down in Q4_0, and
//! SmolLM2-135M's up in Q4_1. Compute-bound: the GFLOP/s of each line is the figure.
//! Tens of GFLOP an op: meant for GPUs (`cargo bench -p kiln-bench --bench gemm -- cuda/`;
//! scripts/gpu-check runs it so).

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_bench::Case;
use kiln_bench::cases::Matvec;
use kiln_ir::DType;

fn cases() -> Vec<Box<dyn Case>> {
    [
        (DType::Q4_0, 4096, 14336),
        (DType::Q4_0, 14336, 4096),
        (DType::Q4_1, 576, 1536),
    ]
    .into_iter()
    .map(|(dtype, k, n)| {
        Box::new(Matvec {
            dtype,
            k,
            n,
            tokens: 512,
        }) as Box<dyn Case>
    })
    .collect()
}

fn gemm(c: &mut Criterion) {
    kiln_bench::run_suite(c, &cases());
}

criterion_group! {
    name = benches;
    config = kiln_bench::config();
    targets = gemm
}
criterion_main!(benches);
