//! Kernels compiled by NVRTC for the device's architecture at first use, and cached on
//! disk so that a second start compiles nothing. NVRTC is loaded with libloading (not
//! through cudarc, whose loader panics when the library is absent): the file the options
//! name first (`KILN_NVRTC_PATH` in the CLI), then `libnvrtc.so.13`, `libnvrtc.so`,
//! `libnvrtc.so.12`. A missing library is [`NvrtcError::Missing`]; a failed compile keeps
//! NVRTC's log.
//!
//! Cache: kiln-gpu-host's (one set of rules for every backend, `CudaOptions::cache`); one
//! `<name>-<key>.cubin` per (source, architecture, NVRTC version, options).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;

use kiln_gpu_host::cache::{Cache, CacheStats, DiskCache, fnv1a};

/// Library names tried after the one the options name, newest first.
pub const NVRTC_LIBS: &[&str] = &["libnvrtc.so.13", "libnvrtc.so", "libnvrtc.so.12"];

/// Options of every compile (besides the architecture): no fast math, so that expf and
/// the divisions match the WGSL kernels and the CPU reference.
const OPTIONS: &[&str] = &["--std=c++17", "--device-as-default-execution-space"];

#[derive(Debug)]
pub enum NvrtcError {
    /// No NVRTC library could be loaded (or it lacks a symbol).
    Missing(String),
    /// NVRTC refused the source: the log.
    Compile { name: String, log: String },
    /// Any other NVRTC failure.
    Call(String),
}

impl std::fmt::Display for NvrtcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NvrtcError::Missing(why) => write!(f, "no NVRTC: {why}"),
            NvrtcError::Compile { name, log } => {
                write!(f, "NVRTC could not compile {name}:\n{log}")
            }
            NvrtcError::Call(why) => write!(f, "NVRTC: {why}"),
        }
    }
}

impl std::error::Error for NvrtcError {}

type Program = *mut c_void;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type CopyFn = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> c_int;
type ErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;

/// The NVRTC library and the entry points kiln calls.
pub struct Nvrtc {
    version: (i32, i32),
    path: String,
    create: CreateFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: CopyFn,
    cubin_size: SizeFn,
    cubin: CopyFn,
    destroy: DestroyFn,
    error_string: ErrorStringFn,
    /// Keeps the entry points above valid; dropped last.
    _lib: libloading::Library,
    /// NVRTC's builtins library, loaded from the directory of a library given by path:
    /// NVRTC dlopens it by name at each compile, and finds it loaded already.
    _builtins: Vec<libloading::Library>,
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Nvrtc({} {}.{})",
            self.path, self.version.0, self.version.1
        )
    }
}

/// The `libnvrtc-builtins` libraries in the directory of an NVRTC given by path (none for
/// a bare library name, which the loader's path resolves, builtins included).
fn builtins_beside(path: &str) -> Vec<libloading::Library> {
    let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so") && !n.contains(".alt."))
        })
        // SAFETY: the builtins library has no initialisers with preconditions; it only
        // provides what NVRTC looks up in it.
        .filter_map(|p| unsafe { libloading::Library::new(p.as_os_str()) }.ok())
        .collect()
}

/// libloading's error with its cause (the loader's own message: "cannot open shared
/// object file", a missing symbol).
pub fn load_error(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A function pointer of `lib` by name.
///
/// # Safety
/// `T` must be the C signature of the symbol.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, NvrtcError> {
    // SAFETY: the caller promises T is the symbol's type; the pointer is copied out and
    // stays valid while `lib` is loaded (Nvrtc keeps it).
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| NvrtcError::Missing(format!("{name}: {}", load_error(&e))))
}

