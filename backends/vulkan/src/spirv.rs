//! WGSL to SPIR-V with naga (parse, validate, write), and the on-disk caches: the SPIR-V
//! of each kernel variant, keyed by a hash of its WGSL and of the naga version and writer
//! options, and the driver's `VkPipelineCache` blob of each device. Both live under
//! `$KILN_CACHE_DIR/vulkan`, else `$XDG_CACHE_HOME/kiln/vulkan`, else
//! `~/.cache/kiln/vulkan`. A missing, unwritable or corrupt cache file is ignored (the
//! kernel is compiled again and the file rewritten), never an error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_ir::backend::BackendError;
use naga::back::spv;
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

use crate::device::{DeviceInfo, driver};

/// The naga release the SPIR-V comes from (part of every cache key; bump with the
/// workspace's naga).
const NAGA: &str = "naga 30";
const SPV_MAGIC: &[u8; 8] = b"KILNSPV2";
const PIPELINE_MAGIC: &[u8; 8] = b"KILNPLC1";
const SPIRV_WORD0: u32 = 0x0723_0203;

/// Where the caches go, from the environment; `None` when there is no home to put them.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = std::env::var_os("KILN_CACHE_DIR") {
        // Set but empty: no disk cache.
        return (!dir.is_empty()).then(|| PathBuf::from(dir).join("vulkan"));
    }
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("kiln").join("vulkan"))
}

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

