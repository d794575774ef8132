//! The backend conformance suite (ggml's `test-backend-ops`): every case of
//! `kiln_tests::conformance::cases()` on every backend of the registry (kiln-backends) and
//! on the extra configurations below, plus the bad-step and KV-page-copy checks. A backend
//! without a device here, or without a kernel for a case, shows as `ignored (why)`; a
//! backend CI runs on lavapipe fails instead under `KILN_REQUIRE_GPU_BACKENDS=1`.
//!
//! ```text
//! cargo test -p kiln-tests --test conformance                 # everything
//! cargo test -p kiln-tests --test conformance -- vulkan::     # one backend
//! cargo test -p kiln-tests --test conformance -- --nocapture  # each case's error
//! ```
//!
//! Random shapes on the CPU: `conformance_random.rs`.

use std::process::ExitCode;
use std::sync::Arc;

use kiln_testkit::{Trial, pass, test};
use kiln_tests::conformance::{self, Target};

/// Configurations of registry backends that the suite runs as well.
fn configurations() -> Vec<Target> {
    vec![
        // The workgroup-memory reductions: what a device without subgroup arithmetic runs.
        Target::new(
            "vulkan_no_subgroups",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_vulkan::WgslOptions {
                    allow_cpu: true,
                    subgroups: false,
                    ..Default::default()
                };
                Ok(Box::new(kiln_backend_vulkan::VulkanBackend::with_options(
                    options,
                )?))
            }),
        ),
        // f32 arithmetic everywhere: what a device without shader-f16 runs (lavapipe has
        // it, so the vulkan and wgpu targets run the tiled GEMM's f16 tiles, this one its
        // f32 tiles). The option changes the matmul family's kernels only: this target
        // runs its cases only (MATMUL_ONLY).
        Target::new(
            "vulkan_no_f16",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_vulkan::WgslOptions {
                    allow_cpu: true,
                    shader_f16: false,
                    ..Default::default()
                };
                Ok(Box::new(kiln_backend_vulkan::VulkanBackend::with_options(
                    options,
                )?))
            }),
        ),
        // The prefill GEMM's cooperative-matrix kernel (gemm_tiles_coop.wgsl) with its
        // twin's matrix operations in plain WGSL: lavapipe has no cooperative matrices,
        // so this is how CI runs everything of that kernel but them. Matmul cases only.
        Target::new(
            "vulkan_coop_twin",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_vulkan::WgslOptions {
                    allow_cpu: true,
                    coop_matrix: kiln_backend_vulkan::CoopMatrix::Twin,
                    ..Default::default()
                };
                let backend = kiln_backend_vulkan::VulkanBackend::with_options(options)?;
                // Not the f16 tiles again, unnoticed (the twin needs f16 arithmetic and
                // its workgroup memory).
                if backend.gemm_coop() != Some(kiln_backend_vulkan::Coop::Twin) {
                    return Err(kiln_ir::backend::BackendError::Unsupported {
                        backend: "vulkan",
                        what: "the cooperative-matrix twin (f16 arithmetic, 27 KiB of workgroup memory)".into(),
                    });
                }
                Ok(Box::new(backend))
            }),
        ),
        // The CUDA kernels on the CPU (backends/cuda-emu): CI has a C++ compiler, so a
        // missing one fails there like a missing lavapipe. As an H100 runs them (sm_90,
        // tensor cores, split-K decode attention, decode steps as graphs), then as a
        // pre-Ada device without the fast paths (the FP8 bit conversions, matvec tiles and
        // one block per (head, token) attention for every step), launching directly. Both
        // run backends/cuda's host logic (kiln_kernels_cuda::host) on the emulator.
        Target::new(
            "cuda_emu",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_cuda_emu::EmuOptions::default();
                Ok(Box::new(kiln_backend_cuda_emu::EmuBackend::with_options(
                    options,
                )?))
            }),
        ),
        // An H100 with the wgmma kernels off (KILN_CUDA_WGMMA=0, sm_90 modules): the
        // mma.sync prefill attention with sm_89's FP8 conversions and the int8 prefill
        // matmul's 32-token tiles, which `cuda_emu` (sm_90a, the wgmma kernels) no longer
        // runs. Only the attention and prefill matmul cases (PREFILL_ONLY).
        Target::new(
            "cuda_emu_sm90_mma",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_cuda_emu::EmuOptions {
                    wgmma: false,
                    ..Default::default()
                };
                Ok(Box::new(kiln_backend_cuda_emu::EmuBackend::with_options(
                    options,
                )?))
            }),
        ),
        // An sm_80 with tensor cores and one SM: the FP8 conversions of the prefill
        // attention's pre-Ada path, and the int8 matmul's 64- and 128-token tiles (132
        // SMs halve these small grids' tiles to 32).
        Target::new(
            "cuda_emu_sm80",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_cuda_emu::EmuOptions {
                    arch: 800,
                    sm_count: 1,
                    ..Default::default()
                };
                Ok(Box::new(kiln_backend_cuda_emu::EmuBackend::with_options(
                    options,
                )?))
            }),
        ),
        Target::new(
            "cuda_emu_sm80_plain",
            kiln_backends::Ci::Lavapipe,
            Arc::new(|| {
                let options = kiln_backend_cuda_emu::EmuOptions {
                    arch: 800,
                    tensor_cores: false,
                    decode_attention: false,
                    graphs: false,
                    ..Default::default()
                };
                Ok(Box::new(kiln_backend_cuda_emu::EmuBackend::with_options(
                    options,
                )?))
            }),
        ),
    ]
}

