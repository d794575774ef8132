//! The host C++ compiler: found once (`KILN_CXX`, else `CXX`, else `c++`), and each
//! module's text compiled to a shared library cached by a hash of the compiler's version,
//! the flags and the text, so a test run compiles each module once per machine.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::error::EmuError;

/// -O1: a module compiles in about a second and runs fast enough for the tests.
/// -fno-strict-aliasing: the kernels read words of byte buffers through casts, as CUDA
/// allows. -ffp-contract=off: a·b + c stays two roundings unless the kernel asks for fmaf
/// (NVCC contracts by default; the tests' tolerances cover either).
/// -U_FORTIFY_SOURCE: see below.
const FLAGS: &[&str] = &[
    "-std=c++17",
    "-O1",
    "-fPIC",
    "-shared",
    "-fno-strict-aliasing",
    "-fwrapv",
    "-ffp-contract=off",
    // The fibers switch stacks with _longjmp (src/host/runtime.h), which the fortified
    // longjmp of some distributions' default flags aborts.
    "-U_FORTIFY_SOURCE",
    "-w",
];

/// The compiler's command and its `--version` line, or why there is none.
fn compiler() -> Result<&'static (String, String), EmuError> {
    static FOUND: OnceLock<Result<(String, String), (String, String)>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let cxx = std::env::var("KILN_CXX")
            .or_else(|_| std::env::var("CXX"))
            .unwrap_or_else(|_| "c++".into());
        match Command::new(&cxx).arg("--version").output() {
            Ok(o) if o.status.success() => {
                let version = String::from_utf8_lossy(&o.stdout);
                Ok((cxx, version.lines().next().unwrap_or("").to_string()))
            }
            Ok(o) => Err((cxx, String::from_utf8_lossy(&o.stderr).into_owned())),
            Err(e) => Err((cxx, e.to_string())),
        }
    });
    found.as_ref().map_err(|(c, r)| EmuError::NoCompiler {
        compiler: c.clone(),
        reason: r.clone(),
    })
}

/// Whether modules can be built here (a C++ compiler answers).
pub fn available() -> Result<(), EmuError> {
    compiler().map(|_| ())
}

/// FNV-1a, 64 bits: a cache key, not a defence.
fn hash(parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Where compiled modules are kept: `KILN_CUDA_EMU_CACHE`, else the temp dir.
fn cache_dir() -> PathBuf {
    std::env::var_os("KILN_CUDA_EMU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-cuda-emu"))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> EmuError {
    move |source| EmuError::Io { what, source }
}

/// The shared library of `text` (module `name`, for messages), compiled unless cached.
pub fn build(name: &str, text: &str) -> Result<PathBuf, EmuError> {
    let (cxx, version) = compiler()?;
    let key = hash(&[version, &FLAGS.join(" "), text]);
    let dir = cache_dir();
    let lib = dir.join(format!("{name}-{key:016x}.so"));
    if lib.exists() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    // Private names until the rename: tests in parallel may build the same module.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stem = format!("{name}-{key:016x}.{}.{n}", std::process::id());
    let src = dir.join(format!("{stem}.cpp"));
    let tmp = dir.join(format!("{stem}.so"));
    std::fs::write(&src, text).map_err(io(format!("writing {}", src.display())))?;
    let out = Command::new(cxx)
        .args(FLAGS)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .output()
        .map_err(io(format!("running {cxx}")))?;
    if !out.status.success() {
        // The source stays for a look; the message names it.
        return Err(EmuError::Compile {
            module: name.into(),
            stderr: format!(
                "{} (source {})",
                first_errors(&String::from_utf8_lossy(&out.stderr)),
                src.display()
            ),
        });
    }
    let _ = std::fs::remove_file(&src);
    std::fs::rename(&tmp, &lib).map_err(io(format!("renaming {}", tmp.display())))?;
    Ok(lib)
}

/// The first few error lines of the compiler's output.
fn first_errors(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("error"))
        .take(8)
        .collect();
    if errors.is_empty() {
        stderr.chars().take(2000).collect()
    } else {
        errors.join("\n")
    }
}
