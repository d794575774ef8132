//! WGSL to SPIR-V with naga (parse, validate, write), through the on-disk caches of
//! kiln-gpu-host: the SPIR-V of each kernel variant (`spirv/<key>.spv`, keyed by its WGSL,
//! the naga version and the writer options) and the driver's `VkPipelineCache` blob of
//! each device (`pipelines-<vendor>-<device>-<uuid>.bin`). A missing, unwritable or
//! corrupt cache file is ignored (the kernel is compiled again and the file rewritten),
//! never an error.

use kiln_gpu_host::cache::{self, Cache, DiskCache};
use kiln_ir::backend::BackendError;
use naga::back::spv;
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

use crate::device::{DeviceInfo, driver};

/// The naga release the SPIR-V comes from (part of every cache key; bump with the
/// workspace's naga).
const NAGA: &str = "naga 30";
const SPIRV_WORD0: u32 = 0x0723_0203;

/// What the caches did during the last `load_plan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Kernels whose SPIR-V came from the disk cache.
    pub spirv_hits: usize,
    /// Kernels naga compiled (and wrote to the cache, when there is one).
    pub spirv_compiled: usize,
    /// Bytes of pipeline cache data the driver was given at load (0: none or rejected).
    pub pipeline_cache_bytes: usize,
}

/// Compiles kernels with one set of writer options and caches the results.
pub(crate) struct Compiler {
    options: spv::Options<'static>,
    subgroups: bool,
    /// Options and naga version, in every key.
    key: String,
    cache: DiskCache,
    /// Bytes of pipeline cache data the driver took at load.
    pub pipeline_cache_bytes: usize,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiler({}, cache {:?})", self.key, self.cache.dir())
    }
}

impl Compiler {
    pub fn new(info: &DeviceInfo, subgroups: bool, cache: &Cache) -> Compiler {
        use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
        let lang_version = match info.api_version {
            v if v >= ash::vk::API_VERSION_1_3 => (1, 6),
            v if v >= ash::vk::API_VERSION_1_2 => (1, 5),
            _ => (1, 3),
        };
        let zero_init = if info.zero_init_workgroup {
            spv::ZeroInitializeWorkgroupMemoryMode::Native
        } else {
            spv::ZeroInitializeWorkgroupMemoryMode::Polyfill
        };
        // The same checks as wgpu's (WGSL's semantics: indices clamped, workgroup memory
        // zeroed), so both backends run the same kernels the same way.
        let options = spv::Options {
            lang_version,
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
            ..spv::Options::default()
        };
        let key = format!(
            "{NAGA}; spv {lang_version:?}; {:?}; {:?}; loops {}; div {}; subgroups {subgroups}",
            options.bounds_check_policies,
            options.zero_initialize_workgroup_memory,
            options.force_loop_bounding,
            options.emit_int_div_checks,
        );
        Compiler {
            options,
            subgroups,
            key,
            cache: DiskCache::new(cache),
            pipeline_cache_bytes: 0,
        }
    }

    /// What the caches did so far.
    pub fn stats(&self) -> CacheStats {
        let spirv = self.cache.stats();
        CacheStats {
            spirv_hits: spirv.hits,
            spirv_compiled: spirv.built,
            pipeline_cache_bytes: self.pipeline_cache_bytes,
        }
    }

    /// The SPIR-V of a kernel: from the cache, or compiled (and cached).
    pub fn spirv(&mut self, name: &str, wgsl: &str) -> Result<Vec<u32>, BackendError> {
        let file = format!(
            "spirv/{}.spv",
            cache::key(&[self.key.as_bytes(), b"\0", wgsl.as_bytes()])
        );
        let bytes = self
            .cache
            .get_or_build(&file, wgsl.len() as u64, is_spirv, || {
                let words = self.compile(name, wgsl)?;
                Ok(kiln_gpu_host::output::le_bytes(&words))
            })?;
        let mut words = vec![0u32; bytes.len() / 4];
        kiln_gpu_host::output::u32s_from_le(&bytes, &mut words);
        Ok(words)
    }

