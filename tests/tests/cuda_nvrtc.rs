//! NVRTC compiles every CUDA kernel variant a plan can produce (every op × weight dtype ×
//! KV dtype, argmax, top-k, and the decode matvec modules of kiln_kernels_cuda::matvec) for sm_90 and sm_80,
//! and the modules with warpgroup-MMA entries (the FP8 attention's prefill, the packed types' prefill matmul) for sm_90a too, failing on any error or warning, so that a
//! typo in a `.cu` file fails `cargo test` on a machine without a GPU. Needs only
//! libnvrtc (`pip install nvidia-cuda-nvrtc`, then LD_LIBRARY_PATH or KILN_NVRTC_PATH):
//! without it the tests show as `ignored (why)`, unless KILN_REQUIRE_NVRTC=1 (CI), where
//! they fail.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use kiln_backend_cuda::compile::{Nvrtc, NvrtcError, Target};
use kiln_kernels_cuda::Kernel;
use kiln_kernels_cuda::sources::{all_variants, argmax_source, source, top_k_source};
use kiln_kernels_cuda::variant::Entry;
use kiln_testkit::{Outcome, fail, pass, skip, test};

fn main() -> ExitCode {
    kiln_testkit::run(vec![
        test("nvrtc_compiles_every_variant_without_warnings", || {
            with_nvrtc(nvrtc_compiles_every_variant_without_warnings)
        }),
        test("compiled_kernels_are_cached_on_disk", || {
            with_nvrtc(compiled_kernels_are_cached_on_disk)
        }),
    ])
}

/// Architectures checked: Hopper (the reference machine) and Ampere (the oldest with the
/// tensor-core path).
const ARCHS: [u32; 2] = [90, 80];

/// Run `check` with NVRTC, or skip (fail under KILN_REQUIRE_NVRTC=1) without it.
fn with_nvrtc(check: fn(Nvrtc)) -> Outcome {
    let path = std::env::var_os("KILN_NVRTC_PATH").map(std::path::PathBuf::from);
    match Nvrtc::load(path.as_deref()) {
        Ok(nvrtc) => {
            check(nvrtc);
            pass()
        }
        Err(e) if std::env::var("KILN_REQUIRE_NVRTC").is_ok_and(|v| v == "1") => {
            fail(format!("KILN_REQUIRE_NVRTC=1 but {e}"))
        }
        Err(e) => skip(format!("no NVRTC: {e}")),
    }
}

fn nvrtc_compiles_every_variant_without_warnings(nvrtc: Nvrtc) {
    let mut jobs: Vec<(String, String, Target)> = Vec::new();
    for arch in ARCHS.map(Target::from) {
        for v in all_variants() {
            if matches!(v.kernel, Kernel::Matvec | Kernel::Quantize) {
                continue; // matvec::modules() below
            }
            let src = source(&v).expect("every variant assembles");
            jobs.push((v.name(), src, arch));
        }
        jobs.push(("argmax".into(), argmax_source(), arch));
        jobs.push(("top_k".into(), top_k_source(), arch));
        // The decode matvec, its activation quantizer and the packed-unit readers.
        for (name, src, _) in kiln_kernels_cuda::matvec::modules() {
            jobs.push((name, src, arch));
        }
        // The tensor-core peak of the backend's ceilings.
        jobs.push((
            "peak_mma".into(),
            kiln_kernels_cuda::peak::peak_source(),
            arch,
        ));
    }
    // sm_90a: the modules with wgmma kernels (the FP8 attention, the packed types' int8
    // matmul modules; what an H100 or H200 compiles every module
    // for; the others have no sm_90a-only code).
    for v in all_variants() {
        if v.entries()
            .iter()
            .any(|e| matches!(e, Entry::PrefillWgmma(_) | Entry::MmqWgmma(_)))
        {
            let src = source(&v).expect("every variant assembles");
            jobs.push((v.name(), src, Target::specific(90)));
        }
    }
    assert!(
        jobs.iter().any(|j| j.2.specific),
        "no module has a wgmma entry"
    );
    let start = Instant::now();
    let n_jobs = jobs.len();
    let queue = Mutex::new(jobs);
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some((name, src, arch)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let failure = match nvrtc.compile(&name, &src, arch) {
                        Ok((cubin, log)) if log.is_empty() && !cubin.is_empty() => None,
                        Ok((_, log)) => Some(format!("{name} {arch}: warnings:\n{log}")),
                        Err(NvrtcError::Compile { log, .. }) => {
                            Some(format!("{name} {arch}: errors:\n{log}"))
                        }
                        Err(e) => Some(format!("{name} {arch}: {e}")),
                    };
                    if let Some(f) = failure {
                        failures.lock().unwrap().push(f);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!(
        "NVRTC {:?} ({}): {n_jobs} kernels in {:.1} s on {threads} threads",
        nvrtc.version(),
        nvrtc.path(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A second compile of the same source is read from the disk cache, and a cache entry is
/// keyed by the source.
fn compiled_kernels_are_cached_on_disk(nvrtc: Nvrtc) {
    use kiln_backend_cuda::Cache;
    use kiln_backend_cuda::compile::Compiler;
    let dir = std::env::temp_dir().join(format!("kiln-cuda-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let compiler = Compiler::new(nvrtc, 90, &Cache::Dir(dir.clone()), false);
    let src = argmax_source();
    let first = compiler.cubin("argmax", &src).expect("argmax compiles");
    let files = || std::fs::read_dir(&dir).map_or(0, |d| d.count());
    assert_eq!(files(), 1, "the cubin was not written");
    assert_eq!(compiler.cubin("argmax", &src).unwrap(), first);
    let (hits, built) = (compiler.stats().hits, compiler.stats().built);
    assert_eq!(
        (hits, built),
        (1, 1),
        "the second compile did not read the file"
    );
    let other = format!("{src}\n// another source\n");
    assert!(!compiler.cubin("argmax", &other).unwrap().is_empty());
    assert_eq!(
        (compiler.stats().built, files()),
        (2, 2),
        "one entry a source"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
