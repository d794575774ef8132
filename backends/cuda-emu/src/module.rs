//! A kernel module on the emulator: its host library loaded, each entry's trampoline and
//! argument size looked up, and launches (the blocks one after another, each block's
//! threads as fibers: src/host/runtime.h).

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_kernels_cuda::Variant;
use kiln_kernels_cuda::sources::{self, argmax_source, top_k_source};
use kiln_kernels_cuda::variant::{ARGMAX_SYMBOL, TOP_K_SYMBOL};

use crate::compile::build;
use crate::error::EmuError;
use crate::source::{ARCH, host_source};

/// A kernel's trampoline: copies the argument bytes into its struct and runs the kernel
/// as the current thread of the current block.
type Entry = unsafe extern "C" fn(*const u8);
type ArgsSize = unsafe extern "C" fn() -> std::os::raw::c_ulong;
type Launch = unsafe extern "C" fn(
    Entry,
    *const u8,
    *const u32,
    *const u32,
    u32,
    u32,
) -> *const std::os::raw::c_char;

/// Bytes of each fiber's stack (the kernels keep their accumulators there).
const STACK_BYTES: u32 = 256 * 1024;

/// One launch at a time in the process: a module's runtime state (the running block,
/// its fibers, its `__shared__` statics) is global to its library.
static LAUNCH: Mutex<()> = Mutex::new(());

/// A compiled module and its entries.
pub struct Module {
    name: String,
    launch: Launch,
    /// symbol → (trampoline, size of its argument struct)
    entries: HashMap<String, (Entry, usize)>,
    /// Keeps the code above mapped; last, so it is dropped after the pointers.
    _lib: libloading::Library,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Module {
    /// Compile (or take from the cache) and load the module of CUDA `source` whose
    /// entries are `symbols`, emulating compute capability `arch` (e.g. 900).
    pub fn build(
        name: &str,
        source: &str,
        symbols: &[String],
        arch: u32,
    ) -> Result<Module, EmuError> {
        Module::build_target(name, source, symbols, arch, false)
    }

    /// [`Module::build`] with the architecture-specific features of `arch` when
    /// `specific` (900: sm_90a's wgmma).
    pub fn build_target(
        name: &str,
        source: &str,
        symbols: &[String],
        arch: u32,
        specific: bool,
    ) -> Result<Module, EmuError> {
        let path = build(name, &host_source(source, symbols, arch, specific))?;
        let load = |source| EmuError::Load {
            path: path.display().to_string(),
            source,
        };
        // SAFETY: the library is one this crate just compiled from its own runtime and a
        // kiln kernel module; loading it runs no initialisers beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(load)?;
        // SAFETY: kiln_emu_launch is defined by runtime.h with exactly the `Launch` type.
        let launch: Launch = *unsafe { lib.get::<Launch>(b"kiln_emu_launch\0") }.map_err(load)?;
        let mut entries = HashMap::new();
        for s in symbols {
            // SAFETY: source.rs defines both functions per symbol with these types.
            let entry: Entry =
                *unsafe { lib.get::<Entry>(format!("kiln_emu_entry_{s}\0").as_bytes()) }
                    .map_err(load)?;
            // SAFETY: as above.
            let size: ArgsSize =
                *unsafe { lib.get::<ArgsSize>(format!("kiln_emu_args_{s}\0").as_bytes()) }
                    .map_err(load)?;
            // SAFETY: a pure function returning a sizeof.
            let bytes = unsafe { size() } as usize;
            entries.insert(s.clone(), (entry, bytes));
        }
        Ok(Module {
            name: name.into(),
            launch,
            entries,
            _lib: lib,
        })
    }

    /// The module of a kernel variant, every entry of it (sm_90).
    pub fn variant(v: &Variant) -> Result<Module, EmuError> {
        Module::variant_for_arch(v, ARCH, false)
    }

    /// The module of a kernel variant for compute capability `arch` (800: the paths of
    /// an A100, without the FP8 conversions of sm_89), with its specific features
    /// (`sm_90a`) when `specific`.
    pub fn variant_for_arch(v: &Variant, arch: u32, specific: bool) -> Result<Module, EmuError> {
        let source = sources::source(v).ok_or_else(|| EmuError::NoEntry {
            symbol: v.name(),
            module: "(no source for this variant)".into(),
        })?;
        let symbols: Vec<String> = v.entries().iter().map(|&e| v.symbol(e)).collect();
        let a = if specific { "a" } else { "" };
        Module::build_target(
            &format!("{}-sm{arch}{a}", v.name()),
            &source,
            &symbols,
            arch,
            specific,
        )
    }

    /// The greedy LM head (argmax.cu).
    pub fn argmax() -> Result<Module, EmuError> {
        Module::build(
            "argmax",
            &argmax_source(),
            &[ARGMAX_SYMBOL.to_string()],
            ARCH,
        )
    }

    /// The sampler's top-k (top_k.cu).
    pub fn top_k() -> Result<Module, EmuError> {
        Module::build("top_k", &top_k_source(), &[TOP_K_SYMBOL.to_string()], ARCH)
    }

    /// Launch `symbol` over `grid` blocks of `block` threads with `shared_bytes` of
    /// dynamic shared memory and its argument struct's bytes `args`; returns when every
    /// block has run.
    ///
    /// # Safety
    /// Every address in `args` is a device address of this emulator, that is, a host
    /// address: it must point to live memory of at least the bytes the kernel reads or
    /// writes there, which nothing else touches during the call.
    pub unsafe fn launch(
        &self,
        symbol: &str,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        args: &[u8],
    ) -> Result<(), EmuError> {
        let &(entry, want) = self.entries.get(symbol).ok_or_else(|| EmuError::NoEntry {
            symbol: symbol.into(),
            module: self.name.clone(),
        })?;
        if args.len() != want {
            return Err(EmuError::ArgsSize {
                symbol: symbol.into(),
                got: args.len(),
                want,
            });
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let _one = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `entry` and `launch` come from this module's library (alive as long
        // as self); the args hold `want` bytes; grid and block are 3 words each; the
        // caller vouches for the addresses inside the args.
        let err = unsafe {
            (self.launch)(
                entry,
                args.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                shared_bytes,
                STACK_BYTES,
            )
        };
        if err.is_null() {
            return Ok(());
        }
        // SAFETY: a NUL-terminated string in the library's static storage, valid until
        // the next launch (we hold the lock).
        let message = unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        Err(EmuError::Kernel {
            symbol: symbol.into(),
            grid,
            block,
            message,
        })
    }
}
