//! The kernels as SPIR-V (the `spirv` feature; the Vulkan backend's compiler): naga parses,
//! validates and writes each variant's WGSL, through kiln-gpu-host's disk cache
//! (`spirv/<key>.spv`, keyed by the WGSL, the naga version and the writer options). A
//! missing, unwritable or corrupt cache file is ignored (the kernel is compiled again and
//! the file rewritten), never an error. The writer options are WGSL's semantics, the same
//! as wgpu's (indices clamped, workgroup memory zeroed), so every WGSL backend runs the
//! same kernels the same way.

use kiln_gpu_host::cache::{self, Cache, CacheStats, DiskCache};
use naga::back::spv;
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

use crate::KernelError;
use crate::program::ENTRY;

/// The naga release the SPIR-V comes from (part of every cache key; bump with the
/// workspace's naga).
const NAGA: &str = "naga 30";
/// The first word of every SPIR-V module.
pub const SPIRV_MAGIC: u32 = 0x0723_0203;

/// What the SPIR-V is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The SPIR-V version (1.3 for Vulkan 1.1, 1.5 for 1.2, 1.6 for 1.3).
    pub version: (u8, u8),
    /// The device zeroes workgroup memory itself (Vulkan 1.3's
    /// shaderZeroInitializeWorkgroupMemory); else the kernels do.
    pub native_zero_init: bool,
    /// Subgroup operations (the subgroup variants).
    pub subgroups: bool,
    /// Packed 4×8-bit integer dot products (OpSDot; Vulkan 1.3's
    /// shaderIntegerDotProduct): `dot4I8Packed` as naga writes it; else as byte products
    /// in WGSL ([`crate::sources::without_integer_dot`]).
    pub integer_dot: bool,
    /// f16 arithmetic (shaderFloat16, and the 16-bit storage buffer access naga's f16
    /// types declare): the f16 variants validate; without it they are refused.
    pub f16: bool,
    /// Cooperative matrices (VK_KHR_cooperative_matrix, with the Vulkan memory model
    /// naga's SPIR-V declares for them): the native cooperative-matrix variants
    /// ([`crate::Coop::Native`]) validate; without it they are refused.
    pub coop_matrix: bool,
}

/// Compiles kernels with one set of writer options and caches the results.
pub struct Compiler {
    options: spv::Options<'static>,
    subgroups: bool,
    integer_dot: bool,
    f16: bool,
    coop_matrix: bool,
    /// Options and naga version, in every key.
    key: String,
    cache: DiskCache,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiler({}, cache {:?})", self.key, self.cache.dir())
    }
}

impl Compiler {
    pub fn new(target: Target, cache: &Cache) -> Compiler {
        use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
        let zero_init = if target.native_zero_init {
            spv::ZeroInitializeWorkgroupMemoryMode::Native
        } else {
            spv::ZeroInitializeWorkgroupMemoryMode::Polyfill
        };
        let options = spv::Options {
            lang_version: target.version,
            flags: spv::WriterFlags::empty(),
            // The WGSL's own @group/@binding numbers (Program's bindings) are kept.
            fake_missing_bindings: true,
            bounds_check_policies: BoundsCheckPolicies {
                index: BoundsCheckPolicy::Restrict,
                buffer: BoundsCheckPolicy::Restrict,
                image_load: BoundsCheckPolicy::Restrict,
                binding_array: BoundsCheckPolicy::Unchecked,
            },
            zero_initialize_workgroup_memory: zero_init,
            // Compute kernels have no f16 inputs or outputs: no StorageInputOutput16, a
            // feature of its own that few devices have.
            use_storage_input_output_16: false,
            ..spv::Options::default()
        };
        let key = format!(
            "{NAGA}; spv {:?}; {:?}; {:?}; loops {}; div {}; subgroups {}; idot {}; f16 {}; coop {}",
            target.version,
            options.bounds_check_policies,
            options.zero_initialize_workgroup_memory,
            options.force_loop_bounding,
            options.emit_int_div_checks,
            target.subgroups,
            target.integer_dot,
            target.f16,
            target.coop_matrix,
        );
        Compiler {
            options,
            subgroups: target.subgroups,
            integer_dot: target.integer_dot,
            f16: target.f16,
            coop_matrix: target.coop_matrix,
            key,
            cache: DiskCache::new(cache),
        }
    }

