//! The kernels of kiln-kernels-cuda and their variants: each [`Kernel`] is one `.cu` file
//! (the stems of `kiln_ir::Op::name`), compiled once per weight type or KV type it reads,
//! and every entry point of a variant has its own symbol (`matvec_q4_0_t8`,
//! `matmul_f16_mv8`, `attention_fp8_decode`), so that a profiler tells them apart.

use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;

use crate::matvec::{self, Epilogue};
use crate::mmq;
use crate::repack;

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
    MatMulGeGlu,
    RmsNormMatMulGeGlu,
    Add,
    SwiGlu,
    SelectRows,
    Rope,
    KvWrite,
    RopeKvWrite,
    Attention,
    // Ops of the families besides Llama's (Qwen 2's biases, Qwen 3's and Gemma 3's
    // QK-norm, Gemma 3's embedding scale, GeGLU and post-norms).
    AddBias,
    HeadRmsNorm,
    Scale,
    GeGlu,
    RmsNormAdd,
    /// The decode matvec of packed weights (matvec.rs; its own module per weight type).
    Matvec,
    /// The q8_1 activation quantizer the matvec reads (matvec.rs).
    Quantize,
    /// The prefill matmul of packed weights on the int8 tensor cores (mmq.rs; its own
    /// module per weight type, the matvec's arguments).
    Mmq,
}

impl Kernel {
    pub const ALL: [Kernel; 24] = [
        Kernel::Embed,
        Kernel::RmsNorm,
        Kernel::MatMul,
        Kernel::MatMulAdd,
        Kernel::MatMulSwiGlu,
        Kernel::RmsNormMatMul,
        Kernel::RmsNormMatMulSwiGlu,
        Kernel::MatMulGeGlu,
        Kernel::RmsNormMatMulGeGlu,
        Kernel::Add,
        Kernel::SwiGlu,
        Kernel::SelectRows,
        Kernel::Rope,
        Kernel::KvWrite,
        Kernel::RopeKvWrite,
        Kernel::Attention,
        Kernel::AddBias,
        Kernel::HeadRmsNorm,
        Kernel::Scale,
        Kernel::GeGlu,
        Kernel::RmsNormAdd,
        Kernel::Matvec,
        Kernel::Quantize,
        Kernel::Mmq,
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
            Kernel::MatMulGeGlu => "matmul_geglu",
            Kernel::RmsNormMatMulGeGlu => "rmsnorm_matmul_geglu",
            Kernel::Add => "add",
            Kernel::SwiGlu => "swiglu",
            Kernel::SelectRows => "select_rows",
            Kernel::Rope => "rope",
            Kernel::KvWrite => "kv_write",
            Kernel::RopeKvWrite => "rope_kv_write",
            Kernel::Attention => "attention",
            Kernel::AddBias => "add_bias",
            Kernel::HeadRmsNorm => "head_rmsnorm",
            Kernel::Scale => "scale",
            Kernel::GeGlu => "geglu",
            Kernel::RmsNormAdd => "rmsnorm_add",
            Kernel::Matvec => "matvec",
            Kernel::Quantize => "quantize_q8_1",
            Kernel::Mmq => "matmul_mmq",
        }
    }

    /// Its `.cu` file under src/cuda.
    pub fn file(self) -> String {
        match self {
            Kernel::Matvec | Kernel::Quantize => format!("mv/{}.cu", self.stem()),
            _ => format!("{}.cu", self.stem()),
        }
    }

    /// One of the matmul family (matmul_core.cuh).
    pub fn is_matmul(self) -> bool {
        matches!(
            self,
            Kernel::MatMul
                | Kernel::MatMulAdd
                | Kernel::MatMulSwiGlu
                | Kernel::RmsNormMatMul
                | Kernel::RmsNormMatMulSwiGlu
                | Kernel::MatMulGeGlu
                | Kernel::RmsNormMatMulGeGlu
        )
    }

    /// Reads a weight matrix: its variants are per weight type.
    pub fn takes_weight(self) -> bool {
        matches!(self, Kernel::Embed | Kernel::Matvec | Kernel::Mmq) || self.is_matmul()
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
    /// The split-K paged decode attention (attention_decode.cu).
    Decode,
    /// The merge of the decode splits (attention_combine.cu).
    Combine,
    /// The tensor-core prefill attention of FP8 caches (attention_prefill.cu) for head
    /// sizes up to `PREFILL_HEAD_DIMS[i]`.
    Prefill(u8),
    /// The same on Hopper's warpgroup MMA (attention_prefill_wgmma.cu, sm_90a; a trap
    /// elsewhere): the host launches it on compute capability 9.0 only.
    PrefillWgmma(u8),
    /// quantize_q8_1 and rmsnorm_quantize_q8_1 (matvec.rs).
    Quantize,
    RmsNormQuantize,
    /// The matvec of (tile, epilogue) `matvec::variants().nth(i)`.
    Matvec(u8),
    /// The int8 tensor-core matmul of (tile, epilogue) `mmq::variants().nth(i)`.
    Mmq(u8),
    /// The warpgroup-MMA matmul of epilogue `Epilogue::ALL[i]` (matmul_wgmma.cu, in the
    /// int8 matmul's module; sm_90a, a trap elsewhere).
    MmqWgmma(u8),
}

