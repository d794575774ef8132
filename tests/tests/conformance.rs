//! The backend conformance suite (ggml's `test-backend-ops`): every case of
//! `kiln_tests::conformance::cases()` as one test per backend, the bad-step checks, and
//! random shapes on the CPU. Run with `--nocapture` to see each case's error:
//!
//! ```text
//! cargo test -p kiln-tests --test conformance -- --nocapture
//! ```

use kiln_backend_cpu::CpuBackend;
use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;
use kiln_tests::conformance::cases::RANDOM_SHAPE_SLACK;
use kiln_tests::conformance::{
    self, AttentionSpec, Case, RopeSpec, attention_case, matmul_term_case, run_case,
};
use proptest::prelude::*;

/// `conformance_suite!(name, constructor)`: a module `name` with one test per case of the
/// table (`name::<family>::<variant>`), the bad-step checks, and a check that the list
/// below and the table agree. The constructor gives an `Option` or a `Result` of a
/// backend; `None` or `Err` (no device) makes every test print why and pass.
///
/// A backend adds one line: `conformance_suite!(cuda, kiln_backend_cuda::CudaBackend::new());`
macro_rules! conformance_suite {
    ($backend:ident, $constructor:expr) => {
        conformance_suite!(@suite $backend, $constructor;
            rmsnorm: [t1_d96, t33_d608],
            add: [t7_d160],
            swiglu: [t33_d96],
            rope: [h64_t7, h128_factors_t3, h64_partial_t33, h128_partial_factors_t1],
            matmul_t1: [f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k],
            matmul_t33: [f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k],
            matmul3_t7: [
                f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k,
                q4_1_q8_0_q4_0, q4_0_bf16_q8_0, q4_k_q6_k_q5_0, q5_1_q5_k_q4_k,
            ],
            rmsnorm_matmul3_t33: [f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k],
            matmul_swiglu_t7: [f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k],
            rmsnorm_matmul_swiglu_t3: [f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k],
            matmul_add_t33: [f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q4_k, q5_k, q6_k, q8_k],
            attention: [
                h64_gqa1_fp8_p16, h128_gqa1_f16_p5,
                h128_gqa3_fp8_p16, h128_gqa3_fp8_p5, h128_gqa3_f16_p16, h128_gqa3_f16_p5,
                h64_gqa4_fp8_p16, h64_gqa4_fp8_p5, h64_gqa4_f16_p16, h64_gqa4_f16_p5,
                h128_gqa8_f16_p16, h64_gqa16_fp8_p5, h128_gqa4_fp8_p16,
            ],
            rope_kv_write_q: [h64_gqa3_fp8_p16, h128_gqa4_f16_p5],
            rope_kv_write_attention: [h64_gqa3_fp8_p16, h128_gqa4_f16_p5],
        );
    };
    (@suite $backend:ident, $constructor:expr; $($family:ident: [$($variant:ident),* $(,)?]),* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            fn backend() -> Option<Box<dyn kiln_ir::backend::Backend>> {
                kiln_tests::conformance::open(stringify!($backend), $constructor)
            }

            $(
                mod $family {
                    $(
                        #[test]
                        fn $variant() {
                            let name = concat!(stringify!($family), "_", stringify!($variant));
                            kiln_tests::conformance::check_case(stringify!($backend), super::backend(), name);
                        }
                    )*
                }
            )*

            #[test]
            fn bad_steps_are_errors() {
                if let Some(mut backend) = backend() {
                    if let Err(e) = kiln_tests::conformance::check_bad_steps(backend.as_mut()) {
                        panic!("{}: {e}", stringify!($backend));
                    }
                }
            }

            #[test]
            fn copy_kv_page_keeps_the_context() {
                if let Some(mut backend) = backend() {
                    if let Err(e) = kiln_tests::conformance::check_copy_kv_page(backend.as_mut()) {
                        panic!("{}: {e}", stringify!($backend));
                    }
                }
            }

            #[test]
            fn every_case_has_a_test() {
                kiln_tests::conformance::check_listed(&[
                    $($(concat!(stringify!($family), "_", stringify!($variant)),)*)*
                ]);
            }
        }
    };
}