/// Cases the CUDA emulator targets skip (their rows of attention take it minutes).
const EMU_TOO_SLOW: &[&str] = &["::attention_h128_gqa8_f16_p16"];

/// Configurations that differ from their backend in the matmul family's kernels alone,
/// and run only the cases whose name says matmul.
const MATMUL_ONLY: &[&str] = &["vulkan_no_f16", "vulkan_coop_twin"];

/// Configurations that differ from their backend in the tiled GEMM's f16 tiles alone
/// (quantized weights, steps of more than 32 rows: the int8 matvec takes up to 32), and
/// run only the matmul cases that take it.
const GEMM_F16_ONLY: &[&str] = &["vulkan_coop_twin"];

/// Whether a matmul case's name (`…matmul…_t<rows>_<dtype>…`) says its steps take the
/// tiled GEMM's f16 tiles: more than 32 rows, not float weights.
fn takes_gemm_f16(name: &str) -> bool {
    let rows = name
        .split('_')
        .find_map(|part| part.strip_prefix('t').and_then(|n| n.parse::<u32>().ok()));
    let float = ["_f32", "_f16", "_bf16"].iter().any(|f| name.ends_with(f));
    rows.is_some_and(|r| r > 32) && !float
}

/// Configurations that differ from their backend in the prefill kernels alone, and run
/// only the cases whose name says attention, or a matmul of more than 32 rows
/// ([`is_prefill_matmul`]).
const PREFILL_ONLY: &[&str] = &["cuda_emu_sm90_mma"];

/// A matmul case of a step of more than 32 rows (`..._t<rows>_...`): the prefill matmul's.
fn is_prefill_matmul(name: &str) -> bool {
    name.contains("matmul")
        && name.split('_').any(|p| {
            p.strip_prefix('t')
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 32)
        })
}

fn main() -> ExitCode {
    let mut trials: Vec<Trial> = vec![test("every_limit_can_fail", || {
        conformance::check_limits_can_fail();
        pass()
    })];
    let targets = conformance::registry_targets()
        .into_iter()
        .chain(configurations());
    for target in targets {
        let emulated = target.name.starts_with("cuda_emu");
        let matmul_only = MATMUL_ONLY.contains(&target.name.as_str());
        let gemm_f16_only = GEMM_F16_ONLY.contains(&target.name.as_str());
        let prefill_only = PREFILL_ONLY.contains(&target.name.as_str());
        for trial in conformance::trials(&target) {
            if matmul_only && !trial.name().contains("matmul") {
                continue;
            }
            if gemm_f16_only && !takes_gemm_f16(trial.name()) {
                continue;
            }
            if prefill_only
                && !trial.name().contains("attention")
                && !is_prefill_matmul(trial.name())
            {
                continue;
            }
            // Emulated threads are ~1000× slower than a GPU's: a case of thousands of
            // rows of attention would cost CI minutes.
            match EMU_TOO_SLOW.iter().find(|c| trial.name().ends_with(*c)) {
                Some(case) if emulated => trials.push(test(trial.name(), move || {
                    kiln_testkit::skip(format!("{case}: minutes on the CUDA emulator"))
                })),
                _ => trials.push(trial),
            }
        }
    }
    kiln_testkit::run(trials)
}
