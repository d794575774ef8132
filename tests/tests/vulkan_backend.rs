//! The Vulkan backend (ash) on the reference model (SmolLM2-135M Q4_1), end to end:
//! greedy tokens equal to the CPU backend's up to the first near-tie, logits held to the
//! f32 oracle (as in wgpu_backend.rs, whose comment says why the oracle and not the CPU
//! backend); and the backend's own abilities: the kernel caches (a second load compiles
//! nothing), timestamps, its device's properties. On a machine without a GPU this runs on Mesa's
//! lavapipe, which is slow: a short prompt and a few tokens.

use kiln_backend_vulkan::{Cache, VulkanBackend, VulkanOptions};
use kiln_ir::backend::Backend;
use kiln_tests::cpu::load;
use kiln_tests::device::{Greedy, check_launch_times, greedy_matches_cpu, wgsl_limits};
use kiln_tests::required_on_ci;

/// The backend, or None (printed) without a device; CI requires one.
fn backend() -> Option<VulkanBackend> {
    required_on_ci(VulkanBackend::any_device())
        .map_err(|e| eprintln!("skipping: {e}"))
        .ok()
}

#[test]
fn greedy_on_the_reference_model_matches_the_cpu_backend() {
    if backend().is_none() {
        return;
    }
    let Some(model) = load() else {
        return;
    };
    let check = Greedy {
        name: "vulkan",
        prompt: "The capital of France is",
        n_ctx: 64,
        tokens: 5,
        limits: wgsl_limits,
    };
    greedy_matches_cpu(&model, &check, &|| {
        Box::new(VulkanBackend::any_device().unwrap())
    });
}

#[test]
fn a_second_load_compiles_nothing() {
    let dir = std::env::temp_dir().join(format!("kiln-vulkan-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || {
        required_on_ci(VulkanBackend::with_options(VulkanOptions {
            allow_cpu: true,
            cache: Cache::Dir(dir.clone()),
            ..VulkanOptions::default()
        }))
    };
    let Ok(mut first) = open().map_err(|e| eprintln!("skipping: {e}")) else {
        return;
    };
    let case = kiln_tests::conformance::find_case("rope_kv_write_attention_h64_gqa3_fp8_p16");
    kiln_tests::conformance::run_case(&mut first, &case).expect("the case runs");
    let cold = first.cache_stats().expect("a plan is loaded");
    assert!(cold.spirv_compiled > 0 && cold.spirv_hits == 0, "{cold:?}");
    drop(first);
    let mut second = open().expect("the device opens again");
    let err = kiln_tests::conformance::run_case(&mut second, &case).expect("the case runs");
    assert!(err <= case.limit, "{err:.2e} from cached kernels");
    let warm = second.cache_stats().expect("a plan is loaded");
    eprintln!("cold load {cold:?}, warm load {warm:?}");
    assert_eq!(warm.spirv_compiled, 0, "{warm:?}");
    assert_eq!(warm.spirv_hits, cold.spirv_compiled);
    assert!(
        warm.pipeline_cache_bytes > 0,
        "the pipeline cache was not reloaded"
    );
    // A damaged cache is ignored: everything compiles again and runs.
    for f in std::fs::read_dir(dir.join("spirv")).unwrap() {
        std::fs::write(f.unwrap().path(), b"not SPIR-V").unwrap();
    }
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.is_file() {
            std::fs::write(path, b"not a pipeline cache").unwrap();
        }
    }
    let mut third = open().expect("the device opens again");
    let err = kiln_tests::conformance::run_case(&mut third, &case).expect("the case runs");
    assert!(err <= case.limit);
    let damaged = third.cache_stats().expect("a plan is loaded");
    assert_eq!(damaged.spirv_compiled, cold.spirv_compiled, "{damaged:?}");
    assert_eq!(damaged.pipeline_cache_bytes, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn launch_times_cover_every_launch_of_the_last_step() {
    let Some(mut backend) = backend() else {
        return;
    };
    assert!(backend.launch_times().is_err(), "no plan yet");
    let case = kiln_tests::conformance::find_case("rope_kv_write_attention_h64_gqa3_fp8_p16");
    kiln_tests::conformance::run_case(&mut backend, &case).expect("the case runs");
    match backend.launch_times() {
        Ok(_) => check_launch_times(&mut backend),
        Err(e) => eprintln!("no timestamp queries on this device: {e}"),
    }
}

#[test]
fn the_device_is_described() {
    let Some(backend) = backend() else {
        return;
    };
    let p = backend.properties();
    eprintln!(
        "{} (subgroups {:?}, memory {:?})",
        p.name, p.subgroup_size, p.memory_bytes
    );
    assert!(p.name.contains("Vulkan"));
    assert_eq!(p.subgroup_size.is_some(), backend.uses_subgroups());
    let off = VulkanBackend::with_options(VulkanOptions {
        allow_cpu: true,
        subgroups: false,
        cache: Cache::Off,
        ..VulkanOptions::default()
    })
    .expect("the device opens");
    assert!(!off.uses_subgroups() && off.properties().subgroup_size.is_none());
}

/// Without `allow_cpu`, a machine whose best device is lavapipe has no device: an
/// error, not a panic (nor a crash unloading the loader).
#[test]
fn a_cpu_device_is_refused_unless_asked() {
    let gpu_only = VulkanBackend::with_options(VulkanOptions {
        allow_cpu: false,
        ..VulkanOptions::default()
    });
    match gpu_only {
        Ok(b) => eprintln!("a GPU: {}", b.properties().name),
        Err(kiln_ir::backend::BackendError::NoDevice { reason, .. }) => eprintln!("{reason}"),
        Err(e) => panic!("not NoDevice: {e}"),
    }
}