    /// The disk cache (where a backend keeps its own files too: Vulkan's pipeline
    /// cache).
    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    /// What the SPIR-V cache did so far: modules read, modules compiled.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The SPIR-V of a kernel: from the cache, or compiled (and cached).
    pub fn spirv(&mut self, name: &str, wgsl: &str) -> Result<Vec<u32>, KernelError> {
        let file = format!(
            "spirv/{}.spv",
            cache::key(&[self.key.as_bytes(), b"\0", wgsl.as_bytes()])
        );
        let bytes = self
            .cache
            .get_or_build(&file, wgsl.len() as u64, is_spirv, || {
                let words = self.compile(name, wgsl)?;
                Ok::<_, KernelError>(kiln_gpu_host::output::le_bytes(&words))
            })?;
        let mut words = vec![0u32; bytes.len() / 4];
        kiln_gpu_host::output::u32s_from_le(&bytes, &mut words);
        Ok(words)
    }

    fn compile(&self, name: &str, wgsl: &str) -> Result<Vec<u32>, KernelError> {
        let failed = |e: String| KernelError::Compile(format!("{name}: {e}"));
        let polyfilled;
        let wgsl = if self.integer_dot || !wgsl.contains("dot4I8Packed(") {
            wgsl
        } else {
            polyfilled = crate::sources::without_integer_dot(wgsl);
            &polyfilled
        };
        let module =
            naga::front::wgsl::parse_str(wgsl).map_err(|e| failed(e.emit_to_string(wgsl)))?;
        let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if self.subgroups {
            caps |= Capabilities::SUBGROUP;
        }
        if self.f16 {
            caps |= Capabilities::SHADER_FLOAT16;
        }
        if self.coop_matrix {
            caps |= Capabilities::COOPERATIVE_MATRIX;
        }
        let mut validator = Validator::new(ValidationFlags::all(), caps);
        if self.subgroups {
            validator
                .subgroup_stages(ShaderStages::COMPUTE)
                .subgroup_operations(
                    SubgroupOperationSet::BASIC | SubgroupOperationSet::ARITHMETIC,
                );
        }
        let info = (validator.validate(&module)).map_err(|e| failed(e.emit_to_string(wgsl)))?;
        let pipeline = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: ENTRY.to_string(),
        };
        spv::write_vec(&module, &info, &self.options, Some(&pipeline))
            .map_err(|e| failed(format!("writing SPIR-V: {e}")))
    }
}

