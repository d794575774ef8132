//! Buffers with their own memory: device-local ones (what the kernels bind), and
//! host-visible, persistently mapped ones (staging for uploads, readback). Uploads to
//! device-local buffers go through staging copies.

use std::sync::Arc;

use ash::vk;
use kiln_gpu_host::check_range;
use kiln_gpu_host::upload::{Staged, StagedCopies};
use kiln_ir::backend::BackendError;

use crate::device::{NAME, Vk, vk_error};

/// The host address of a mapped buffer.
#[derive(Clone, Copy, Debug)]
struct Mapped(*mut u8);

// SAFETY: the mapping lives as long as the Buffer that holds it, and the buffer is only
// read or written through `&self` / `&mut self` methods that check ranges; the device
// side is ordered by fences before the host touches it.
unsafe impl Send for Mapped {}
// SAFETY: as above; concurrent `&self` access only reads.
unsafe impl Sync for Mapped {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Device-local when the device has such memory: bound by the kernels.
    Device,
    /// Host-visible and coherent, mapped: the source of copies to the device.
    Upload,
    /// Host-visible and coherent (cached when possible), mapped: copies from the device.
    Readback,
}

pub(crate) struct Buffer {
    vk: Arc<Vk>,
    pub raw: vk::Buffer,
    memory: vk::DeviceMemory,
    /// Bytes the buffer holds (at least what was asked for).
    pub size: u64,
    mapped: Option<Mapped>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.size)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the buffer and memory (or null, ignored) were created from this device;
        // whoever drops a buffer has waited for the work that used it (Loaded and the
        // backend wait for their fences or the device before dropping).
        unsafe {
            if self.mapped.is_some() {
                self.vk.device.unmap_memory(self.memory);
            }
            self.vk.device.destroy_buffer(self.raw, None);
            self.vk.device.free_memory(self.memory, None);
        }
    }
}

impl Buffer {
    pub fn new(vk: &Arc<Vk>, label: &str, bytes: u64, kind: Kind) -> Result<Buffer, BackendError> {
        let size = bytes.next_multiple_of(4).max(16);
        let transfer = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        let usage = match kind {
            Kind::Device => {
                transfer
                    | vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::UNIFORM_BUFFER
            }
            Kind::Upload | Kind::Readback => transfer,
        };
        let (required, preferred) = match kind {
            Kind::Device => (
                vk::MemoryPropertyFlags::empty(),
                vk::MemoryPropertyFlags::DEVICE_LOCAL,
            ),
            Kind::Upload => (
                vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT,
                vk::MemoryPropertyFlags::empty(),
            ),
            Kind::Readback => (
                vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT,
                vk::MemoryPropertyFlags::HOST_CACHED,
            ),
        };
        let oom = |doing: &str, e: vk::Result| vk_error(&format!("{doing} {label}"), e, bytes);
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: the device is valid; the size is non-zero.
        let raw =
            unsafe { vk.device.create_buffer(&info, None) }.map_err(|e| oom("creating", e))?;
        // From here on, an error drops the buffer, which destroys what exists (null
        // memory is ignored by vkFreeMemory).
        let mut buffer = Buffer {
            vk: vk.clone(),
            raw,
            memory: vk::DeviceMemory::null(),
            size,
            mapped: None,
        };
        // SAFETY: `raw` was just created from this device.
        let needs = unsafe { vk.device.get_buffer_memory_requirements(raw) };
        let type_index =
            (vk.memory_type(needs.memory_type_bits, required, preferred)).ok_or_else(|| {
                BackendError::Unsupported {
                    backend: NAME,
                    what: format!(
                        "a memory type with flags {:#x} for {label}",
                        required.as_raw()
                    ),
                }
            })?;
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(needs.size)
            .memory_type_index(type_index);
        // SAFETY: the type index comes from this device's memory properties.
        buffer.memory =
            unsafe { vk.device.allocate_memory(&alloc, None) }.map_err(|e| oom("allocating", e))?;
        // SAFETY: the memory was allocated for this buffer's requirements, at offset 0.
        unsafe { vk.device.bind_buffer_memory(raw, buffer.memory, 0) }
            .map_err(|e| oom("binding memory of", e))?;
        if kind != Kind::Device {
            let flags = vk::MemoryMapFlags::empty();
            // SAFETY: host-visible memory, mapped once for the buffer's life.
            let p = unsafe { (vk.device).map_memory(buffer.memory, 0, vk::WHOLE_SIZE, flags) }
                .map_err(|e| oom("mapping", e))?;
            buffer.mapped = Some(Mapped(p.cast()));
        }
        Ok(buffer)
    }

    /// The mapping, where `len` bytes at `offset` lie within it (a device buffer has
    /// none).
    fn mapped(&self, offset: u64, len: usize) -> Result<Mapped, BackendError> {
        let (m, what) = match self.mapped {
            Some(m) => (Some(m), "host buffer"),
            None => (None, "device buffer"),
        };
        check_range(NAME, what, offset, len as u64, self.size)?;
        m.ok_or_else(|| crate::device::driver(format!("{len} bytes at {offset} of a {what}")))
    }

    /// Write a host-visible buffer. The device must not be using these bytes.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let m = self.mapped(offset, data.len())?;
        // SAFETY: the range is inside the mapping (checked); `&mut self` and the callers'
        // fence waits make the host the only user of these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), m.0.add(offset as usize), data.len())
        };
        Ok(())
    }

    /// Read a host-visible buffer. The device must be done writing these bytes.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let m = self.mapped(offset, out.len())?;
        // SAFETY: the range is inside the mapping (checked); the device finished writing
        // (callers wait for the fence of the copy first).
        unsafe {
            std::ptr::copy_nonoverlapping(m.0.add(offset as usize), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }
}

/// Copies host bytes into device buffers through one staging buffer (kiln-gpu-host's
/// upload plan drives it), a command buffer of copies per flush.
pub(crate) struct StagingCopies {
    vk: Arc<Vk>,
    staging: Buffer,
    /// (destination, copy) pending in the staging buffer.
    pending: Vec<(vk::Buffer, vk::BufferCopy)>,
}

impl StagingCopies {
    /// Copies through a staging buffer of `capacity` bytes.
    pub fn new(vk: &Arc<Vk>, capacity: u64) -> Result<StagingCopies, BackendError> {
        Ok(StagingCopies {
            vk: vk.clone(),
            staging: Buffer::new(vk, "staging", capacity, Kind::Upload)?,
            pending: Vec::new(),
        })
    }
}

impl StagedCopies<Buffer> for StagingCopies {
    fn stage(&mut self, piece: Staged<'_, Buffer>) -> Result<(), BackendError> {
        let (dst, len) = (piece.dst, piece.bytes.len() as u64);
        check_range(NAME, "buffer", piece.offset, len, dst.size)?;
        self.staging.write(piece.staging, piece.bytes)?;
        let copy = vk::BufferCopy {
            src_offset: piece.staging,
            dst_offset: piece.offset,
            size: len,
        };
        self.pending.push((dst.raw, copy));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (vk, src) = (&self.vk, self.staging.raw);
        let pending = std::mem::take(&mut self.pending);
        vk.oneshot(|cb| {
            for (dst, copy) in &pending {
                // SAFETY: `cb` is recording; both buffers live until the oneshot has
                // waited; the ranges were checked in `stage`.
                unsafe {
                    vk.device
                        .cmd_copy_buffer(cb, src, *dst, std::slice::from_ref(copy))
                };
            }
        })
    }
}