impl Nvrtc {
    /// Load NVRTC: the file `path` (when given), then [`NVRTC_LIBS`] on the loader's
    /// path.
    pub fn load(path: Option<&Path>) -> Result<Nvrtc, NvrtcError> {
        let mut candidates: Vec<String> = path
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .into_iter()
            .collect();
        candidates.extend(NVRTC_LIBS.iter().map(|s| s.to_string()));
        let mut tried = Vec::new();
        for name in &candidates {
            // SAFETY: loading NVRTC runs its library initialisers, which have no
            // preconditions; nothing else of it runs until a symbol is called.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Nvrtc::from_library(lib, name),
                Err(e) => tried.push(format!("{name} ({})", load_error(&e))),
            }
        }
        Err(NvrtcError::Missing(format!(
            "tried {}; install the CUDA toolkit's NVRTC or `pip install nvidia-cuda-nvrtc` and \
             set LD_LIBRARY_PATH or KILN_NVRTC_PATH",
            tried.join(", ")
        )))
    }

    fn from_library(lib: libloading::Library, path: &str) -> Result<Nvrtc, NvrtcError> {
        // SAFETY: each type below is the C signature of the named NVRTC function
        // (nvrtc.h, unchanged since CUDA 11.1).
        let nvrtc = unsafe {
            let version: VersionFn = symbol(&lib, "nvrtcVersion")?;
            let (mut major, mut minor) = (0, 0);
            let status = version(&mut major, &mut minor);
            if status != 0 {
                return Err(NvrtcError::Call(format!("nvrtcVersion failed ({status})")));
            }
            Nvrtc {
                version: (major, minor),
                path: path.to_string(),
                create: symbol(&lib, "nvrtcCreateProgram")?,
                compile: symbol(&lib, "nvrtcCompileProgram")?,
                log_size: symbol(&lib, "nvrtcGetProgramLogSize")?,
                log: symbol(&lib, "nvrtcGetProgramLog")?,
                cubin_size: symbol(&lib, "nvrtcGetCUBINSize")?,
                cubin: symbol(&lib, "nvrtcGetCUBIN")?,
                destroy: symbol(&lib, "nvrtcDestroyProgram")?,
                error_string: symbol(&lib, "nvrtcGetErrorString")?,
                _lib: lib,
                _builtins: builtins_beside(path),
            }
        };
        Ok(nvrtc)
    }

    /// NVRTC's (major, minor) version.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Where the library was found.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn status(&self, what: &str, status: c_int) -> Result<(), NvrtcError> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any code.
        let text = unsafe { CStr::from_ptr((self.error_string)(status)) };
        Err(NvrtcError::Call(format!(
            "{what}: {}",
            text.to_string_lossy()
        )))
    }

    /// Compile `source` for `target` (`sm_90`, or `sm_90a` from
    /// [`Target::specific`]; a bare number is its plain target) into a cubin. Returns the
    /// cubin and NVRTC's log (warnings; empty when clean).
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        target: impl Into<Target>,
    ) -> Result<(Vec<u8>, String), NvrtcError> {
        let target = target.into();
        let bad = |e: std::ffi::NulError| NvrtcError::Call(format!("{name}: {e}"));
        let src = CString::new(source).map_err(bad)?;
        let cname = CString::new(name).map_err(bad)?;
        let mut options: Vec<CString> = OPTIONS
            .iter()
            .map(|o| CString::new(*o).map_err(bad))
            .collect::<Result<_, _>>()?;
        options.push(CString::new(format!("--gpu-architecture={target}")).map_err(bad)?);
        let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: the strings outlive the calls; no headers are passed (count 0, null
        // arrays); `prog` is destroyed below on every path once created.
        unsafe {
            let status = (self.create)(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            self.status("nvrtcCreateProgram", status)?;
            let result = self.compile_created(prog, name, &option_ptrs);
            (self.destroy)(&mut prog);
            result
        }
    }

    /// # Safety
    /// `prog` must be a live program of this library.
    unsafe fn compile_created(
        &self,
        prog: Program,
        name: &str,
        options: &[*const c_char],
    ) -> Result<(Vec<u8>, String), NvrtcError> {
        // SAFETY: `prog` is live (the caller's promise); the buffers are sized by NVRTC's
        // own size queries before it writes into them.
        unsafe {
            let compiled = (self.compile)(prog, options.len() as c_int, options.as_ptr());
            let mut log_len = 0usize;
            self.status(
                "nvrtcGetProgramLogSize",
                (self.log_size)(prog, &mut log_len),
            )?;
            let mut log = vec![0u8; log_len.max(1)];
            self.status(
                "nvrtcGetProgramLog",
                (self.log)(prog, log.as_mut_ptr().cast()),
            )?;
            let log = String::from_utf8_lossy(&log)
                .trim_end_matches('\0')
                .trim()
                .to_string();
            if compiled != 0 {
                return Err(NvrtcError::Compile {
                    name: name.to_string(),
                    log,
                });
            }
            let mut size = 0usize;
            self.status("nvrtcGetCUBINSize", (self.cubin_size)(prog, &mut size))?;
            let mut cubin = vec![0u8; size];
            self.status(
                "nvrtcGetCUBIN",
                (self.cubin)(prog, cubin.as_mut_ptr().cast()),
            )?;
            Ok((cubin, log))
        }
    }
}

/// What NVRTC compiles for: a compute capability (`arch`, e.g. 90) and whether with its
/// architecture-specific features (`sm_90a`: wgmma), whose cubins run on that
/// capability alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub arch: u32,
    pub specific: bool,
}

