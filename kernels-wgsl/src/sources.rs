//! The WGSL sources, embedded as text, and how a kernel variant is assembled from them:
//! a header (the KV type constants), the prelude, the reduction
//! (subgroup or workgroup), the includes the op needs, then the op's own file.

use kiln_ir::DType;
use kiln_ir::kv_layout::KvDtype;

/// `(name, text)` of every source file; names are the file stems (`weights/q4_0`).
pub const FILES: &[(&str, &str)] = &[
    ("prelude", include_str!("wgsl/prelude.wgsl")),
    (
        "reduce_workgroup",
        include_str!("wgsl/reduce_workgroup.wgsl"),
    ),
    ("reduce_subgroup", include_str!("wgsl/reduce_subgroup.wgsl")),
    ("weights/common", include_str!("wgsl/weights/common.wgsl")),
    ("weights/f32", include_str!("wgsl/weights/f32.wgsl")),
    ("weights/f16", include_str!("wgsl/weights/f16.wgsl")),
    ("weights/bf16", include_str!("wgsl/weights/bf16.wgsl")),
    ("weights/q4_0", include_str!("wgsl/weights/q4_0.wgsl")),
    ("weights/q4_1", include_str!("wgsl/weights/q4_1.wgsl")),
    ("weights/q8_0", include_str!("wgsl/weights/q8_0.wgsl")),
    ("weights/q5_0", include_str!("wgsl/weights/q5_0.wgsl")),
    ("weights/q5_1", include_str!("wgsl/weights/q5_1.wgsl")),
    ("weights/q4_k", include_str!("wgsl/weights/q4_k.wgsl")),
    ("weights/q5_k", include_str!("wgsl/weights/q5_k.wgsl")),
    ("weights/q6_k", include_str!("wgsl/weights/q6_k.wgsl")),
    ("weights/q8_k", include_str!("wgsl/weights/q8_k.wgsl")),
    ("matmul_params", include_str!("wgsl/matmul_params.wgsl")),
    ("matmul_core", include_str!("wgsl/matmul_core.wgsl")),
    ("gemm_core", include_str!("wgsl/gemm_core.wgsl")),
    // gemm_core's tiles: f32, or f16 on devices with shader-f16.
    ("gemm_tiles_f32", include_str!("wgsl/gemm_tiles_f32.wgsl")),
    ("gemm_tiles_f16", include_str!("wgsl/gemm_tiles_f16.wgsl")),
    // ... or cooperative-matrix tiles: their matrix operations native, or their twin in
    // plain WGSL (the tests' path where there are none).
    ("gemm_tiles_coop", include_str!("wgsl/gemm_tiles_coop.wgsl")),
    (
        "gemm_coop_native",
        include_str!("wgsl/gemm_coop_native.wgsl"),
    ),
    ("gemm_coop_twin", include_str!("wgsl/gemm_coop_twin.wgsl")),
    // The int8 decode matvec: activations quantized once per launch, packed weights.
    ("quantize_core", include_str!("wgsl/quantize_core.wgsl")),
    ("matvec_core", include_str!("wgsl/matvec_core.wgsl")),
    (
        "mv_reduce_workgroup",
        include_str!("wgsl/mv_reduce_workgroup.wgsl"),
    ),
    (
        "mv_reduce_subgroup",
        include_str!("wgsl/mv_reduce_subgroup.wgsl"),
    ),
    ("weights_q8/q4_0", include_str!("wgsl/weights_q8/q4_0.wgsl")),
    ("weights_q8/q4_1", include_str!("wgsl/weights_q8/q4_1.wgsl")),
    ("weights_q8/q8_0", include_str!("wgsl/weights_q8/q8_0.wgsl")),
    ("weights_q8/q5_0", include_str!("wgsl/weights_q8/q5_0.wgsl")),
    ("weights_q8/q5_1", include_str!("wgsl/weights_q8/q5_1.wgsl")),
    ("weights_q8/q4_k", include_str!("wgsl/weights_q8/q4_k.wgsl")),
    ("weights_q8/q5_k", include_str!("wgsl/weights_q8/q5_k.wgsl")),
    ("weights_q8/q6_k", include_str!("wgsl/weights_q8/q6_k.wgsl")),
    ("rope_common", include_str!("wgsl/rope_common.wgsl")),
    ("kv_common", include_str!("wgsl/kv_common.wgsl")),
    ("kv_store", include_str!("wgsl/kv_store.wgsl")),
    // One file per op, named like the op (kiln_ir::Op::name).
    ("embed", include_str!("wgsl/embed.wgsl")),
    ("rmsnorm", include_str!("wgsl/rmsnorm.wgsl")),
    ("matmul", include_str!("wgsl/matmul.wgsl")),
    ("add", include_str!("wgsl/add.wgsl")),
    ("swiglu", include_str!("wgsl/swiglu.wgsl")),
    ("rope", include_str!("wgsl/rope.wgsl")),
    ("kv_write", include_str!("wgsl/kv_write.wgsl")),
    ("attention", include_str!("wgsl/attention.wgsl")),
    ("select_rows", include_str!("wgsl/select_rows.wgsl")),
    // Not an op of the plan: the greedy LM head after the step (Backend::read_argmax).
    ("argmax", include_str!("wgsl/argmax.wgsl")),
    ("rmsnorm_matmul", include_str!("wgsl/rmsnorm_matmul.wgsl")),
    ("matmul_swiglu", include_str!("wgsl/matmul_swiglu.wgsl")),
    (
        "rmsnorm_matmul_swiglu",
        include_str!("wgsl/rmsnorm_matmul_swiglu.wgsl"),
    ),
    ("matmul_add", include_str!("wgsl/matmul_add.wgsl")),
    ("rope_kv_write", include_str!("wgsl/rope_kv_write.wgsl")),
    // Gemma 3's ops.
    ("scale", include_str!("wgsl/scale.wgsl")),
    // Qwen 2's q/k/v biases.
    ("add_bias", include_str!("wgsl/add_bias.wgsl")),
    ("head_rmsnorm", include_str!("wgsl/head_rmsnorm.wgsl")),
    ("geglu", include_str!("wgsl/geglu.wgsl")),
    ("matmul_geglu", include_str!("wgsl/matmul_geglu.wgsl")),
    (
        "rmsnorm_matmul_geglu",
        include_str!("wgsl/rmsnorm_matmul_geglu.wgsl"),
    ),
    ("rmsnorm_add", include_str!("wgsl/rmsnorm_add.wgsl")),
    (
        "qk_norm_rope_kv_write",
        include_str!("wgsl/qk_norm_rope_kv_write.wgsl"),
    ),
    // The matmul family's tiled twins for steps of many tokens (not ops of the IR: the
    // lowering picks them by a step's rows, program::gemm).
    ("gemm", include_str!("wgsl/gemm.wgsl")),
    ("gemm_add", include_str!("wgsl/gemm_add.wgsl")),
    ("gemm_swiglu", include_str!("wgsl/gemm_swiglu.wgsl")),
    ("gemm_geglu", include_str!("wgsl/gemm_geglu.wgsl")),
    ("rmsnorm_gemm", include_str!("wgsl/rmsnorm_gemm.wgsl")),
    (
        "rmsnorm_gemm_swiglu",
        include_str!("wgsl/rmsnorm_gemm_swiglu.wgsl"),
    ),
    (
        "rmsnorm_gemm_geglu",
        include_str!("wgsl/rmsnorm_gemm_geglu.wgsl"),
    ),
    // The int8 decode path of the matmul family (program::lower's matvec_q8).
    ("quantize_q8", include_str!("wgsl/quantize_q8.wgsl")),
    (
        "rmsnorm_quantize_q8",
        include_str!("wgsl/rmsnorm_quantize_q8.wgsl"),
    ),
    ("matvec_q8", include_str!("wgsl/matvec_q8.wgsl")),
    ("matvec_q8_add", include_str!("wgsl/matvec_q8_add.wgsl")),
    (
        "matvec_q8_swiglu",
        include_str!("wgsl/matvec_q8_swiglu.wgsl"),
    ),
    ("matvec_q8_geglu", include_str!("wgsl/matvec_q8_geglu.wgsl")),
];

