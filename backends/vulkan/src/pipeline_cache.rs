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
    let id = (info.vendor_id, info.device_id, &info.pipeline_cache_uuid);
    (cache.read(&file(info), 0))
        .filter(|data| header_ok(data, id))
        .unwrap_or_default()
}

pub(crate) fn save(cache: &DiskCache, info: &DeviceInfo, data: &[u8]) {
    if header_ok(
        data,
        (info.vendor_id, info.device_id, &info.pipeline_cache_uuid),
    ) {
        cache.write(&file(info), 0, data);
    }
}

/// The `VkPipelineCacheHeaderVersionOne` of `data` names this device (vendor, device,
/// pipeline cache UUID).
fn header_ok(data: &[u8], (vendor, device, uuid): (u32, u32, &[u8; 16])) -> bool {
    let word = |i: usize| {
        data.get(4 * i..4 * i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let header_len = word(0).unwrap_or(0) as usize;
    header_len >= 32
        && data.len() >= header_len
        && word(1) == Some(1)
        && word(2) == Some(vendor)
        && word(3) == Some(device)
        && data.get(16..32) == Some(&uuid[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_cache_headers_are_checked() {
        let id: (u32, u32, &[u8; 16]) = (0x10005, 7, &[7; 16]);
        let mut data = vec![0u8; 48];
        data[0..4].copy_from_slice(&32u32.to_le_bytes());
        data[4..8].copy_from_slice(&1u32.to_le_bytes());
        data[8..12].copy_from_slice(&id.0.to_le_bytes());
        data[12..16].copy_from_slice(&id.1.to_le_bytes());
        data[16..32].copy_from_slice(id.2);
        assert!(header_ok(&data, id));
        let mut other = data.clone();
        other[16] ^= 1;
        assert!(!header_ok(&other, id));
        assert!(!header_ok(&data[..20], id));
        assert!(!header_ok(b"garbage", id));
    }
}
