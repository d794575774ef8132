//! The CUDA sources, embedded as text, and how a kernel variant is assembled from them:
//! a header of defines (the KV type, the symbol of each entry point), the C declaration
//! of the kernel's argument struct ([`crate::args`]), then the op's file with every
//! `#include "x"` replaced by the text of `x` (once per source), `weights.cuh` standing
//! for the variant's weight dtype. NVRTC gets one self-contained string: no include
//! paths, no toolkit.

use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;

use crate::args::{
    ArgmaxArgs, BinaryArgs, EmbedArgs, KernelArgs, KvArgs, MatmulArgs, RmsNormArgs, RopeArgs,
    SelectRowsArgs, TopKArgs,
};
use crate::matvec::{self, MatvecArgs, QuantizeArgs};
use crate::variant::{ARGMAX_SYMBOL, Kernel, TOP_K_SYMBOL, Variant};

/// `(name, text)` of every source file; names are paths under `src/cuda`.
pub const FILES: &[(&str, &str)] = &[
    ("ptx.cuh", include_str!("cuda/ptx.cuh")),
    ("prelude.cuh", include_str!("cuda/prelude.cuh")),
    (
        "weights/common.cuh",
        include_str!("cuda/weights/common.cuh"),
    ),
    ("weights/f32.cuh", include_str!("cuda/weights/f32.cuh")),
    ("weights/f16.cuh", include_str!("cuda/weights/f16.cuh")),
    ("weights/bf16.cuh", include_str!("cuda/weights/bf16.cuh")),
    ("matmul_core.cuh", include_str!("cuda/matmul_core.cuh")),
    ("rope_common.cuh", include_str!("cuda/rope_common.cuh")),
    ("kv_common.cuh", include_str!("cuda/kv_common.cuh")),
    ("kv_store.cuh", include_str!("cuda/kv_store.cuh")),
    // One file per op, named like the op (kiln_ir::Op::name) and its WGSL twin.
    ("embed.cu", include_str!("cuda/embed.cu")),
    (
        "rmsnorm_common.cuh",
        include_str!("cuda/rmsnorm_common.cuh"),
    ),
    ("rmsnorm.cu", include_str!("cuda/rmsnorm.cu")),
    ("matmul.cu", include_str!("cuda/matmul.cu")),
    ("matmul_add.cu", include_str!("cuda/matmul_add.cu")),
    ("matmul_swiglu.cu", include_str!("cuda/matmul_swiglu.cu")),
    ("rmsnorm_matmul.cu", include_str!("cuda/rmsnorm_matmul.cu")),
    (
        "rmsnorm_matmul_swiglu.cu",
        include_str!("cuda/rmsnorm_matmul_swiglu.cu"),
    ),
    ("add.cu", include_str!("cuda/add.cu")),
    ("swiglu.cu", include_str!("cuda/swiglu.cu")),
    ("select_rows.cu", include_str!("cuda/select_rows.cu")),
    ("rope.cu", include_str!("cuda/rope.cu")),
    ("kv_write.cu", include_str!("cuda/kv_write.cu")),
    ("rope_kv_write.cu", include_str!("cuda/rope_kv_write.cu")),
    ("attention.cu", include_str!("cuda/attention.cu")),
    (
        "attention_decode.cu",
        include_str!("cuda/attention_decode.cu"),
    ),
    (
        "attention_combine.cu",
        include_str!("cuda/attention_combine.cu"),
    ),
    (
        "attention_prefill.cu",
        include_str!("cuda/attention_prefill.cu"),
    ),
    (
        "attention_prefill_wgmma.cu",
        include_str!("cuda/attention_prefill_wgmma.cu"),
    ),
    // The families' ops besides Llama's.
    ("add_bias.cu", include_str!("cuda/add_bias.cu")),
    ("head_rmsnorm.cu", include_str!("cuda/head_rmsnorm.cu")),
    ("scale.cu", include_str!("cuda/scale.cu")),
    ("gelu.cuh", include_str!("cuda/gelu.cuh")),
    ("geglu.cu", include_str!("cuda/geglu.cu")),
    ("matmul_geglu.cu", include_str!("cuda/matmul_geglu.cu")),
    (
        "rmsnorm_matmul_geglu.cu",
        include_str!("cuda/rmsnorm_matmul_geglu.cu"),
    ),
    ("rmsnorm_add.cu", include_str!("cuda/rmsnorm_add.cu")),
    // Not an op of the plan: the greedy LM head (Backend::read_argmax).
    ("argmax.cu", include_str!("cuda/argmax.cu")),
    // Nor is the sampler's top-k (Backend::read_top_k).
    ("top_k.cu", include_str!("cuda/top_k.cu")),
];

