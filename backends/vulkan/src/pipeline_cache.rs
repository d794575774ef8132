//! The driver's `VkPipelineCache` blob of each device, kept in the kernel cache's folder
//! beside the SPIR-V (`pipelines-<vendor>-<device>-<uuid>.bin`), and what the caches did
//! during a load. A missing, unwritable or foreign file is ignored, never an error: the
//! header is checked here and again by the driver.

use kiln_gpu_host::DiskCache;

use crate::device::DeviceInfo;

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

/// The pipeline cache file of this device.
fn file(info: &DeviceInfo) -> String {
    let uuid: String = (info.pipeline_cache_uuid.iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    let (vendor, device) = (info.vendor_id, info.device_id);
    format!("pipelines-{vendor:04x}-{device:04x}-{uuid}.bin")
}

/// The saved pipeline cache of this device, when its header says it is this device's
/// (empty otherwise).
pub(crate) fn load(cache: &DiskCache, info: &DeviceInfo) -> Vec<u8> {
    (cache.read(&file(info), 0))
        .filter(|data| header_ok(data, info))
        .unwrap_or_default()
}

pub(crate) fn save(cache: &DiskCache, info: &DeviceInfo, data: &[u8]) {
    if header_ok(data, info) {
        cache.write(&file(info), 0, data);
    }
}

/// The `VkPipelineCacheHeaderVersionOne` of `data` names this device.
fn header_ok(data: &[u8], info: &DeviceInfo) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_cache_headers_are_checked() {
        let info = crate::device::tests::fake_info();
        let mut data = vec![0u8; 48];
        data[0..4].copy_from_slice(&32u32.to_le_bytes());
        data[4..8].copy_from_slice(&1u32.to_le_bytes());
        data[8..12].copy_from_slice(&info.vendor_id.to_le_bytes());
        data[12..16].copy_from_slice(&info.device_id.to_le_bytes());
        data[16..32].copy_from_slice(&info.pipeline_cache_uuid);
        assert!(header_ok(&data, &info));
        let mut other = data.clone();
        other[16] ^= 1;
        assert!(!header_ok(&other, &info));
        assert!(!header_ok(&data[..20], &info));
        assert!(!header_ok(b"garbage", &info));
    }
}
