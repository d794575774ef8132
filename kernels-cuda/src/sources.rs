//! The CUDA sources, embedded as text, and how a kernel variant is assembled from them:
//! a header of defines (the KV type), then the op's file with every `#include "x"`
//! replaced by the text of `x` (once per source), `weights.cuh` standing for the variant's
//! weight dtype. NVRTC gets one self-contained string: no include paths, no toolkit.

use kiln_ir::graph::Graph;
use kiln_ir::kv_layout::KvDtype;
use kiln_ir::{DType, Op, RopeMode};
use kiln_kernels_wgsl::Variant;
use kiln_kernels_wgsl::sources::{OPS, WEIGHT_DTYPES};

/// `(name, text)` of every source file; names are paths under `src/cuda`.
pub const FILES: &[(&str, &str)] = &[
    ("prelude.cuh", include_str!("cuda/prelude.cuh")),
    (
        "weights/common.cuh",
        include_str!("cuda/weights/common.cuh"),
    ),
    ("weights/f32.cuh", include_str!("cuda/weights/f32.cuh")),
    ("weights/f16.cuh", include_str!("cuda/weights/f16.cuh")),
    ("weights/bf16.cuh", include_str!("cuda/weights/bf16.cuh")),
    ("weights/q4_0.cuh", include_str!("cuda/weights/q4_0.cuh")),
    ("weights/q4_1.cuh", include_str!("cuda/weights/q4_1.cuh")),
    ("weights/q8_0.cuh", include_str!("cuda/weights/q8_0.cuh")),
    ("matmul_core.cuh", include_str!("cuda/matmul_core.cuh")),
    ("matmul_mma.cu", include_str!("cuda/matmul_mma.cu")),
    ("rope_common.cuh", include_str!("cuda/rope_common.cuh")),
    ("kv_common.cuh", include_str!("cuda/kv_common.cuh")),
    ("kv_store.cuh", include_str!("cuda/kv_store.cuh")),
    // One file per op, named like the op (kiln_ir::Op::name) and its WGSL twin.
    ("embed.cu", include_str!("cuda/embed.cu")),
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
    // Not an op of the plan: the greedy LM head (CudaBackend::argmax_last_logits).
    ("argmax.cu", include_str!("cuda/argmax.cu")),
];

/// The entry point of every op kernel (the matrix-vector kernel of the matmul ops).
pub const ENTRY: &str = "kiln_main";
/// The tensor-core entry point of the matmul ops (matmul_mma.cu).
pub const MMA_ENTRY: &str = "kiln_mma";
/// The paged decode attention of the attention variants (attention_decode.cu): GQA
/// groups per block, split-K; takes the partial buffer as a sixth argument.
pub const DECODE_ENTRY: &str = "kiln_attn_decode";
/// The merge of the decode splits (attention_combine.cu): partial buffer and split count
/// after the common arguments.
pub const COMBINE_ENTRY: &str = "kiln_attn_combine";
/// Causal flash attention of prefill steps on tensor cores (attention_prefill.cu): the
/// FP8 attention variant only, sm_80+.
pub const PREFILL_ENTRY: &str = "kiln_attn_prefill";
/// The entry point of argmax.cu.
pub const ARGMAX_ENTRY: &str = "kiln_argmax";

/// The text of a source file by name.
pub fn file(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Whether the op is one of the matmul family (matmul_core.cuh and matmul_mma.cu).
pub fn is_matmul(op: &str) -> bool {
    matches!(
        op,
        "matmul" | "matmul_add" | "matmul_swiglu" | "rmsnorm_matmul" | "rmsnorm_matmul_swiglu"
    )
}

/// Whether the variant has the tensor-core entry [`MMA_ENTRY`]: the matmuls of quantized
/// weights (weights/<dtype>.cuh: MM_TENSOR_CORES). F32, F16 and BF16 weights keep exact
/// f32 products: f16 operands would round what their matmuls do not.
pub fn has_tensor_cores(v: &Variant) -> bool {
    is_matmul(v.op) && v.weight.is_some_and(|w| w.is_quantized())
}

/// Whether the variant has the tensor-core prefill attention [`PREFILL_ENTRY`]: FP8 KV
/// caches (f16 q and P would round what the F16 cache's f32 kernel does not).
pub fn has_prefill(v: &Variant) -> bool {
    v.op == "attention" && v.kv == Some(KvDtype::F8E4M3)
}

/// The entry points a variant's module holds.
pub fn entries(v: &Variant) -> &'static [&'static str] {
    if has_tensor_cores(v) {
        &[ENTRY, MMA_ENTRY]
    } else if has_prefill(v) {
        &[ENTRY, DECODE_ENTRY, COMBINE_ENTRY, PREFILL_ENTRY]
    } else if v.op == "attention" {
        &[ENTRY, DECODE_ENTRY, COMBINE_ENTRY]
    } else {
        &[ENTRY]
    }
}