    fn compile(&self, name: &str, wgsl: &str) -> Result<Vec<u32>, BackendError> {
        let module = naga::front::wgsl::parse_str(wgsl)
            .map_err(|e| driver(format!("{name}: {}", e.emit_to_string(wgsl))))?;
        let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if self.subgroups {
            caps |= Capabilities::SUBGROUP;
        }
        let mut validator = Validator::new(ValidationFlags::all(), caps);
        if self.subgroups {
            validator
                .subgroup_stages(ShaderStages::COMPUTE)
                .subgroup_operations(
                    SubgroupOperationSet::BASIC | SubgroupOperationSet::ARITHMETIC,
                );
        }
        let info = validator
            .validate(&module)
            .map_err(|e| driver(format!("{name}: {}", e.emit_to_string(wgsl))))?;
        let pipeline = spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: kiln_kernels_wgsl::program::ENTRY.to_string(),
        };
        spv::write_vec(&module, &info, &self.options, Some(&pipeline))
            .map_err(|e| driver(format!("{name}: writing SPIR-V: {e}")))
    }

    /// The pipeline cache file of this device.
    fn pipeline_cache_file(info: &DeviceInfo) -> String {
        let uuid: String = info
            .pipeline_cache_uuid
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "pipelines-{:04x}-{:04x}-{uuid}.bin",
            info.vendor_id, info.device_id
        )
    }

    /// The saved pipeline cache of this device, when its header says it is this
    /// device's (the driver checks it again).
    pub fn load_pipeline_cache(&self, info: &DeviceInfo) -> Vec<u8> {
        self.cache
            .read(&Compiler::pipeline_cache_file(info), 0)
            .filter(|data| pipeline_cache_header_ok(data, info))
            .unwrap_or_default()
    }

    pub fn save_pipeline_cache(&self, info: &DeviceInfo, data: &[u8]) {
        if pipeline_cache_header_ok(data, info) {
            self.cache
                .write(&Compiler::pipeline_cache_file(info), 0, data);
        }
    }
}

/// The `VkPipelineCacheHeaderVersionOne` of `data` names this device.
fn pipeline_cache_header_ok(data: &[u8], info: &DeviceInfo) -> bool {
    let word = |i: usize| {
        data.get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let header_len = word(0).unwrap_or(0) as usize;
    header_len >= 32
        && data.len() >= header_len
        && word(1) == Some(1)
        && word(2) == Some(info.vendor_id)
        && word(3) == Some(info.device_id)
        && data.get(16..32) == Some(&info.pipeline_cache_uuid[..])
}

/// Cached bytes that can be SPIR-V: whole words, a header, the magic number.
fn is_spirv(bytes: &[u8]) -> bool {
    bytes.len() >= 20 && bytes.len().is_multiple_of(4) && bytes[..4] == SPIRV_WORD0.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_compiles_to_spirv() {
        let info = crate::device::tests::fake_info();
        for subgroups in [false, true] {
            let mut c = Compiler::new(&info, subgroups, &Cache::Off);
            for v in kiln_kernels_wgsl::sources::all_variants()
                .into_iter()
                .filter(|v| v.subgroups == subgroups)
            {
                let source = v.source().expect("source");
                let words = c.spirv(&v.name(), &source).expect("compiles");
                assert_eq!(words[0], SPIRV_WORD0, "{}", v.name());
            }
            assert_eq!(c.stats().spirv_hits, 0);
        }
    }

    /// The disk cache itself (damaged files, tags) is kiln-gpu-host's; here: a second
    /// compiler hits, and other writer options are another key.
    #[test]
    fn the_cache_is_keyed_by_source_and_options() {
        let dir = std::env::temp_dir().join(format!("kiln-spirv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (info, cache) = (crate::device::tests::fake_info(), Cache::Dir(dir.clone()));
        let v = kiln_kernels_wgsl::sources::all_variants()[0];
        let source = v.source().expect("source");
        let mut first = Compiler::new(&info, false, &cache);
        let words = first.spirv(&v.name(), &source).unwrap();
        let mut second = Compiler::new(&info, false, &cache);
        assert_eq!(second.spirv(&v.name(), &source).unwrap(), words);
        let stats = |c: &Compiler| (c.stats().spirv_hits, c.stats().spirv_compiled);
        assert_eq!((stats(&first), stats(&second)), ((0, 1), (1, 0)));
        let mut sg = Compiler::new(&info, true, &cache);
        sg.spirv(&v.name(), &source).unwrap();
        assert_eq!(stats(&sg), (0, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pipeline_cache_headers_are_checked() {
        let info = crate::device::tests::fake_info();
        let mut data = vec![0u8; 48];
        data[0..4].copy_from_slice(&32u32.to_le_bytes());
        data[4..8].copy_from_slice(&1u32.to_le_bytes());
        data[8..12].copy_from_slice(&info.vendor_id.to_le_bytes());
        data[12..16].copy_from_slice(&info.device_id.to_le_bytes());
        data[16..32].copy_from_slice(&info.pipeline_cache_uuid);
        assert!(pipeline_cache_header_ok(&data, &info));
        let mut other = data.clone();
        other[16] ^= 1;
        assert!(!pipeline_cache_header_ok(&other, &info));
        assert!(!pipeline_cache_header_ok(&data[..20], &info));
        assert!(!pipeline_cache_header_ok(b"garbage", &info));
    }
}
