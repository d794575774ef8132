//! The kernels of kiln-kernels-cuda and their variants: each [`Kernel`] is one `.cu` file
//! (the stems of `kiln_ir::Op::name`), compiled once per weight type or KV type it reads,
//! and every entry point of a variant has its own symbol (`matmul_q4_0_mv8`,
//! `attention_fp8_decode`), so that a profiler tells them apart.

use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;

/// A kernel file: one fused op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Embed,
    RmsNorm,
    MatMul,
    MatMulAdd,
    MatMulSwiGlu,
    RmsNormMatMul,
    RmsNormMatMulSwiGlu,
    Add,
    SwiGlu,
    SelectRows,
    Rope,
    KvWrite,
    RopeKvWrite,
    Attention,
}

impl Kernel {
    pub const ALL: [Kernel; 14] = [
        Kernel::Embed,
        Kernel::RmsNorm,
        Kernel::MatMul,
        Kernel::MatMulAdd,
        Kernel::MatMulSwiGlu,
        Kernel::RmsNormMatMul,
        Kernel::RmsNormMatMulSwiGlu,
        Kernel::Add,
        Kernel::SwiGlu,
        Kernel::SelectRows,
        Kernel::Rope,
        Kernel::KvWrite,
        Kernel::RopeKvWrite,
        Kernel::Attention,
    ];

    /// The stem of its `.cu` file (the op's name).
    pub fn stem(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::RmsNorm => "rmsnorm",
            Kernel::MatMul => "matmul",
            Kernel::MatMulAdd => "matmul_add",
            Kernel::MatMulSwiGlu => "matmul_swiglu",
            Kernel::RmsNormMatMul => "rmsnorm_matmul",
            Kernel::RmsNormMatMulSwiGlu => "rmsnorm_matmul_swiglu",
            Kernel::Add => "add",
            Kernel::SwiGlu => "swiglu",
            Kernel::SelectRows => "select_rows",
            Kernel::Rope => "rope",
            Kernel::KvWrite => "kv_write",
            Kernel::RopeKvWrite => "rope_kv_write",
            Kernel::Attention => "attention",
        }
    }

    /// One of the matmul family (matmul_core.cuh and matmul_mma.cu).
    pub fn is_matmul(self) -> bool {
        matches!(
            self,
            Kernel::MatMul
                | Kernel::MatMulAdd
                | Kernel::MatMulSwiGlu
                | Kernel::RmsNormMatMul
                | Kernel::RmsNormMatMulSwiGlu
        )
    }

    /// Reads a weight matrix: its variants are per weight type.
    pub fn takes_weight(self) -> bool {
        self == Kernel::Embed || self.is_matmul()
    }

    /// Reads or writes KV pages: its variants are per KV type.
    pub fn takes_kv(self) -> bool {
        matches!(
            self,
            Kernel::KvWrite | Kernel::RopeKvWrite | Kernel::Attention
        )
    }
}

/// An entry point of a variant's module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The kernel (a matmul's matrix-vector kernel, tiles of 8 tokens).
    Main,
    /// The tensor-core matmul of prefill (matmul_mma.cu).
    Mma,
    /// The split-K paged decode attention (attention_decode.cu).
    Decode,
    /// The merge of the decode splits (attention_combine.cu).
    Combine,
    /// The tensor-core prefill attention of FP8 caches (attention_prefill.cu).
    Prefill,
}

impl Entry {
    pub const ALL: [Entry; 5] = [
        Entry::Main,
        Entry::Mma,
        Entry::Decode,
        Entry::Combine,
        Entry::Prefill,
    ];

    /// The macro a kernel file names this entry by (the source header defines it).
    pub fn macro_name(self) -> &'static str {
        match self {
            Entry::Main => "KILN_MAIN",
            Entry::Mma => "KILN_MMA",
            Entry::Decode => "KILN_DECODE",
            Entry::Combine => "KILN_COMBINE",
            Entry::Prefill => "KILN_PREFILL",
        }
    }

    /// Index in [`Entry::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A kernel compiled for one weight type and KV type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub kernel: Kernel,
    /// The weight type of a matmul or embedding (None for other kernels).
    pub weight: Option<DType>,
    /// The KV cache type of the KV kernels (None for other kernels).
    pub kv: Option<KvDtype>,
}

impl Variant {
    /// `<stem>_<dtype>`: the weight type, the KV type, or `f32` (the activations).
    pub fn name(&self) -> String {
        let dtype = match (self.weight, self.kv) {
            (Some(w), _) => w.name(),
            (None, Some(kv)) => kv.name(),
            (None, None) => "f32",
        };
        format!("{}_{dtype}", self.kernel.stem())
    }

    /// Whether the variant has the tensor-core matmul [`Entry::Mma`]: the matmuls of
    /// quantized weights (weights/<dtype>.cuh: MM_TENSOR_CORES). F32, F16 and BF16
    /// weights keep exact f32 products: f16 operands would round what their matmuls do
    /// not.
    pub fn has_tensor_cores(&self) -> bool {
        self.kernel.is_matmul() && self.weight.is_some_and(|w| w.is_quantized())
    }

    /// Whether the variant has the tensor-core prefill attention [`Entry::Prefill`]: FP8
    /// KV caches (f16 q and P would round what the F16 cache's f32 kernel does not).
    pub fn has_prefill(&self) -> bool {
        self.kernel == Kernel::Attention && self.kv == Some(KvDtype::F8E4M3)
    }

    /// The entry points of the variant's module.
    pub fn entries(&self) -> &'static [Entry] {
        if self.has_tensor_cores() {
            &[Entry::Main, Entry::Mma]
        } else if self.has_prefill() {
            &[Entry::Main, Entry::Decode, Entry::Combine, Entry::Prefill]
        } else if self.kernel == Kernel::Attention {
            &[Entry::Main, Entry::Decode, Entry::Combine]
        } else {
            &[Entry::Main]
        }
    }

    /// The symbol of entry `e`: the variant's name, `_mv8` / `_mma` for the matmuls'
    /// matrix-vector (tiles of 8 tokens) and tensor-core kernels, `_decode`, `_combine`,
    /// `_prefill` for attention's.
    pub fn symbol(&self, e: Entry) -> String {
        let name = self.name();
        match e {
            Entry::Main if self.kernel.is_matmul() => format!("{name}_mv8"),
            Entry::Main => name,
            Entry::Mma => format!("{name}_mma"),
            Entry::Decode => format!("{name}_decode"),
            Entry::Combine => format!("{name}_combine"),
            Entry::Prefill => format!("{name}_prefill"),
        }
    }
}

/// The symbol of the greedy LM head (argmax.cu).
pub const ARGMAX_SYMBOL: &str = "argmax_f32";