/// The matvec entries of a weight type, in `matvec::variants()` order.
const MATVEC_ENTRIES: [Entry; MATVEC_VARIANTS] = {
    let mut e = [Entry::Main; MATVEC_VARIANTS];
    let mut i = 0;
    while i < MATVEC_VARIANTS {
        e[i] = Entry::Matvec(i as u8);
        i += 1;
    }
    e
};

/// Tiles × epilogues of a weight type's matvec module (no SwiGLU or GeGLU at 32 tokens).
const MATVEC_VARIANTS: usize = matvec::TILES.len() * 4 - 2;

/// Tiles × epilogues of a weight type's int8 tensor-core module (no GLUs at 128 tokens).
const MMQ_VARIANTS: usize = mmq::TILES.len() * 4 - 2;

/// An int8 tensor-core module's entries: its `n` int8 matmuls, then the warpgroup-MMA
/// matmul's four epilogues.
const fn mmq_module_entries<const L: usize>(n: usize) -> [Entry; L] {
    let mut e = [Entry::Main; L];
    let mut i = 0;
    while i < n {
        e[i] = Entry::Mmq(i as u8);
        i += 1;
    }
    while i < L {
        e[i] = Entry::MmqWgmma((i - n) as u8);
        i += 1;
    }
    e
}

/// The modules of the types with the 128-token tile, and of those without (8 entries).
const MMQ_WIDE_ENTRIES: [Entry; MMQ_VARIANTS + 4] = mmq_module_entries(MMQ_VARIANTS);
const MMQ_NARROW_ENTRIES: [Entry; MMQ_VARIANTS + 2] = mmq_module_entries(MMQ_VARIANTS - 2);

impl Entry {
    /// Entry indices ([`Entry::index`]) run below this.
    pub const COUNT: usize = 6 + if MATVEC_VARIANTS > MMQ_VARIANTS + 4 {
        MATVEC_VARIANTS
    } else {
        MMQ_VARIANTS + 4
    };

    /// The matvec entry of a tile and epilogue.
    pub fn matvec(tile: u32, epilogue: Epilogue) -> Option<Entry> {
        let i = matvec::variants().position(|v| v == (tile, epilogue))?;
        Some(Entry::Matvec(i as u8))
    }

    /// The int8 tensor-core matmul's entry of a tile and epilogue.
    pub fn mmq(tile: u32, epilogue: Epilogue) -> Option<Entry> {
        let i = mmq::variants().position(|v| v == (tile, epilogue))?;
        Some(Entry::Mmq(i as u8))
    }

    /// The warpgroup-MMA matmul's entry of an epilogue.
    pub fn mmq_wgmma(epilogue: Epilogue) -> Entry {
        let i = Epilogue::ALL
            .iter()
            .position(|&e| e == epilogue)
            .unwrap_or(0);
        Entry::MmqWgmma(i as u8)
    }

    /// The macro a kernel file names this entry by (the source header defines it).
    pub fn macro_name(self) -> &'static str {
        match self {
            Entry::Main => "KILN_MAIN",
            Entry::Decode => "KILN_DECODE",
            Entry::Combine => "KILN_COMBINE",
            Entry::Prefill(i) => ["KILN_PREFILL64", "KILN_PREFILL128", "KILN_PREFILL256"]
                .get(i as usize)
                .copied()
                .unwrap_or("KILN_UNUSED"),
            Entry::PrefillWgmma(i) => [
                "KILN_PREFILL_WG64",
                "KILN_PREFILL_WG128",
                "KILN_PREFILL_WG256",
            ]
            .get(i as usize)
            .copied()
            .unwrap_or("KILN_UNUSED"),
            // Their modules name their entries themselves (matvec.rs).
            Entry::Quantize
            | Entry::RmsNormQuantize
            | Entry::Matvec(_)
            | Entry::Mmq(_)
            | Entry::MmqWgmma(_) => "KILN_UNUSED",
        }
    }

    /// A dense index below [`Entry::COUNT`] (a module's function table): distinct among
    /// the entries of one variant (a matvec module and an int8 tensor-core module share
    /// the indices from 6 on, as no variant has both).
    pub fn index(self) -> usize {
        match self {
            Entry::Main => 0,
            Entry::Decode => 1,
            Entry::Combine => 2,
            // Attention variants have no quantize entries: 3 to 5 serve both.
            Entry::Prefill(i) => 3 + i as usize,
            // Attention variants have no matvec entries either: 6 to 8.
            Entry::PrefillWgmma(i) => 6 + i as usize,
            Entry::Quantize => 3,
            Entry::RmsNormQuantize => 4,
            Entry::Matvec(i) => 6 + i as usize,
            Entry::Mmq(i) => 6 + i as usize,
            Entry::MmqWgmma(i) => 6 + MMQ_VARIANTS + i as usize,
        }
    }
}

