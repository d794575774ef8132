//! The one place where the environment variables that configure backends are read: a
//! function per backend builds its options from them, and the registry's openers use
//! them. The backend crates read no environment; their options' `Default` is what an
//! unset variable means, so an embedder who builds options itself gets the same defaults
//! without any variable.
//!
//! | variable | backend | meaning |
//! |---|---|---|
//! | `KILN_THREADS=N` | cpu | worker threads, the caller included (default: one per core) |
//! | `KILN_WGPU_ADAPTER=any` | wgpu | take a CPU adapter (lavapipe) when there is no GPU |
//! | `KILN_WGPU_SUBGROUPS=0` | wgpu | workgroup-memory reductions instead of subgroups |
//! | `KILN_WGPU_F16=0` | wgpu | f32 arithmetic everywhere, even where the device has shader-f16 |
//! | `KILN_VULKAN_DEVICE=any` | vulkan | take a CPU device (lavapipe) when there is no GPU |
//! | `KILN_VULKAN_SUBGROUPS=0` | vulkan | workgroup-memory reductions instead of subgroups |
//! | `KILN_VULKAN_SUBGROUP_SIZE=N` | vulkan | the subgroup size to require (size control) |
//! | `KILN_VULKAN_F16=0` | vulkan | f32 arithmetic everywhere, even where the device has shaderFloat16 |
//! | `KILN_VULKAN_COOP=0` | vulkan | the prefill GEMM without cooperative matrices, even where the device has them |
//! | `KILN_VULKAN_COOP=twin` | vulkan | the prefill GEMM's cooperative-matrix kernel with the matrix operations in plain WGSL (any f16 device; tests) |
//! | `KILN_WEIGHTS_BUFFER_BYTES=N` | wgpu, vulkan | weights buffers of at most N bytes (the split path on any device) |
//! | `KILN_CUDA_DEVICE=N` | cuda | the device ordinal (default 0) |
//! | `KILN_NVRTC_PATH=FILE` | cuda | the NVRTC library to load first |
//! | `KILN_CUDA_GRAPHS=0` | cuda | no CUDA graphs for decode steps |
//! | `KILN_CUDA_DECODE_ATTENTION=0` | cuda | one attention block per (head, token) always |
//! | `KILN_CUDA_MMA=0` | cuda | no tensor-core matmul or prefill attention |
//! | `KILN_CUDA_WGMMA=1` | cuda | on compute capability 9.0: sm_90a modules, the wgmma prefill attention and prefill matmul (opt-in until a GPU has run it), not sm_90's mma.sync ones |
//! | `KILN_DEBUG` (set) | wgpu, vulkan, cuda | print each kernel built and each launch |
//! | `KILN_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME` | vulkan, cuda | the kernel cache's folder |
//!
//! The CUDA emulator (backends/cuda-emu: the CUDA kernels compiled as C++ for the tests;
//! the registry does not open it) reads its own, as build tools do: `KILN_CXX` / `CXX` (its
//! compiler), `KILN_CUDA_EMU_CACHE` (where compiled modules are kept) and
//! `KILN_CUDA_EMU_DEBUG` (print each launch).
//!
//! The kernel cache's rules (`$KILN_CACHE_DIR/<backend>`, set but empty for none, else
//! `$XDG_CACHE_HOME/kiln/<backend>`, else `~/.cache/kiln/<backend>`) are written once, in
//! `kiln_gpu_host::cache::Cache::from_env_values`.

/// Whether `name` is set to exactly `value`.
#[cfg(any(
    feature = "backend-wgpu",
    feature = "backend-vulkan",
    feature = "backend-cuda"
))]
fn is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

/// `name` parsed, when it is set and parses.
#[cfg(any(
    feature = "backend-cpu",
    feature = "backend-wgpu",
    feature = "backend-vulkan",
    feature = "backend-cuda"
))]
fn parsed<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Whether the debug prints are asked for.
#[cfg(any(
    feature = "backend-wgpu",
    feature = "backend-vulkan",
    feature = "backend-cuda"
))]
fn debug() -> bool {
    std::env::var_os("KILN_DEBUG").is_some()
}

#[cfg(feature = "backend-cpu")]
pub fn cpu_options() -> kiln_backend_cpu::CpuOptions {
    kiln_backend_cpu::CpuOptions {
        threads: parsed::<usize>("KILN_THREADS").filter(|&n| n > 0),
    }
}

#[cfg(feature = "backend-wgpu")]
pub fn wgpu_options() -> kiln_backend_wgpu::WgslOptions {
    kiln_backend_wgpu::WgslOptions {
        allow_cpu: is("KILN_WGPU_ADAPTER", "any"),
        subgroups: !is("KILN_WGPU_SUBGROUPS", "0"),
        shader_f16: !is("KILN_WGPU_F16", "0"),
        debug: debug(),
        max_weights_buffer: parsed("KILN_WEIGHTS_BUFFER_BYTES"),
        // No size control, no disk cache on wgpu.
        ..Default::default()
    }
}

#[cfg(feature = "backend-vulkan")]
pub fn vulkan_options() -> kiln_backend_vulkan::WgslOptions {
    let [dir, xdg, home] = cache_vars();
    kiln_backend_vulkan::WgslOptions {
        allow_cpu: is("KILN_VULKAN_DEVICE", "any"),
        subgroups: !is("KILN_VULKAN_SUBGROUPS", "0"),
        subgroup_size: parsed("KILN_VULKAN_SUBGROUP_SIZE"),
        shader_f16: !is("KILN_VULKAN_F16", "0"),
        coop_matrix: match std::env::var("KILN_VULKAN_COOP").as_deref() {
            Ok("0") => kiln_backend_vulkan::CoopMatrix::Off,
            Ok("twin") => kiln_backend_vulkan::CoopMatrix::Twin,
            _ => kiln_backend_vulkan::CoopMatrix::Auto,
        },
        cache: kiln_backend_vulkan::Cache::from_env_values(
            "vulkan",
            dir.as_deref(),
            xdg.as_deref(),
            home.as_deref(),
        ),
        debug: debug(),
        max_weights_buffer: parsed("KILN_WEIGHTS_BUFFER_BYTES"),
    }
}

#[cfg(feature = "backend-cuda")]
pub fn cuda_options() -> kiln_backend_cuda::CudaOptions {
    let [dir, xdg, home] = cache_vars();
    kiln_backend_cuda::CudaOptions {
        device: parsed("KILN_CUDA_DEVICE").unwrap_or(0),
        nvrtc_path: std::env::var_os("KILN_NVRTC_PATH")
            .filter(|p| !p.is_empty())
            .map(Into::into),
        cache: kiln_backend_cuda::Cache::from_env_values(
            "cuda",
            dir.as_deref(),
            xdg.as_deref(),
            home.as_deref(),
        ),
        graphs: !is("KILN_CUDA_GRAPHS", "0"),
        decode_attention: !is("KILN_CUDA_DECODE_ATTENTION", "0"),
        tensor_cores: !is("KILN_CUDA_MMA", "0"),
        wgmma: is("KILN_CUDA_WGMMA", "1"),
        debug: debug(),
    }
}

/// `KILN_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME`: what the kernel cache's folder comes from.
#[cfg(any(feature = "backend-vulkan", feature = "backend-cuda"))]
fn cache_vars() -> [Option<std::ffi::OsString>; 3] {
    ["KILN_CACHE_DIR", "XDG_CACHE_HOME", "HOME"].map(std::env::var_os)
}
