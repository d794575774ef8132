//! What the machine code of every CUDA kernel variant shows, without a GPU: NVRTC compiles
//! each variant (kiln_kernels_cuda::sources::all_variants, argmax, top-k, and the decode matvec
//! modules of kiln_kernels_cuda::matvec) to a cubin, and
//! `cuobjdump -res-usage -sass` (the PyPI wheels `nvidia-cuda-cuobjdump` and
//! `nvidia-cuda-nvdisasm`, which cuobjdump runs for the SASS, or a CUDA toolkit)
//! prints its resource usage and SASS, from which each kernel's facts are counted:
//! registers, shared and local memory, global loads by width, integer dot products,
//! tensor-core instructions (the integer ones apart), ldmatrix loads and cp.async copies.
//! `scripts/cuda-report` prints them as a table; tests/tests/cuda_disasm.rs asserts what
//! the kernels' design relies on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use kiln_backend_cuda::compile::{Nvrtc, Target};
use kiln_kernels_cuda::Kernel;
use kiln_kernels_cuda::sources::{all_variants, argmax_source, source, top_k_source};

/// What one kernel (one entry point of a variant's module) compiles to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFacts {
    /// The variant's name (`matmul_add_f16`, `matvec_q4_0`), or `argmax`, `top_k`.
    pub variant: String,
    /// The entry point's symbol (`matmul_f16_mv8`, `matvec_q4_0_t8`, `attention_fp8_decode` ...).
    pub kernel: String,
    /// Whether the kernel is a matvec: the matrix-vector kernel of a matmul op of float
    /// weights (`_mv8`) or a decode matvec of packed ones.
    pub matvec: bool,
    /// Whether the variant reads quantized weights (a block format).
    pub quantized: bool,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, bytes.
    pub shared_bytes: u32,
    /// Local memory per thread (spills and local arrays), bytes.
    pub local_bytes: u32,
    /// Call stack per thread, bytes.
    pub stack_bytes: u32,
    /// Local loads and stores (`LDL`, `STL`).
    pub local_ops: u32,
    /// Global loads (`LDG`) of 8 or 16 bits.
    pub ldg_narrow: u32,
    /// Global loads of 32 bits.
    pub ldg32: u32,
    /// Global loads of 64 bits.
    pub ldg64: u32,
    /// Global loads of 128 bits (`LDG.E.128`, `LDG.E.128.CONSTANT` ...).
    pub ldg128: u32,
    /// Integer dot products of four int8 pairs (`IDP.4A`, dp4a).
    pub idp4a: u32,
    /// Integer dot products of two int16 by two int8 pairs (`IDP.2A`, dp2a).
    pub idp2a: u32,
    /// Tensor-core instructions (`HMMA`, `IMMA`, and Hopper's warpgroup `HGMMA`/`IGMMA`/`QGMMA`).
    pub mma: u32,
    /// Of them, the integer ones (`IMMA`, `IGMMA`).
    pub imma: u32,
    /// Of them, Hopper's warpgroup MMA (`HGMMA`, `IGMMA`, `QGMMA`: wgmma).
    pub gmma: u32,
    /// Compiled for the architecture-specific target (`sm_90a`).
    pub specific: bool,
    /// Shared-memory matrix loads (`LDSM`, ldmatrix).
    pub ldsm: u32,
    /// Asynchronous global-to-shared copies (`LDGSTS`, cp.async) and TMA copies (`UBLKCP`, `UTMALDG`).
    pub cp_async: u32,
    /// SASS instructions (code size).
    pub instructions: u32,
}

impl KernelFacts {
    /// All global loads.
    pub fn ldg(&self) -> u32 {
        self.ldg_narrow + self.ldg32 + self.ldg64 + self.ldg128
    }

    /// `variant/kernel`, how failures name a kernel.
    pub fn id(&self) -> String {
        format!("{}/{}", self.variant, self.kernel)
    }
}