/// The full CUDA source of a variant, or None for an unknown op or a missing weight or KV
/// type. CUDA has one reduction (warp shuffles): the variant's `subgroups` is ignored.
pub fn source(v: &Variant) -> Option<String> {
    let mut header = format!("// kiln kernel {}\n", v.name());
    if Variant::takes_kv(v.op) {
        let (fp8, bytes) = match v.kv? {
            KvDtype::F8E4M3 => (1, 1),
            KvDtype::F16 => (0, 2),
        };
        header.push_str(&format!(
            "#define KV_FP8 {fp8}\n#define KV_VALUE_BYTES {bytes}u\n"
        ));
    }
    let weights = match v.weight {
        Some(w) if WEIGHT_DTYPES.contains(&w) => Some(format!("weights/{}.cuh", w.name())),
        Some(_) => return None,
        None => None,
    };
    let mut out = header;
    let mut seen = Vec::new();
    expand(
        &format!("{}.cu", v.op),
        weights.as_deref(),
        &mut seen,
        &mut out,
        0,
    )?;
    Some(out)
}

/// The source of the greedy LM-head kernel ([`ARGMAX_ENTRY`]).
pub fn argmax_source() -> String {
    let mut out = String::from("// kiln kernel argmax\n");
    let mut seen = Vec::new();
    expand("argmax.cu", None, &mut seen, &mut out, 0)
        .expect("argmax.cu and its includes are embedded");
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

/// The WGSL ops that have no CUDA twin yet (Gemma 3's): a plan with them does not load
/// on the CUDA backend (`runs` refuses them, so they stay unfused or are refused).
pub const WGSL_ONLY_OPS: &[&str] = &[
    "scale",
    "head_rmsnorm",
    "geglu",
    "matmul_geglu",
    "rmsnorm_matmul_geglu",
    "rmsnorm_add",
    "qk_norm_rope_kv_write",
];

/// Every variant a plan may need: each op × weight dtype × KV dtype (the WGSL variants
/// without their subgroup twins) that has CUDA sources.
pub fn all_variants() -> Vec<Variant> {
    kiln_kernels_wgsl::sources::all_variants()
        .into_iter()
        .filter(|v| !v.subgroups && ops().any(|op| op == v.op))
        .filter(|v| v.weight.is_none_or(|w| weight_dtypes().contains(&w)))
        .collect()
}

/// The ops of kernels-wgsl that have a `.cu` file here.
pub fn ops() -> impl Iterator<Item = &'static str> {
    OPS.iter()
        .map(|(op, _)| *op)
        .filter(|op| !WGSL_ONLY_OPS.contains(op))
}

/// Weight dtypes the CUDA kernels read (those of the WGSL kernels with a `.cuh` here).
pub fn weight_dtypes() -> &'static [DType] {
    &WEIGHT_DTYPES[..6]
}

/// Whether the CUDA kernels run `op` as the WGSL program dispatches it (asked besides
/// the WGSL `supports`): an op with a `.cu` file, weights of a type with a `.cuh`, no
/// NeoX RoPE and attention without a window or a second KV group.
pub fn runs(op: &Op, graph: &Graph) -> bool {
    let weights_ok = op.matrices().iter().all(|&w| {
        graph
            .weight(w)
            .is_some_and(|w| weight_dtypes().contains(&w.dtype))
    });
    weights_ok
        && ops().any(|name| name == op.name())
        && op.rope().is_none_or(|r| r.mode == RopeMode::Normal)
        && op
            .attention()
            .is_none_or(|a| a.window.is_none() && a.kv_group == 0)
}
