//! Random shapes on the CPU backend against the oracle (proptest): matmuls of any weight
//! type and attention with random contexts, pages, GQA groups and KV types. The table of
//! fixed cases runs on every backend in `conformance.rs`.

use kiln_backend_cpu::CpuBackend;
use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;
use kiln_tests::conformance::cases::RANDOM_SHAPE_SLACK;
use kiln_tests::conformance::{
    AttentionSpec, Case, RopeSpec, attention_case, matmul_term_case, run_case,
};
use proptest::prelude::*;

fn weight_dtype() -> impl Strategy<Value = DType> {
    let cases = &kiln_tests::conformance::cases::WEIGHT_DTYPES;
    prop::sample::select([&cases[..], &kiln_tests::conformance::cases::K_WEIGHT_DTYPES].concat())
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
            gemma: None,
        };
        check_random_shape(&attention_case(spec))?;
    }
}