/// Where the disassembler is: `KILN_CUOBJDUMP`, else beside the NVRTC library (the PyPI
/// wheels put `lib/libnvrtc.so` and `bin/cuobjdump` under one `nvidia/cu13`; the library
/// is found by its path or on LD_LIBRARY_PATH), else on PATH, else in `/usr/local/cuda/bin`.
pub fn find_cuobjdump(nvrtc_path: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KILN_CUOBJDUMP") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("KILN_CUOBJDUMP={} is not a file", p.display()));
        }
        check_nvdisasm(&p)?;
        return Ok(p);
    }
    let mut candidates = Vec::new();
    let mut lib_dirs: Vec<PathBuf> = Path::new(nvrtc_path)
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        lib_dirs.extend(std::env::split_paths(&paths));
    }
    candidates.extend(
        lib_dirs
            .iter()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join("../bin/cuobjdump")),
    );
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|d| d.join("cuobjdump")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/cuobjdump"));
    let cuobjdump = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no cuobjdump ({INSTALL}, or set KILN_CUOBJDUMP)"))?;
    check_nvdisasm(&cuobjdump)?;
    Ok(cuobjdump)
}

/// How to get the tools, as the errors say it.
const INSTALL: &str = "pip install nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86";

/// `cuobjdump -sass` runs nvdisasm, which it looks for beside itself, in NVDISASM_PATH and
/// on PATH: without it the listing fails, so say so before compiling anything.
fn check_nvdisasm(cuobjdump: &Path) -> Result<(), String> {
    let mut dirs: Vec<PathBuf> = cuobjdump
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    dirs.extend(std::env::var_os("NVDISASM_PATH").map(PathBuf::from));
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    if dirs.iter().any(|d| d.join("nvdisasm").is_file()) {
        Ok(())
    } else {
        Err(format!(
            "no nvdisasm beside {} or on PATH, which cuobjdump -sass needs ({INSTALL})",
            cuobjdump.display()
        ))
    }
}

/// The kernels of one module, or why they could not be counted.
type ModuleFacts = Result<Vec<KernelFacts>, String>;

/// One compiled module: its name, source and what the kernels in it are.
struct Job {
    name: String,
    source: String,
    matvec: bool,
    quantized: bool,
}

/// Every module a plan may load: each variant, argmax and top-k.
fn jobs() -> Result<Vec<Job>, String> {
    let mut jobs = Vec::new();
    for v in all_variants() {
        if matches!(v.kernel, Kernel::Matvec | Kernel::Quantize) {
            continue; // matvec::modules() below, with the packed-unit readers
        }
        let src = source(&v).ok_or_else(|| format!("variant {} has no source", v.name()))?;
        jobs.push(Job {
            name: v.name(),
            source: src,
            matvec: v.kernel.is_matmul(),
            quantized: v.weight.is_some_and(|w| w.is_quantized()),
        });
    }
    jobs.push(Job {
        name: "argmax".into(),
        source: argmax_source(),
        matvec: false,
        quantized: false,
    });
    jobs.push(Job {
        name: "top_k".into(),
        source: top_k_source(),
        matvec: false,
        quantized: false,
    });
    // The decode matvec modules (one per weight type: matvec_<dtype>_t<T>[_add|_swiglu]),
    // the q8_1 activation quantizer and the packed-unit readers.
    for (name, source, _) in kiln_kernels_cuda::matvec::modules() {
        let matvec = name.starts_with("matvec_");
        jobs.push(Job {
            name,
            source,
            matvec,
            quantized: matvec,
        });
    }
    jobs.push(Job {
        name: "peak_mma".into(),
        source: kiln_kernels_cuda::peak::peak_source(),
        matvec: false,
        quantized: false,
    });
    Ok(jobs)
}