conformance_suite!(cpu, Some(CpuBackend::new()));
conformance_suite!(
    wgpu,
    kiln_tests::required_on_ci(kiln_backend_wgpu::WgpuBackend::any_adapter())
);
// CI has no NVIDIA GPU: without a device (or driver, or NVRTC) every CUDA case prints why
// and passes, even with KILN_REQUIRE_GPU_BACKENDS=1.
conformance_suite!(cuda, kiln_backend_cuda::CudaBackend::new());
conformance_suite!(
    vulkan,
    kiln_tests::required_on_ci(kiln_backend_vulkan::VulkanBackend::any_device())
);
// The workgroup-memory reductions, what a device without subgroup arithmetic runs.
conformance_suite!(
    vulkan_no_subgroups,
    kiln_tests::required_on_ci(kiln_backend_vulkan::VulkanBackend::with_options(
        kiln_backend_vulkan::VulkanOptions {
            allow_cpu: true,
            subgroups: false,
            ..Default::default()
        }
    ))
);

/// Every limit would catch one missing output row: a limit that cannot fail is a defect.
#[test]
fn every_limit_can_fail() {
    conformance::check_limits_can_fail();
}

fn weight_dtype() -> impl Strategy<Value = DType> {
    let cases = &conformance::cases::WEIGHT_DTYPES;
    prop::sample::select([&cases[..], &conformance::cases::K_WEIGHT_DTYPES].concat())
}

/// Run a case of random shape on the CPU; its limit gets [`RANDOM_SHAPE_SLACK`].
fn check_random_shape(case: &Case) -> Result<(), TestCaseError> {
    let err = run_case(&mut CpuBackend::new(), case).map_err(TestCaseError::fail)?;
    let limit = case.limit * RANDOM_SHAPE_SLACK;
    prop_assert!(
        err <= limit,
        "{} ({}): {} {err:.3e} over {limit:.1e}",
        case.name,
        case.shape,
        case.metric
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// MatMul of random shape on the CPU against the oracle, any weight type. The error is
    /// over the power of the summed products, so that a few outputs that happen to cancel
    /// cannot flake.
    #[test]
    fn cpu_matmul_random_shapes(dtype in weight_dtype(), rows in 1usize..300, blocks in 1usize..20, tokens in 1usize..9) {
        // Whole blocks: 32 values, or 256 for the K-quants.
        let cols = (32 * blocks).next_multiple_of(dtype.block_len());
        let case = matmul_term_case(dtype, tokens, rows, cols);
        check_random_shape(&case)?;
    }

    /// Attention (after KvWrite or RopeKvWrite) with random contexts, pages, GQA, head
    /// sizes and KV types on the CPU, several sequences per step.
    #[test]
    fn cpu_attention_random_shapes(
        head_dim in prop::sample::select(vec![32usize, 64, 96, 128]),
        n_kv_heads in 1usize..4,
        group in 1usize..5,
        fp8 in any::<bool>(),
        roped in any::<bool>(),
        page_size in 1usize..20,
        seqs in prop::collection::vec((1usize..60, 0.0f64..1.0), 1..4),
    ) {
        let spec = AttentionSpec {
            head_dim,
            n_heads: n_kv_heads * group,
            n_kv_heads,
            kv: if fp8 { KvDtype::F8E4M3 } else { KvDtype::F16 },
            page_size,
            // (context, tokens of it in the last step): at least one, at most all.
            seqs: seqs.iter().map(|&(len, f)| (len, 1 + (f * len as f64) as usize % len)).collect(),
            rope: roped.then(|| RopeSpec::new(head_dim, 10_000.0)),
            check_q: false,
        };
        check_random_shape(&attention_case(spec))?;
    }
}