/// The op files, each with the includes it needs between the prelude and itself.
/// `reduce` stands for the reduction variant, `weights` for the weight dtype's file.
pub const OPS: &[(&str, &[&str])] = &[
    ("embed", &["weights/common", "weights"]),
    ("rmsnorm", &["reduce", "weights/common"]),
    (
        "matmul",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    (
        "rmsnorm_matmul",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    (
        "matmul_swiglu",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    (
        "rmsnorm_matmul_swiglu",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    (
        "matmul_add",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    ("add", &[]),
    ("swiglu", &[]),
    ("select_rows", &[]),
    ("argmax", &[]),
    ("rope", &["rope_common"]),
    ("kv_write", &["reduce", "kv_common", "kv_store"]),
    (
        "rope_kv_write",
        &["reduce", "kv_common", "rope_common", "kv_store"],
    ),
    ("attention", &["reduce", "kv_common"]),
    ("scale", &[]),
    ("add_bias", &["weights/common"]),
    ("head_rmsnorm", &["reduce", "weights/common"]),
    ("geglu", &[]),
    (
        "matmul_geglu",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    (
        "rmsnorm_matmul_geglu",
        &[
            "reduce",
            "weights/common",
            "weights",
            "matmul_params",
            "matmul_core",
        ],
    ),
    ("rmsnorm_add", &["reduce", "weights/common"]),
    (
        "qk_norm_rope_kv_write",
        &[
            "reduce",
            "weights/common",
            "kv_common",
            "rope_common",
            "kv_store",
        ],
    ),
    ("gemm", GEMM_INCLUDES),
    ("gemm_add", GEMM_INCLUDES),
    ("gemm_swiglu", GEMM_INCLUDES),
    ("gemm_geglu", GEMM_INCLUDES),
    ("rmsnorm_gemm", GEMM_INCLUDES),
    ("rmsnorm_gemm_swiglu", GEMM_INCLUDES),
    ("rmsnorm_gemm_geglu", GEMM_INCLUDES),
    ("quantize_q8", &["quantize_core"]),
    (
        "rmsnorm_quantize_q8",
        &["reduce", "weights/common", "quantize_core"],
    ),
    ("matvec_q8", MATVEC_INCLUDES),
    ("matvec_q8_add", MATVEC_INCLUDES),
    ("matvec_q8_swiglu", MATVEC_INCLUDES),
    ("matvec_q8_geglu", MATVEC_INCLUDES),
];

/// What every tiled GEMM file includes (no reduction: its sums stay in registers);
/// `gemm_tiles` stands for the tiles' type (`gemm_tiles_f32`, `gemm_tiles_f16` in an
/// f16 variant, `gemm_coop_native` or `gemm_coop_twin` then `gemm_tiles_coop` in a
/// cooperative-matrix one).
const GEMM_INCLUDES: &[&str] = &[
    "weights/common",
    "weights",
    "matmul_params",
    "gemm_tiles",
    "gemm_core",
];

/// The includes of the int8 matvec files: `mv_reduce` stands for its row groups'
/// reduction (subgroup or workgroup), `weights_q8` for the packed weight dtype's blocks.
const MATVEC_INCLUDES: &[&str] = &["mv_reduce", "weights_q8", "matvec_core"];

/// Weight dtypes the int8 matvec reads: rows of whole 16-byte units, those
/// [`crate::repack`] packs and Q4_K and Q5_K as GGUF stores them.
pub const MATVEC_DTYPES: [DType; 8] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Weight dtypes the kernels read.
pub const WEIGHT_DTYPES: [DType; 12] = [
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
    DType::Q8_K,
];

/// How the tiled GEMM's f16 tiles are multiplied when not by its own loop: by
/// cooperative matrices (16 × 16 × 16, f16 A and B, f32 C), or by their twin in plain
/// WGSL, the same kernel that any f16 device runs (the conformance suite's on lavapipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coop {
    /// WGSL's cooperative matrices (`enable wgpu_cooperative_matrix;`): naga's
    /// COOPERATIVE_MATRIX and SUBGROUP capabilities, SPIR-V's CooperativeMatrixKHR and
    /// VulkanMemoryModel.
    Native,
    /// gemm_coop_twin.wgsl: the matrix operations in plain WGSL.
    Twin,
}

/// One kernel variant: the op file and what it is specialised for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub op: &'static str,
    /// The weight type of a matmul or embedding (None for other ops).
    pub weight: Option<DType>,
    /// The KV cache type of the KV ops (None for other ops).
    pub kv: Option<KvDtype>,
    /// Reductions with subgroup operations (wgpu's Features::SUBGROUP) or through workgroup
    /// memory only.
    pub subgroups: bool,
    /// f16 arithmetic (WGSL's `enable f16;`, the device's shader-f16): the tiled GEMM's
    /// f16 tiles ([`Variant::has_f16`]).
    pub f16: bool,
    /// The f16 tiles multiplied as cooperative matrices (only with `f16`).
    pub coop: Option<Coop>,
}

impl Variant {
    /// `<op>_<dtype>` (the plan's kernel names), with `_sg` for the subgroup variant.
    pub fn name(&self) -> String {
        let dtype = match (self.weight, self.kv) {
            (Some(w), _) => w.name(),
            (None, Some(kv)) => kv.name(),
            (None, None) => "f32",
        };
        let sg = if self.subgroups { "_sg" } else { "" };
        let f16 = if self.f16 { "_f16math" } else { "" };
        let coop = match self.coop {
            None => "",
            Some(Coop::Native) => "_coop",
            Some(Coop::Twin) => "_cooptwin",
        };
        format!("{}_{dtype}{sg}{f16}{coop}", self.op)
    }

    /// Whether the kernel uses subgroup operations or builtins: its reductions', or
    /// cooperative matrices' (each a subgroup's, which gemm_tiles_coop picks by
    /// subgroup_id).
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups || self.coop == Some(Coop::Native)
    }

    /// Whether the op has a variant in f16 arithmetic for weights of `weight`: the tiled
    /// GEMM (its f16 tiles halve the workgroup memory and its traffic, and its products
    /// are packed f16 multiply-adds) of the quantized types. Float weights keep f32
    /// tiles: they promise f32 rounding only (the conformance suite's F32_LIMIT), which
    /// f16 inputs (2^-11 relative) are far from; the quantized types' results are held
    /// to what 8-bit activations leave, which f16 ones stay well within. The
    /// matrix-vector kernels read each weight once per step and are bound by it: f16
    /// would not make them faster.
    pub fn has_f16(op: &str, weight: Option<DType>) -> bool {
        includes(op).is_some_and(|inc| inc.contains(&"gemm_tiles"))
            && weight.is_some_and(|w| w.is_quantized())
    }

    /// Whether the op reads a weight matrix (its variants are per weight dtype).
    pub fn takes_weight(op: &str) -> bool {
        includes(op).is_some_and(|inc| inc.contains(&"weights") || inc.contains(&"weights_q8"))
    }

    /// The weight dtypes of the op's variants.
    pub fn weight_dtypes(op: &str) -> &'static [DType] {
        match includes(op) {
            Some(inc) if inc.contains(&"weights_q8") => &MATVEC_DTYPES,
            Some(inc) if inc.contains(&"weights") => &WEIGHT_DTYPES,
            _ => &[],
        }
    }

    /// Whether the op sums across its workgroup (its variants are per reduction).
    pub fn reduces(op: &str) -> bool {
        includes(op).is_some_and(|inc| inc.contains(&"reduce") || inc.contains(&"mv_reduce"))
    }

    /// Whether the op reads or writes KV pages (its variants are per KV dtype).
    pub fn takes_kv(op: &str) -> bool {
        includes(op).is_some_and(|inc| inc.contains(&"kv_common"))
    }

    /// Whether the op writes KV pages (binds them read-write; the others read-only).
    pub fn writes_kv(op: &str) -> bool {
        includes(op).is_some_and(|inc| inc.contains(&"kv_store"))
    }

    /// The full WGSL of the variant, or None for an unknown op or a missing weight or
    /// KV type.
    pub fn source(&self) -> Option<String> {
        let includes = includes(self.op)?;
        let mut out = String::new();
        if self.f16 {
            if !Variant::has_f16(self.op, self.weight) {
                return None;
            }
            out.push_str("enable f16;\n\n");
        } else if self.coop.is_some() {
            return None;
        }
        if self.coop == Some(Coop::Native) {
            // The matrix operations need control flow uniform across a subgroup, which
            // gemm_tiles_coop's is (its conditions are the subgroup's ids and the
            // workgroup's tile); naga's analysis counts every builtin but the
            // workgroup's as varying, and says so under this rule.
            out.push_str(
                "enable wgpu_cooperative_matrix;\ndiagnostic(off, derivative_uniformity);\n\n",
            );
        }
        if self.subgroups && Variant::reduces(self.op) {
            // WGSL's `enable subgroups;` is not parsed by naga yet; wgpu enables the
            // builtins with Features::SUBGROUP.
            out.push_str("// subgroup reductions\n");
        }
        if Variant::takes_kv(self.op) {
            let (fp8, bytes) = match self.kv? {
                KvDtype::F8E4M3 => (true, 1),
                KvDtype::F16 => (false, 2),
            };
            out.push_str(&format!(
                "const KV_FP8: bool = {fp8};\nconst KV_VALUE_BYTES: u32 = {bytes}u;\n\n"
            ));
        }
        let weight_file = match self.weight {
            Some(w) if WEIGHT_DTYPES.contains(&w) => Some(format!("weights/{}", w.name())),
            _ => None,
        };
        let matvec_file = match self.weight {
            Some(w) if MATVEC_DTYPES.contains(&w) => Some(format!("weights_q8/{}", w.name())),
            _ => None,
        };
        let tiles: &[&str] = match (self.f16, self.coop) {
            (_, Some(Coop::Native)) => &["gemm_coop_native", "gemm_tiles_coop"],
            (_, Some(Coop::Twin)) => &["gemm_coop_twin", "gemm_tiles_coop"],
            (true, None) => &["gemm_tiles_f16"],
            (false, None) => &["gemm_tiles_f32"],
        };
        let reduce = if self.subgroups {
            "reduce_subgroup"
        } else {
            "reduce_workgroup"
        };
        let mut parts = vec!["prelude".to_string()];
        for &inc in includes {
            match inc {
                "gemm_tiles" => parts.extend(tiles.iter().map(|t| t.to_string())),
                _ => parts.push(match inc {
                    "reduce" => reduce.to_string(),
                    "weights" => weight_file.clone()?,
                    "weights_q8" => matvec_file.clone()?,
                    "mv_reduce" => format!("mv_{reduce}"),
                    other => other.to_string(),
                }),
            }
        }
        parts.push(self.op.to_string());
        for part in parts {
            out.push_str(file(&part)?);
            out.push('\n');
        }
        Some(out)
    }
}

fn includes(op: &str) -> Option<&'static [&'static str]> {
    OPS.iter()
        .find(|(name, _)| *name == op)
        .map(|(_, inc)| *inc)
}

/// The text of a source file by name.
pub fn file(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Every variant a backend may build: each op × weight dtype × KV dtype × reduction ×
/// arithmetic (f32, and f16 where the op has it, its f16 tiles multiplied by the
/// kernel's own loop or as cooperative matrices, native or twin).
pub fn all_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for &(op, _) in OPS {
        let weights: Vec<Option<DType>> = if Variant::takes_weight(op) {
            Variant::weight_dtypes(op)
                .iter()
                .copied()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        let kvs: Vec<Option<KvDtype>> = if Variant::takes_kv(op) {
            vec![Some(KvDtype::F8E4M3), Some(KvDtype::F16)]
        } else {
            vec![None]
        };
        for &weight in &weights {
            for &kv in &kvs {
                for subgroups in [false, true]
                    .into_iter()
                    .filter(|&s| !s || Variant::reduces(op))
                {
                    for f16 in [false, true]
                        .into_iter()
                        .filter(|&h| !h || Variant::has_f16(op, weight))
                    {
                        let coops: &[Option<Coop>] = if f16 {
                            &[None, Some(Coop::Native), Some(Coop::Twin)]
                        } else {
                            &[None]
                        };
                        for &coop in coops {
                            out.push(Variant {
                                op,
                                weight,
                                kv,
                                subgroups,
                                f16,
                                coop,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// `wgsl` for a device without packed 4×8-bit integer dot products (Vulkan without
/// shaderIntegerDotProduct): `dot4I8Packed` as four sign-extended byte products.
pub fn without_integer_dot(wgsl: &str) -> String {
    let mut out = wgsl.replace("dot4I8Packed(", "dot4I8Packed_bytes(");
    out.push_str(
        "\nfn dot4I8Packed_bytes(a: u32, b: u32) -> i32 {\n    \
         let x = bitcast<vec4<i32>>(vec4<u32>(a << 24u, a << 16u, a << 8u, a)) >> vec4<u32>(24u);\n    \
         let y = bitcast<vec4<i32>>(vec4<u32>(b << 24u, b << 16u, b << 8u, b)) >> vec4<u32>(24u);\n    \
         return dot(x, y);\n}\n",
    );
    out
}