/// The facts of every kernel of every variant compiled for `target` (`sm_90`, `sm_90a`), in the order of
/// `all_variants()` (kernels of a module sorted by name), on up to `threads` threads.
/// `sass_dir`, when given, receives each module's cuobjdump output as `<variant>.sass`.
pub fn analyse_all(
    nvrtc: &Nvrtc,
    cuobjdump: &Path,
    target: Target,
    threads: usize,
    sass_dir: Option<&Path>,
    filter: &dyn Fn(&str) -> bool,
) -> Result<Vec<KernelFacts>, String> {
    let jobs: Vec<Job> = jobs()?.into_iter().filter(|j| filter(&j.name)).collect();
    let scratch = std::env::temp_dir().join(format!("kiln-cuda-disasm-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, ModuleFacts)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        *n += 1;
                        *n - 1
                    };
                    let Some(job) = jobs.get(i) else { return };
                    let r = analyse_one(nvrtc, cuobjdump, target, job, &scratch, sass_dir);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, r));
                }
            });
        }
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (_, r) in results {
        match r {
            Ok(facts) => out.extend(facts),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("\n"))
    }
}

/// Compile one module, disassemble it and count.
fn analyse_one(
    nvrtc: &Nvrtc,
    cuobjdump: &Path,
    target: Target,
    job: &Job,
    scratch: &Path,
    sass_dir: Option<&Path>,
) -> Result<Vec<KernelFacts>, String> {
    let (cubin, _log) = nvrtc
        .compile(&job.name, &job.source, target)
        .map_err(|e| format!("{}: {e}", job.name))?;
    let path = scratch.join(format!("{}.cubin", job.name));
    std::fs::write(&path, &cubin).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = Command::new(cuobjdump)
        .args(["-res-usage", "-sass"])
        .arg(&path)
        .output()
        .map_err(|e| format!("{}: {e}", cuobjdump.display()))?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err(format!(
            "{}: cuobjdump {}: {}",
            job.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(dir) = sass_dir {
        let file = dir.join(format!("{}.sass", job.name));
        std::fs::write(&file, text.as_bytes()).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let mut facts = parse(&text).map_err(|e| format!("{}: {e}", job.name))?;
    for f in &mut facts {
        f.variant.clone_from(&job.name);
        f.matvec = job.matvec;
        f.quantized = job.quantized;
        f.specific = target.specific;
    }
    Ok(facts)
}

/// The kernels of one `cuobjdump -res-usage -sass` output, sorted by name; `variant`,
/// `matvec` and `quantized` are left for the caller. Counts only; an instruction line is
/// `/*0040*/  [@P0] OPCODE.MODIFIERS operands ;`.
pub fn parse(text: &str) -> Result<Vec<KernelFacts>, String> {
    let mut kernels: Vec<KernelFacts> = Vec::new();
    let mut resources_of: Option<String> = None;
    let mut current: Option<usize> = None;
    let index = |kernels: &mut Vec<KernelFacts>, name: &str| match kernels
        .iter()
        .position(|k| k.kernel == name)
    {
        Some(i) => i,
        None => {
            kernels.push(KernelFacts {
                kernel: name.to_string(),
                ..KernelFacts::default()
            });
            kernels.len() - 1
        }
    };
    for line in text.lines() {
        let t = line.trim();
        // Resource usage: " Function matmul_f16_mv8:" then "  REG:48 STACK:0 SHARED:0 LOCAL:0 ...".
        if let Some(name) = t
            .strip_prefix("Function ")
            .and_then(|r| r.strip_suffix(':'))
        {
            resources_of = Some(name.trim().to_string());
            continue;
        }
        if let Some(name) = resources_of.take()
            && t.starts_with("REG:")
        {
            let i = index(&mut kernels, &name);
            let k = &mut kernels[i];
            for field in t.split_whitespace() {
                let Some((key, value)) = field.split_once(':') else {
                    continue;
                };
                let value: u32 = value
                    .parse()
                    .map_err(|_| format!("bad resource field {field:?} of {name}"))?;
                match key {
                    "REG" => k.registers = value,
                    "STACK" => k.stack_bytes = value,
                    "SHARED" => k.shared_bytes = value,
                    "LOCAL" => k.local_bytes = value,
                    _ => {}
                }
            }
            continue;
        }
        // SASS: "Function : matmul_f16_mv8" then instruction lines.
        if let Some(name) = t.strip_prefix("Function :") {
            current = Some(index(&mut kernels, name.trim()));
            continue;
        }
        let Some(i) = current else { continue };
        if let Some(opcode) = opcode_of(t) {
            count(&mut kernels[i], opcode);
        }
    }
    if kernels.is_empty() {
        return Err("cuobjdump printed no kernel".into());
    }
    if let Some(k) = kernels.iter().find(|k| k.instructions == 0) {
        return Err(format!("no SASS for {}", k.kernel));
    }
    kernels.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    Ok(kernels)
}

/// The opcode (with modifiers) of a SASS instruction line, past its address and predicate.
fn opcode_of(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("/*")?;
    let (addr, rest) = rest.split_once("*/")?;
    if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut words = rest.split_whitespace();
    let mut op = words.next()?;
    if op.starts_with('@') {
        op = words.next()?;
    }
    Some(op.trim_end_matches(';'))
}

/// Count one instruction into `k`.
fn count(k: &mut KernelFacts, opcode: &str) {
    k.instructions += 1;
    let mut parts = opcode.split('.');
    let base = parts.next().unwrap_or("");
    let mods: Vec<&str> = parts.collect();
    let has = |m: &str| mods.contains(&m);
    match base {
        "LDG" => {
            if has("128") {
                k.ldg128 += 1;
            } else if has("64") {
                k.ldg64 += 1;
            } else if ["U8", "S8", "U16", "S16"].iter().any(|m| has(m)) {
                k.ldg_narrow += 1;
            } else {
                k.ldg32 += 1;
            }
        }
        "LDL" | "STL" => k.local_ops += 1,
        "IDP" if has("4A") => k.idp4a += 1,
        "IDP" if has("2A") => k.idp2a += 1,
        "IMMA" => {
            k.mma += 1;
            k.imma += 1;
        }
        "IGMMA" => {
            k.mma += 1;
            k.imma += 1;
            k.gmma += 1;
        }
        "HGMMA" | "QGMMA" => {
            k.mma += 1;
            k.gmma += 1;
        }
        "HMMA" | "BMMA" => k.mma += 1,
        "LDSM" => k.ldsm += 1,
        "LDGSTS" | "UBLKCP" | "UTMALDG" => k.cp_async += 1,
        _ => {}
    }
}

/// The facts as an aligned text table, one line per kernel.
pub fn table(facts: &[KernelFacts]) -> String {
    let header = [
        "variant", "kernel", "regs", "smem", "local", "ldl/stl", "ldg8/16", "ldg32", "ldg64",
        "ldg128", "idp4a", "idp2a", "mma", "imma", "gmma", "ldsm", "cp.async", "instrs",
    ];
    let rows: Vec<Vec<String>> = facts
        .iter()
        .map(|k| {
            vec![
                k.variant.clone(),
                k.kernel.clone(),
                k.registers.to_string(),
                k.shared_bytes.to_string(),
                (k.local_bytes + k.stack_bytes).to_string(),
                k.local_ops.to_string(),
                k.ldg_narrow.to_string(),
                k.ldg32.to_string(),
                k.ldg64.to_string(),
                k.ldg128.to_string(),
                k.idp4a.to_string(),
                k.idp2a.to_string(),
                k.mma.to_string(),
                k.imma.to_string(),
                k.gmma.to_string(),
                k.ldsm.to_string(),
                k.cp_async.to_string(),
                k.instructions.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        for (c, cell) in cells.iter().enumerate() {
            let w = widths[c];
            let sep = if c + 1 == cells.len() { "\n" } else { "  " };
            // Names left-aligned, numbers right-aligned.
            let _ = if c < 2 {
                write!(out, "{cell:<w$}{sep}")
            } else {
                write!(out, "{cell:>w$}{sep}")
            };
        }
    };
    line(&mut out, &header);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    out
}
