//! What can go wrong building or running a module on the emulator.

/// An emulator error: the compiler, the loader, or a kernel's run.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// No host C++ compiler (tests skip on this one).
    #[error("no C++ compiler ({compiler}): {reason}")]
    NoCompiler { compiler: String, reason: String },
    #[error("compiling module {module} for the host: {stderr}")]
    Compile { module: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: libloading::Error,
    },
    #[error("{symbol}: not an entry of module {module}")]
    NoEntry { symbol: String, module: String },
    #[error("{symbol}: {got} bytes of arguments, its struct has {want}")]
    ArgsSize {
        symbol: String,
        got: usize,
        want: usize,
    },
    #[error("out of host memory for a buffer of {bytes} bytes")]
    OutOfMemory { bytes: usize },
    /// A graph or timer call out of its order (a capture ended that was not begun).
    #[error("out of order: {0}")]
    OutOfOrder(&'static str),
    #[error("{symbol} grid {grid:?} block {block:?}: {message}")]
    Kernel {
        symbol: String,
        grid: [u32; 3],
        block: [u32; 3],
        message: String,
    },
}

impl EmuError {
    /// Whether the host cannot build modules at all (no compiler): a reason to skip.
    pub fn is_no_compiler(&self) -> bool {
        matches!(self, EmuError::NoCompiler { .. })
    }
}