impl Target {
    /// Compute capability `arch` with its specific features (`sm_<arch>a`).
    pub fn specific(arch: u32) -> Target {
        Target {
            arch,
            specific: true,
        }
    }
}

impl From<u32> for Target {
    fn from(arch: u32) -> Target {
        Target {
            arch,
            specific: false,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sm_{}{}",
            self.arch,
            if self.specific { "a" } else { "" }
        )
    }
}

/// The cache key of a compile: source, target, NVRTC version and options.
pub fn cache_key(source: &str, target: impl Into<Target>, nvrtc_version: (i32, i32)) -> String {
    let target = target.into();
    let (major, minor) = nvrtc_version;
    let mut parts: Vec<&[u8]> = vec![source.as_bytes()];
    let numbers = [
        target.arch.to_le_bytes(),
        u32::from(target.specific).to_le_bytes(),
        major.to_le_bytes(),
        minor.to_le_bytes(),
    ];
    parts.extend(numbers.iter().map(|n| &n[..]));
    parts.extend(OPTIONS.iter().map(|o| o.as_bytes()));
    let h = fnv1a(0xcbf2_9ce4_8422_2325, &parts);
    let a = if target.specific { "a" } else { "" };
    format!("sm{}{a}-nvrtc{major}.{minor}-{h:016x}", target.arch)
}

/// Kernels compiled for one target, through the disk cache.
#[derive(Debug)]
pub struct Compiler {
    pub nvrtc: Nvrtc,
    pub target: Target,
    cache: DiskCache,
    debug: bool,
}

impl Compiler {
    /// A compiler for `target` caching in `cache`; `debug` prints each compile.
    pub fn new(nvrtc: Nvrtc, target: impl Into<Target>, cache: &Cache, debug: bool) -> Compiler {
        Compiler {
            nvrtc,
            target: target.into(),
            cache: DiskCache::new(cache),
            debug,
        }
    }

    /// Cubins read from the cache and compiled so far.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The cubin of `source`: from the cache, or compiled (and then cached; a cache that
    /// cannot be written is only slower).
    pub fn cubin(&self, name: &str, source: &str) -> Result<Vec<u8>, NvrtcError> {
        let key = cache_key(source, self.target, self.nvrtc.version());
        let file = format!("{name}-{key}.cubin");
        let tag = source.len() as u64;
        let mut compiled = false;
        let cubin = self.cache.get_or_build(
            &file,
            tag,
            |c| !c.is_empty(),
            || {
                compiled = true;
                let start = std::time::Instant::now();
                let (cubin, log) = self.nvrtc.compile(name, source, self.target)?;
                if self.debug {
                    eprintln!(
                        "cuda: compiled {name} for {} in {:.2} s ({} bytes){}{log}",
                        self.target,
                        start.elapsed().as_secs_f64(),
                        cubin.len(),
                        if log.is_empty() { "" } else { ": " }
                    );
                }
                Ok(cubin)
            },
        )?;
        if self.debug && !compiled {
            eprintln!("cuda: {name} from the cache");
        }
        Ok(cubin)
    }
}

/// The cubin of every (name, source), in order: from the disk cache, or compiled by NVRTC
/// on a few threads (a first start compiles a dozen kernels of about a second each).
/// Err: the name of a module that failed and why.
pub fn compile_all(
    compiler: &Compiler,
    jobs: &[(String, String)],
) -> Result<Vec<Vec<u8>>, (String, String)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, src)) = jobs.get(i) else {
                            return done;
                        };
                        done.push((i, compiler.cubin(name, src)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut cubins: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];
    for (i, r) in results {
        cubins[i] = Some(r.map_err(|e| (jobs[i].0.clone(), e.to_string()))?);
    }
    cubins
        .into_iter()
        .zip(jobs)
        .map(|(c, (name, _))| c.ok_or_else(|| (name.clone(), "a compile thread failed".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_key_changes_with_source_arch_and_version() {
        let key = cache_key("src", 90, (13, 0));
        assert_eq!(key, cache_key("src", 90, (13, 0)), "stable");
        assert!(key.starts_with("sm90-nvrtc13.0-"), "{key}");
        for other in [
            cache_key("src ", 90, (13, 0)),
            cache_key("src", 80, (13, 0)),
            cache_key("src", 90, (13, 1)),
            cache_key("src", 90, (12, 0)),
            cache_key("src", Target::specific(90), (13, 0)),
        ] {
            assert_ne!(key, other);
        }
    }
}