/// The text of a source file by name.
pub fn file(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .chain(crate::matvec::FILES)
        .chain(crate::mmq::FILES)
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The weight types the CUDA kernels read: a `weights/<dtype>.cuh` each for the float
/// types, the quantized ones packed at load (`mv/unit_<dtype>.cuh`, [`crate::repack`]).
pub const WEIGHT_DTYPES: [DType; 11] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// The KV cache types.
pub const KV_DTYPES: [KvDtype; 2] = [KvDtype::F8E4M3, KvDtype::F16];

/// The C declaration of the argument struct a kernel takes.
pub fn args_decl(k: Kernel) -> String {
    match k {
        Kernel::Embed => EmbedArgs::c_decl(),
        Kernel::RmsNorm | Kernel::HeadRmsNorm | Kernel::RmsNormAdd => RmsNormArgs::c_decl(),
        Kernel::MatMul
        | Kernel::MatMulAdd
        | Kernel::MatMulSwiGlu
        | Kernel::RmsNormMatMul
        | Kernel::RmsNormMatMulSwiGlu
        | Kernel::MatMulGeGlu
        | Kernel::RmsNormMatMulGeGlu => MatmulArgs::c_decl(),
        Kernel::Add | Kernel::SwiGlu | Kernel::AddBias | Kernel::Scale | Kernel::GeGlu => {
            BinaryArgs::c_decl()
        }
        Kernel::SelectRows => SelectRowsArgs::c_decl(),
        Kernel::Rope => RopeArgs::c_decl(),
        Kernel::KvWrite | Kernel::RopeKvWrite | Kernel::Attention => KvArgs::c_decl(),
        Kernel::Matvec | Kernel::Mmq => MatvecArgs::c_decl(),
        Kernel::Quantize => QuantizeArgs::c_decl(),
    }
}

/// The full CUDA source of a variant, or None for a missing or unknown weight or KV
/// type, or a matmul of a packed type (the matvec and crate::mmq run those). Its entry
/// points are named by [`Variant::symbol`].
pub fn source(v: &Variant) -> Option<String> {
    match v.kernel {
        Kernel::Matvec => return matvec::source(v.weight?).ok(),
        Kernel::Mmq => return crate::mmq::source(v.weight?).ok(),
        Kernel::Quantize => return Some(matvec::quantize_source()),
        k if k.is_matmul() && v.packed() => return None,
        _ => {}
    }
    let mut header = format!("// kiln kernel {}\n", v.name());
    if v.kernel.takes_kv() {
        let (fp8, bytes) = match v.kv? {
            KvDtype::F8E4M3 => (1, 1),
            KvDtype::F16 => (0, 2),
        };
        header.push_str(&format!(
            "#define KV_FP8 {fp8}\n#define KV_VALUE_BYTES {bytes}u\n"
        ));
    }
    for &e in v.entries() {
        header.push_str(&format!("#define {} {}\n", e.macro_name(), v.symbol(e)));
    }
    if v.packed() {
        // The packed reader (pw_unit) in place of weights/<dtype>.cuh's w_unit.
        header.push_str("#define W_PACKED 1\n");
    }
    let weights = match (v.kernel.takes_weight(), v.weight) {
        (true, Some(w)) if v.packed() => Some(matvec::unit_file(w).ok()?.to_string()),
        (true, Some(w)) if WEIGHT_DTYPES.contains(&w) => Some(format!("weights/{}.cuh", w.name())),
        (false, None) => None,
        _ => return None,
    };
    let mut out = header;
    out.push_str(&args_decl(v.kernel));
    let mut seen = Vec::new();
    expand(
        &format!("{}.cu", v.kernel.stem()),
        weights.as_deref(),
        &mut seen,
        &mut out,
        0,
    )?;
    Some(out)
}

/// The source of the greedy LM-head kernel ([`ARGMAX_SYMBOL`]).
pub fn argmax_source() -> String {
    let mut out = format!("// kiln kernel argmax\n#define KILN_MAIN {ARGMAX_SYMBOL}\n");
    out.push_str(&ArgmaxArgs::c_decl());
    let mut seen = Vec::new();
    expand("argmax.cu", None, &mut seen, &mut out, 0)
        .expect("argmax.cu and its includes are embedded");
    out
}

/// The source of the device top-k kernel ([`TOP_K_SYMBOL`]).
pub fn top_k_source() -> String {
    let mut out = format!("// kiln kernel top_k\n#define KILN_MAIN {TOP_K_SYMBOL}\n");
    out.push_str(&TopKArgs::c_decl());
    let mut seen = Vec::new();
    expand("top_k.cu", None, &mut seen, &mut out, 0)
        .expect("top_k.cu and its includes are embedded");
    out
}

/// Append `name` to `out` with its includes expanded in place, each file once.
fn expand(
    name: &str,
    weights: Option<&str>,
    seen: &mut Vec<String>,
    out: &mut String,
    depth: usize,
) -> Option<()> {
    let name = if name == "weights.cuh" {
        weights?
    } else {
        name
    };
    if seen.iter().any(|s| s == name) {
        return Some(());
    }
    if depth > 8 {
        return None;
    }
    seen.push(name.to_string());
    let text = file(name)?;
    out.push_str(&format!("// ---- {name}\n"));
    for line in text.lines() {
        match include_of(line) {
            Some(inc) => expand(inc, weights, seen, out, depth + 1)?,
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Some(())
}

/// The file named by an `#include "x"` line.
fn include_of(line: &str) -> Option<&str> {
    line.trim()
        .strip_prefix("#include")?
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')
}

/// Every variant a plan may need: each kernel × weight type × KV type it reads.
pub fn all_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for kernel in Kernel::ALL {
        let weights: Vec<Option<DType>> = if kernel == Kernel::Matvec {
            matvec::DTYPES.iter().copied().map(Some).collect()
        } else if kernel == Kernel::Mmq {
            crate::mmq::DTYPES.iter().copied().map(Some).collect()
        } else if kernel.is_matmul() {
            // The matvec and the int8 tensor-core matmul run the packed types' matmuls.
            let float = WEIGHT_DTYPES
                .iter()
                .filter(|&&w| !crate::repack::is_packed(w));
            float.copied().map(Some).collect()
        } else if kernel.takes_weight() {
            WEIGHT_DTYPES.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        let kvs: Vec<Option<KvDtype>> = if kernel.takes_kv() {
            KV_DTYPES.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for &weight in &weights {
            for &kv in &kvs {
                out.push(Variant { kernel, weight, kv });
            }
        }
    }
    out
}