/// The head sizes of the prefill attention's entries ([`Entry::Prefill`]): a head size is
/// padded to the first at least as large.
pub const PREFILL_HEAD_DIMS: [u32; 3] = [64, 128, 256];

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
        if self.kernel == Kernel::Quantize {
            return self.kernel.stem().into();
        }
        let dtype = match (self.weight, self.kv) {
            (Some(w), _) => w.name(),
            (None, Some(kv)) => kv.name(),
            (None, None) => "f32",
        };
        format!("{}_{dtype}", self.kernel.stem())
    }

    /// Whether the variant reads its weight in the packed layout (crate::repack): the
    /// matvec, the int8 tensor-core matmul and the embedding of a packed type.
    pub fn packed(&self) -> bool {
        self.kernel.takes_weight() && self.weight.is_some_and(repack::is_packed)
    }

    /// Whether the variant has the tensor-core prefill attention [`Entry::Prefill`]: FP8
    /// KV caches (f16 q and P would round what the F16 cache's f32 kernel does not).
    pub fn has_prefill(&self) -> bool {
        self.kernel == Kernel::Attention && self.kv == Some(KvDtype::F8E4M3)
    }

    /// The entry points of the variant's module.
    pub fn entries(&self) -> &'static [Entry] {
        if self.kernel == Kernel::Matvec {
            &MATVEC_ENTRIES
        } else if self.kernel == Kernel::Mmq {
            if mmq::variant_count(self.weight.unwrap_or(DType::Q4_0)) == MMQ_VARIANTS {
                &MMQ_WIDE_ENTRIES
            } else {
                &MMQ_NARROW_ENTRIES
            }
        } else if self.kernel == Kernel::Quantize {
            &[Entry::Quantize, Entry::RmsNormQuantize]
        } else if self.packed() && self.kernel.is_matmul() {
            // The matvec and the int8 tensor-core matmul run a packed type's matmuls.
            &[]
        } else if self.has_prefill() {
            &[
                Entry::Main,
                Entry::Decode,
                Entry::Combine,
                Entry::Prefill(0),
                Entry::Prefill(1),
                Entry::Prefill(2),
                Entry::PrefillWgmma(0),
                Entry::PrefillWgmma(1),
                Entry::PrefillWgmma(2),
            ]
        } else if self.kernel == Kernel::Attention {
            &[Entry::Main, Entry::Decode, Entry::Combine]
        } else {
            &[Entry::Main]
        }
    }

    /// The symbol of entry `e`: the variant's name, `_mv8` for the matmuls'
    /// matrix-vector kernel (tiles of 8 tokens), `_decode`, `_combine`, `_prefill` for
    /// attention's.
    pub fn symbol(&self, e: Entry) -> String {
        let name = self.name();
        match e {
            Entry::Main if self.kernel.is_matmul() => format!("{name}_mv8"),
            Entry::Main => name,
            Entry::Decode => format!("{name}_decode"),
            Entry::Combine => format!("{name}_combine"),
            Entry::Prefill(i) => {
                let hd = PREFILL_HEAD_DIMS.get(i as usize).copied().unwrap_or(0);
                format!("{name}_prefill_h{hd}")
            }
            Entry::PrefillWgmma(i) => {
                let hd = PREFILL_HEAD_DIMS.get(i as usize).copied().unwrap_or(0);
                format!("{name}_prefill_wg_h{hd}")
            }
            Entry::Quantize => matvec::QUANTIZE_ENTRY.into(),
            Entry::RmsNormQuantize => matvec::RMSNORM_QUANTIZE_ENTRY.into(),
            Entry::Matvec(i) => {
                let (tile, e) = matvec::variants()
                    .nth(i as usize)
                    .unwrap_or((1, Epilogue::Store));
                matvec::entry(self.weight.unwrap_or(DType::Q4_0), tile, e)
            }
            Entry::Mmq(i) => {
                let (tile, e) = mmq::variants()
                    .nth(i as usize)
                    .unwrap_or((64, Epilogue::Store));
                mmq::entry(self.weight.unwrap_or(DType::Q4_0), tile, e)
            }
            Entry::MmqWgmma(i) => mmq::wgmma_entry(
                self.weight.unwrap_or(DType::Q4_0),
                Epilogue::ALL[i as usize % Epilogue::ALL.len()],
            ),
        }
    }
}

/// The symbol of the greedy LM head (argmax.cu).
pub const ARGMAX_SYMBOL: &str = "argmax_f32";

/// The symbol of the device top-k (top_k.cu).
pub const TOP_K_SYMBOL: &str = "top_k_f32";