/// FNV-1a, 64 bits, from a given basis: two bases give a 128-bit key.
fn fnv(basis: u64, parts: &[&[u8]]) -> u64 {
    parts.iter().flat_map(|p| p.iter()).fold(basis, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// Compiles kernels with one set of writer options and caches the results.
pub(crate) struct Compiler {
    options: spv::Options<'static>,
    subgroups: bool,
    /// Options and naga version, in every key.
    key: String,
    dir: Option<PathBuf>,
    pub stats: CacheStats,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiler({}, cache {:?})", self.key, self.dir)
    }
}

impl Compiler {
    pub fn new(info: &DeviceInfo, subgroups: bool, dir: Option<PathBuf>) -> Compiler {
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
        if let Some(d) = &dir
            && std::fs::create_dir_all(d.join("spirv")).is_err()
        {
            return Compiler {
                options,
                subgroups,
                key,
                dir: None,
                stats: CacheStats::default(),
            };
        }
        Compiler {
            options,
            subgroups,
            key,
            dir,
            stats: CacheStats::default(),
        }
    }

    fn spirv_path(&self, wgsl: &str) -> Option<PathBuf> {
        let parts: [&[u8]; 3] = [self.key.as_bytes(), b"\0", wgsl.as_bytes()];
        let (a, b) = (
            fnv(0xCBF2_9CE4_8422_2325, &parts),
            fnv(0x6C62_272E_07BB_0142, &parts),
        );
        self.dir
            .as_ref()
            .map(|d| d.join("spirv").join(format!("{a:016x}{b:016x}.spv")))
    }

    /// The SPIR-V of a kernel: from the cache, or compiled (and cached).
    pub fn spirv(&mut self, name: &str, wgsl: &str) -> Result<Vec<u32>, BackendError> {
        let path = self.spirv_path(wgsl);
        if let Some(words) = path.as_deref().and_then(|p| read_spirv(p, wgsl.len())) {
            self.stats.spirv_hits += 1;
            return Ok(words);
        }
        let words = self.compile(name, wgsl)?;
        self.stats.spirv_compiled += 1;
        if let Some(p) = &path {
            let body: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            write_atomically(p, &envelope(SPV_MAGIC, wgsl.len() as u64, &body));
        }
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

    fn pipeline_cache_path(&self, info: &DeviceInfo) -> Option<PathBuf> {
        let uuid: String = info
            .pipeline_cache_uuid
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.as_ref().map(|d| {
            d.join(format!(
                "pipelines-{:04x}-{:04x}-{uuid}.bin",
                info.vendor_id, info.device_id
            ))
        })
    }

    /// The saved pipeline cache of this device, when its header says it is this
    /// device's (the driver checks it again).
    pub fn load_pipeline_cache(&self, info: &DeviceInfo) -> Vec<u8> {
        self.pipeline_cache_path(info)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| {
                open_envelope(&bytes, PIPELINE_MAGIC, 0)
                    .filter(|data| pipeline_cache_header_ok(data, info))
                    .map(<[u8]>::to_vec)
            })
            .unwrap_or_default()
    }

    pub fn save_pipeline_cache(&self, info: &DeviceInfo, data: &[u8]) {
        if let Some(p) = self.pipeline_cache_path(info)
            && pipeline_cache_header_ok(data, info)
        {
            write_atomically(&p, &envelope(PIPELINE_MAGIC, 0, data));
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

/// `magic`, a tag (the WGSL's length, or 0), the body's length and FNV hash, the body:
/// a file cut short or damaged anywhere fails `open_envelope`.
fn envelope(magic: &[u8; 8], tag: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv(0xCBF2_9CE4_8422_2325, &[body]).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn open_envelope<'a>(bytes: &'a [u8], magic: &[u8; 8], tag: u64) -> Option<&'a [u8]> {
    let rest = bytes.strip_prefix(magic)?;
    let (head, body) = rest.split_at_checked(24)?;
    let word = |i: usize| {
        head.get(8 * i..8 * i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    (word(0)? == tag
        && word(1)? == body.len() as u64
        && word(2)? == fnv(0xCBF2_9CE4_8422_2325, &[body]))
    .then_some(body)
}

/// A cached kernel's words, or None when the file is missing or not one of ours.
fn read_spirv(path: &Path, wgsl_len: usize) -> Option<Vec<u32>> {
    let bytes = std::fs::read(path).ok()?;
    let body = open_envelope(&bytes, SPV_MAGIC, wgsl_len as u64)?;
    if body.len() < 20 || !body.len().is_multiple_of(4) {
        return None;
    }
    let words: Vec<u32> = body
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (words[0] == SPIRV_WORD0).then_some(words)
}

/// Write through a temporary file and a rename, so a reader never sees half a file;
/// failures are ignored (the cache is an optimisation).
fn write_atomically(path: &Path, bytes: &[u8]) {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_compiles_to_spirv() {
        let info = crate::device::tests::fake_info();
        for subgroups in [false, true] {
            let mut c = Compiler::new(&info, subgroups, None);
            for v in kiln_kernels_wgsl::sources::all_variants()
                .into_iter()
                .filter(|v| v.subgroups == subgroups)
            {
                let source = v.source().expect("source");
                let words = c.spirv(&v.name(), &source).expect("compiles");
                assert_eq!(words[0], SPIRV_WORD0, "{}", v.name());
            }
            assert_eq!(c.stats.spirv_hits, 0);
        }
    }

    #[test]
    fn the_cache_is_hit_and_a_corrupt_file_is_ignored() {
        let dir = std::env::temp_dir().join(format!("kiln-spirv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let info = crate::device::tests::fake_info();
        let v = kiln_kernels_wgsl::sources::all_variants()[0];
        let source = v.source().expect("source");
        let mut first = Compiler::new(&info, false, Some(dir.clone()));
        let words = first.spirv(&v.name(), &source).unwrap();
        assert_eq!((first.stats.spirv_hits, first.stats.spirv_compiled), (0, 1));
        let mut second = Compiler::new(&info, false, Some(dir.clone()));
        assert_eq!(second.spirv(&v.name(), &source).unwrap(), words);
        assert_eq!(
            (second.stats.spirv_hits, second.stats.spirv_compiled),
            (1, 0)
        );
        // Corrupt every cached file: compiled again, no error.
        for f in std::fs::read_dir(dir.join("spirv")).unwrap() {
            let path = f.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40; // one damaged byte
            std::fs::write(&path, bytes).unwrap();
        }
        let mut third = Compiler::new(&info, false, Some(dir.clone()));
        assert_eq!(third.spirv(&v.name(), &source).unwrap(), words);
        assert_eq!((third.stats.spirv_hits, third.stats.spirv_compiled), (0, 1));
        // Other options, another key.
        let mut sg = Compiler::new(&info, true, Some(dir.clone()));
        sg.spirv(&v.name(), &source).unwrap();
        assert_eq!(sg.stats.spirv_compiled, 1);
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
