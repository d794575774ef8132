//! The Vulkan backend (ash) on the reference model (SmolLM2-135M Q4_1), end to end:
//! greedy tokens equal to the CPU backend's up to the first near-tie, logits held to the
//! f32 oracle (as in wgpu_backend.rs, whose comment says why the oracle and not the CPU
//! backend); and the backend's own abilities: the kernel caches (a second load compiles
//! nothing), timestamps, buffers. On a machine without a GPU this runs on Mesa's
//! lavapipe, which is slow: a short prompt and a few tokens.

use std::time::Instant;

use kiln_backend_vulkan::{Cache, VulkanBackend, VulkanOptions};
use kiln_engine::compiled::Compiled;
use kiln_engine::kv::KvDtype;
use kiln_engine::reference::Reference;
use kiln_engine::runner::{LogitsFor, Runner};
use kiln_engine::sampler::argmax;
use kiln_ir::backend::Backend;
use kiln_tests::cpu::{cpu, load, options};
use kiln_tests::required_on_ci;

const N_CTX: usize = 64;
const TOKENS: usize = 5;
/// Below this top-two logit gap (of the CPU backend) the greedy choice is a near-tie.
const MIN_GAP: f32 = 0.5;

/// Logits against the oracle's: (NMSE, largest difference over the largest logit), per
/// KV type; the same kernels as wgpu, so the same limits (measured on lavapipe: see the
/// printout).
fn limits(kv: KvDtype) -> (f64, f64) {
    match kv {
        KvDtype::F16 => (1e-4, 5e-3),
        KvDtype::F8E4M3 => (2e-2, 0.1),
    }
}

fn top2_gap(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &l in logits {
        if l > first {
            second = first;
            first = l;
        } else if l > second {
            second = l;
        }
    }
    first - second
}

/// (NMSE, max |a - b| / max |b|) of `ours` against `theirs`.
fn error(ours: &[f32], theirs: &[f32]) -> (f64, f64) {
    assert!(ours.iter().all(|x| x.is_finite()), "non-finite logits");
    let (mut se, mut ss, mut max_diff, mut max_ref) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in ours.iter().zip(theirs) {
        let (a, b) = (f64::from(a), f64::from(b));
        se += (a - b) * (a - b);
        ss += b * b;
        max_diff = max_diff.max((a - b).abs());
        max_ref = max_ref.max(b.abs());
    }
    (se / ss, max_diff / max_ref)
}

/// The backend, or None (printed) without a device; CI requires one.
fn backend() -> Option<VulkanBackend> {
    required_on_ci(VulkanBackend::any_device())
        .map_err(|e| eprintln!("skipping: {e}"))
        .ok()
}

#[test]
fn greedy_on_the_reference_model_matches_the_cpu_backend() {
    let Some(probe) = backend() else {
        return;
    };
    let Some(model) = load() else {
        return;
    };
    let device = probe.properties().clone();
    drop(probe);
    let ids = model
        .tokenizer
        .encode("The capital of France is", true, true);
    for kv in [KvDtype::F8E4M3, KvDtype::F16] {
        let (max_nmse, max_rel) = limits(kv);
        let start = Instant::now();
        let mut gpu = Compiled::new(
            &model,
            Box::new(VulkanBackend::any_device().unwrap()),
            options(N_CTX, kv),
        )
        .expect("the vulkan backend compiles the model");
        let mut reference = cpu(&model, options(N_CTX, kv));
        let mut oracle = Reference::new(&model, N_CTX);
        let mut exact = oracle.forward(&ids, LogitsFor::Last).unwrap();
        let mut theirs = reference.forward(&ids, LogitsFor::Last).unwrap();
        let mut ours = gpu.forward(&ids, LogitsFor::Last).unwrap();
        let mut parted = None;
        let mut worst = (0.0f64, 0.0f64);
        let mut tokens = Vec::new();
        for step in 0..TOKENS {
            let (nmse, rel) = error(&ours, &exact);
            worst = (worst.0.max(nmse), worst.1.max(rel));
            let t = argmax(&theirs);
            tokens.push(t);
            if parted.is_none() && top2_gap(&theirs) < MIN_GAP {
                parted = Some(TOKENS); // a near-tie: the order past it is not checked
            }
            if parted.is_none() && argmax(&ours) != t {
                parted = Some(step);
            }
            assert!(
                parted != Some(step),
                "kv {kv}, step {step}: vulkan picks {} where the CPU backend picks {t} (gap {})",
                argmax(&ours),
                top2_gap(&theirs)
            );
            theirs = reference.forward(&[t], LogitsFor::Last).unwrap();
            ours = gpu.forward(&[t], LogitsFor::Last).unwrap();
            exact = oracle.forward(&[t], LogitsFor::Last).unwrap();
        }
        eprintln!(
            "vulkan on {}, kv {kv}: tokens {tokens:?} ({:?}) as the CPU backend's; logits vs the oracle: NMSE {:.2e}, max rel {:.2e} (limits {max_nmse:.0e}, {max_rel}); {:.1} s",
            device.name,
            model.tokenizer.decode(&tokens),
            worst.0,
            worst.1,
            start.elapsed().as_secs_f64()
        );
        assert!(
            worst.0 <= max_nmse && worst.1 <= max_rel,
            "kv {kv}: logits NMSE {:.2e}, max rel {:.2e}",
            worst.0,
            worst.1
        );
    }
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
        Ok(times) => {
            assert!(!times.is_empty());
            for (i, t) in times.iter().enumerate() {
                assert_eq!(t.launch, i);
                assert!(t.seconds.is_finite() && t.seconds >= 0.0, "{t:?}");
            }
            eprintln!("launch times: {times:?}");
        }
        Err(e) => eprintln!("no timestamp queries on this device: {e}"),
    }
}

#[test]
fn buffers_round_trip_at_any_offset() {
    let Some(mut backend) = backend() else {
        return;
    };
    let id = backend.alloc(37).unwrap();
    let data: Vec<u8> = (0..37u8).map(|b| b.wrapping_mul(7)).collect();
    backend.upload(id, 0, &data).unwrap();
    backend.upload(id, 5, &[1, 2, 3]).unwrap(); // unaligned
    let mut expected = data.clone();
    expected[5..8].copy_from_slice(&[1, 2, 3]);
    let mut out = vec![0u8; 37];
    backend.download(id, 0, &mut out).unwrap();
    assert_eq!(out, expected);
    let mut tail = vec![0u8; 6];
    backend.download(id, 31, &mut tail).unwrap();
    assert_eq!(tail, expected[31..]);
    assert!(backend.upload(id, 35, &[0; 3]).is_err(), "past the end");
    assert!(
        backend.download(id, 36, &mut [0; 2]).is_err(),
        "past the end"
    );
    backend.free(id);
    assert!(backend.download(id, 0, &mut [0; 4]).is_err(), "freed");
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