/// Cached bytes that can be SPIR-V: whole words, a header, the magic number.
fn is_spirv(bytes: &[u8]) -> bool {
    bytes.len() >= 20 && bytes.len().is_multiple_of(4) && bytes[..4] == SPIRV_MAGIC.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(subgroups: bool) -> Target {
        Target {
            version: (1, 6),
            native_zero_init: true,
            subgroups,
            integer_dot: true,
            f16: true,
            coop_matrix: false,
        }
    }

    /// Whether a module declares a capability (OpCapability, opcode 17).
    fn declares(words: &[u32], capability: u32) -> bool {
        let mut i = 5;
        while i < words.len() {
            let (count, op) = ((words[i] >> 16) as usize, words[i] & 0xFFFF);
            if op == 17 && words.get(i + 1) == Some(&capability) {
                return true;
            }
            i += count.max(1);
        }
        false
    }

    /// The f16 variants declare Float16 and the 16-bit storage buffer access that a
    /// device enables with shaderFloat16 (the Vulkan backend enables both), never
    /// StorageInputOutput16; the f32 ones none of them. Without f16 in the target they
    /// are refused, not miscompiled.
    #[test]
    fn f16_variants_declare_float16_and_16_bit_storage_only() {
        const FLOAT16: u32 = 9;
        const STORAGE_BUFFER_16: u32 = 4433;
        const UNIFORM_AND_STORAGE_16: u32 = 4434;
        const INPUT_OUTPUT_16: u32 = 4436;
        let mut c = Compiler::new(target(false), &Cache::Off);
        let gemms = crate::sources::all_variants().into_iter().filter(|v| {
            !v.subgroups
                && v.coop.is_none()
                && v.op == "gemm"
                && v.weight.is_some_and(|w| w.is_quantized())
        });
        for v in gemms {
            let words = c.spirv(&v.name(), &v.source().unwrap()).expect("compiles");
            for cap in [FLOAT16, STORAGE_BUFFER_16, UNIFORM_AND_STORAGE_16] {
                assert_eq!(
                    declares(&words, cap),
                    v.f16,
                    "{} capability {cap}",
                    v.name()
                );
            }
            assert!(!declares(&words, INPUT_OUTPUT_16), "{}", v.name());
        }
        let v = crate::sources::all_variants()
            .into_iter()
            .find(|v| v.f16)
            .expect("an f16 variant");
        let no_f16 = Target {
            f16: false,
            ..target(false)
        };
        let refused = Compiler::new(no_f16, &Cache::Off).spirv(&v.name(), &v.source().unwrap());
        assert!(matches!(refused, Err(KernelError::Compile(_))));
    }

    /// Whether a module has an instruction of opcode `op`.
    fn has_op(words: &[u32], op: u32) -> bool {
        let mut i = 5;
        while i < words.len() {
            if words[i] & 0xFFFF == op {
                return true;
            }
            i += (words[i] >> 16).max(1) as usize;
        }
        false
    }

    /// Every OpTypeCooperativeMatrixKHR of a module at subgroup scope as (component
    /// bits, rows, columns, use: 0 A, 1 B, 2 accumulator), its operands' ids resolved
    /// through the module's OpTypeFloat and 32-bit OpConstant.
    fn coop_types(words: &[u32]) -> Vec<(u32, u32, u32, u32)> {
        const OP_TYPE_FLOAT: u32 = 22;
        const OP_CONSTANT: u32 = 43;
        const OP_TYPE_COOP: u32 = 4456;
        const SCOPE_SUBGROUP: u32 = 3;
        let mut floats = std::collections::HashMap::new();
        let mut constants = std::collections::HashMap::new();
        let mut coops = Vec::new();
        let mut i = 5;
        while i < words.len() {
            let (count, op) = ((words[i] >> 16) as usize, words[i] & 0xFFFF);
            let ins = &words[i..(i + count.max(1)).min(words.len())];
            match (op, ins.len()) {
                (OP_TYPE_FLOAT, 3..) => {
                    floats.insert(ins[1], ins[2]);
                }
                (OP_CONSTANT, 4) => {
                    constants.insert(ins[2], ins[3]);
                }
                (OP_TYPE_COOP, 7) => coops.push([ins[2], ins[3], ins[4], ins[5], ins[6]]),
                _ => {}
            }
            i += count.max(1);
        }
        coops
            .into_iter()
            .map(|[component, scope, rows, columns, usage]| {
                assert_eq!(constants[&scope], SCOPE_SUBGROUP);
                (
                    floats[&component],
                    constants[&rows],
                    constants[&columns],
                    constants[&usage],
                )
            })
            .collect()
    }

    /// The cooperative-matrix GEMM (every op, every quantized type) as the Vulkan
    /// backend compiles it for a device with VK_KHR_cooperative_matrix: naga validates it
    /// with the capability, and the SPIR-V declares CooperativeMatrixKHR and the Vulkan
    /// memory model, loads, multiply-adds and stores cooperative matrices of 16 × 16. Its
    /// twin declares none of it; without the capability the native variant is refused.
    #[test]
    fn coop_variants_are_cooperative_matrix_spirv() {
        const CAP_COOP: u32 = 6022;
        const CAP_VULKAN_MEMORY_MODEL: u32 = 5345;
        const OP_TYPE_COOP: u32 = 4456;
        const OP_COOP_LOAD: u32 = 4457;
        const OP_COOP_STORE: u32 = 4458;
        const OP_COOP_MUL_ADD: u32 = 4459;
        const OP_MEMORY_MODEL: u32 = 14;
        const MEMORY_MODEL_VULKAN: u32 = 3;
        let coop_target = Target {
            coop_matrix: true,
            ..target(true)
        };
        let mut c = Compiler::new(coop_target, &Cache::Off);
        let coops: Vec<_> = crate::sources::all_variants()
            .into_iter()
            .filter(|v| v.coop.is_some())
            .collect();
        let quantized = crate::sources::WEIGHT_DTYPES
            .iter()
            .filter(|d| d.is_quantized())
            .count();
        assert_eq!(coops.len(), 2 * 7 * quantized, "native and twin, 7 ops");
        for v in &coops {
            let name = v.name();
            let words = c.spirv(&name, &v.source().unwrap()).expect("compiles");
            let native = v.coop == Some(crate::Coop::Native);
            for cap in [CAP_COOP, CAP_VULKAN_MEMORY_MODEL] {
                assert_eq!(declares(&words, cap), native, "{name} capability {cap}");
            }
            for op in [OP_TYPE_COOP, OP_COOP_LOAD, OP_COOP_STORE, OP_COOP_MUL_ADD] {
                assert_eq!(has_op(&words, op), native, "{name} opcode {op}");
            }
            // OpMemoryModel Logical Vulkan: 3 words from the instruction's.
            let model = words[5..]
                .windows(3)
                .any(|w| w[0] == (3 << 16 | OP_MEMORY_MODEL) && w[2] == MEMORY_MODEL_VULKAN);
            assert_eq!(model, native, "{name}: the Vulkan memory model");
        }
        // The matrix types: 16 × 16 at subgroup scope, f16 A and B, f32 C, as the Vulkan
        // backend finds the configuration.
        let native = coops
            .iter()
            .find(|v| v.coop == Some(crate::Coop::Native))
            .unwrap();
        let source = native.source().unwrap();
        let words = c.spirv(&native.name(), &source).unwrap();
        let mut types = coop_types(&words);
        types.sort();
        assert_eq!(types, [(16, 16, 16, 0), (16, 16, 16, 1), (32, 16, 16, 2)]);
        let refused = Compiler::new(target(true), &Cache::Off).spirv(&native.name(), &source);
        assert!(matches!(refused, Err(KernelError::Compile(_))));
        for v in crate::sources::all_variants()
            .into_iter()
            .filter(|v| v.coop.is_none() && v.op.contains("gemm"))
        {
            let words = c.spirv(&v.name(), &v.source().unwrap()).expect("compiles");
            assert!(!declares(&words, CAP_COOP), "{}", v.name());
        }
    }

    /// The int8 matvec's dot products: OpSDot where the device has them, byte products
    /// where it does not.
    #[test]
    fn integer_dot_products_are_opsdot_or_polyfilled() {
        const OP_SDOT: u32 = 4450;
        let has_sdot = |words: &[u32]| {
            // Instructions from word 5: (word count << 16) | opcode.
            let mut i = 5;
            while i < words.len() {
                if words[i] & 0xFFFF == OP_SDOT {
                    return true;
                }
                i += (words[i] >> 16).max(1) as usize;
            }
            false
        };
        for integer_dot in [true, false] {
            for subgroups in [false, true] {
                let t = Target {
                    integer_dot,
                    ..target(subgroups)
                };
                let mut c = Compiler::new(t, &Cache::Off);
                let matvecs = crate::sources::all_variants()
                    .into_iter()
                    .filter(|v| v.subgroups == subgroups && v.op.starts_with("matvec_q8"));
                for v in matvecs {
                    let words = c.spirv(&v.name(), &v.source().unwrap()).expect("compiles");
                    assert_eq!(has_sdot(&words), integer_dot, "{}", v.name());
                }
            }
        }
    }

    #[test]
    fn every_variant_compiles_to_spirv() {
        for subgroups in [false, true] {
            let mut c = Compiler::new(target(subgroups), &Cache::Off);
            for v in crate::sources::all_variants()
                .into_iter()
                .filter(|v| v.subgroups == subgroups && v.coop != Some(crate::Coop::Native))
            {
                let source = v.source().expect("source");
                let words = c.spirv(&v.name(), &source).expect("compiles");
                assert_eq!(words[0], SPIRV_MAGIC, "{}", v.name());
            }
            assert_eq!(c.stats().hits, 0);
        }
    }

    /// The disk cache itself (damaged files, tags) is kiln-gpu-host's; here: a second
    /// compiler hits, and other writer options are another key.
    #[test]
    fn the_cache_is_keyed_by_source_and_options() {
        let dir = std::env::temp_dir().join(format!("kiln-spirv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = Cache::Dir(dir.clone());
        let v = crate::sources::all_variants()[0];
        let source = v.source().expect("source");
        let mut first = Compiler::new(target(false), &cache);
        let words = first.spirv(&v.name(), &source).unwrap();
        let mut second = Compiler::new(target(false), &cache);
        assert_eq!(second.spirv(&v.name(), &source).unwrap(), words);
        let stats = |c: &Compiler| (c.stats().hits, c.stats().built);
        assert_eq!((stats(&first), stats(&second)), ((0, 1), (1, 0)));
        let mut sg = Compiler::new(target(true), &cache);
        sg.spirv(&v.name(), &source).unwrap();
        assert_eq!(stats(&sg), (0, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
