//! The WebGPU backend on the reference model (SmolLM2-135M Q4_1), end to end: greedy
//! tokens equal to the CPU backend's up to the first near-tie, and the logits of every
//! step close to the oracle's (`kiln_tests::device`). On a machine without a GPU this
//! runs on Mesa's lavapipe, which is slow: a short prompt and a few tokens.

use kiln_backend_wgpu::WgpuBackend;
use kiln_tests::cpu::load;
use kiln_tests::device::{Greedy, check_launch_times, greedy_matches_cpu, wgsl_limits};
use kiln_tests::required_on_ci;

#[test]
fn greedy_on_the_reference_model_matches_the_cpu_backend() {
    if backend().is_none() {
        return;
    }
    let Some(model) = load() else {
        return;
    };
    let check = Greedy {
        name: "wgpu",
        prompt: "The capital of France is",
        n_ctx: 64,
        tokens: 6,
        limits: wgsl_limits,
    };
    greedy_matches_cpu(&model, &check, &|| {
        Box::new(WgpuBackend::any_adapter().unwrap())
    });
}

/// The backend, or None (printed) without an adapter; CI requires one.
fn backend() -> Option<WgpuBackend> {
    required_on_ci(WgpuBackend::any_adapter())
        .map_err(|e| eprintln!("skipping: {e}"))
        .ok()
}

#[test]
fn launch_times_cover_every_launch_of_the_last_step() {
    use kiln_ir::backend::Backend;
    let Some(mut backend) = backend() else {
        return;
    };
    let case = kiln_tests::conformance::find_case("rope_kv_write_attention_h64_gqa3_fp8_p16");
    kiln_tests::conformance::run_case(&mut backend, &case).expect("the case runs");
    match backend.launch_times() {
        Ok(_) => check_launch_times(&mut backend),
        Err(e) => eprintln!("no timestamp queries on this adapter: {e}"),
    }
}
