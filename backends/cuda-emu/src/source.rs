//! A kernel module's CUDA source made host C++: the emulator's runtime, CUDA dialect and
//! PTX twin first (src/host/), then the module's own text as kiln-kernels-cuda assembles
//! it for NVRTC, with its dynamic shared arrays made pointers, then one trampoline per
//! entry that copies the argument bytes into the kernel's struct and calls the kernel.

/// The compute capability the emulated device reports: sm_90 (every `__CUDA_ARCH__`
/// path of the kernels is the one an H100 runs: tensor cores, cp.async, FP8 cvt).
pub const ARCH: u32 = 900;

/// The host C++ text of a module of `source` with entries `symbols`, emulating
/// `__CUDA_ARCH__` = `arch`, and with `specific` the architecture-specific features
/// (`sm_90a`: `__CUDA_ARCH_FEAT_SM90_ALL`, the wgmma kernels).
pub fn host_source(source: &str, symbols: &[String], arch: u32, specific: bool) -> String {
    let mut out = String::with_capacity(source.len() + 32 * 1024);
    out.push_str("// kiln CUDA emulator module\n");
    out.push_str(include_str!("host/runtime.h"));
    out.push_str(include_str!("host/dialect.h"));
    out.push_str(include_str!("host/ptx.h"));
    out.push_str(&format!("#define __CUDA_ARCH__ {arch}\n"));
    if specific && arch == 900 {
        out.push_str("#define __CUDA_ARCH_FEAT_SM90_ALL 1\n");
    }
    for line in source.lines() {
        match dynamic_shared(line) {
            Some(decl) => out.push_str(&decl),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out.push_str(
        "// ---- emulator entries\n\
         template <class F> struct kiln_emu_arg;\n\
         template <class A> struct kiln_emu_arg<void(A)> { typedef A type; };\n",
    );
    for s in symbols {
        out.push_str(&format!(
            "extern \"C\" void kiln_emu_entry_{s}(const void* p) {{\n    \
             kiln_emu_arg<decltype({s})>::type a;\n    memcpy(&a, p, sizeof a);\n    {s}(a);\n}}\n\
             extern \"C\" unsigned long kiln_emu_args_{s}() {{ return sizeof(kiln_emu_arg<decltype({s})>::type); }}\n"
        ));
    }
    out
}

/// `extern __shared__ [__align__(n)] T name[];` as a pointer to the launch's dynamic
/// shared memory (a function-scope declaration, so a local pointer does).
fn dynamic_shared(line: &str) -> Option<String> {
    let (indent, rest) = line.split_at(line.len() - line.trim_start().len());
    let rest = rest.strip_prefix("extern __shared__")?.trim_start();
    let rest = match rest.strip_prefix("__align__(") {
        Some(r) => r.split_once(')')?.1.trim_start(),
        None => rest,
    };
    let decl = rest.split_once("[];")?.0.trim_end();
    let (ty, name) = decl.rsplit_once(char::is_whitespace)?;
    Some(format!(
        "{indent}{ty}* {name} = reinterpret_cast<{ty}*>(kiln_emu::dynamic_shared());"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_shared_arrays_become_pointers() {
        assert_eq!(
            dynamic_shared("    extern __shared__ __align__(16) unsigned char ad_tiles[];")
                .unwrap(),
            "    unsigned char* ad_tiles = reinterpret_cast<unsigned char*>(kiln_emu::dynamic_shared());"
        );
        assert_eq!(
            dynamic_shared("extern __shared__ float t[]; // x").unwrap(),
            "float* t = reinterpret_cast<float*>(kiln_emu::dynamic_shared());"
        );
        assert!(dynamic_shared("    __shared__ float red[32];").is_none());
    }
}
