//! Buffers with their own memory: device-local ones (what the kernels bind), and
//! host-visible, persistently mapped ones (staging for uploads, readback). Uploads to
//! device-local buffers go through staging copies.

use std::sync::Arc;

use ash::vk;
use kiln_gpu_host::upload::Staging;
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

    fn check(&self, offset: u64, len: usize) -> Result<Mapped, BackendError> {
        let fits = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.size);
        match self.mapped {
            Some(m) if fits => Ok(m),
            _ => Err(BackendError::BadStep {
                backend: NAME,
                reason: format!(
                    "{len} bytes at {offset} of a {}-byte {} buffer",
                    self.size,
                    if self.mapped.is_some() {
                        "host"
                    } else {
                        "device"
                    }
                ),
            }),
        }
    }

    /// Write a host-visible buffer. The device must not be using these bytes.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let m = self.check(offset, data.len())?;
        // SAFETY: the range is inside the mapping (checked); `&mut self` and the callers'
        // fence waits make the host the only user of these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), m.0.add(offset as usize), data.len())
        };
        Ok(())
    }

    /// Read a host-visible buffer. The device must be done writing these bytes.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let m = self.check(offset, out.len())?;
        // SAFETY: the range is inside the mapping (checked); the device finished writing
        // (callers wait for the fence of the copy first).
        unsafe {
            std::ptr::copy_nonoverlapping(m.0.add(offset as usize), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }
}

/// Copies host bytes into device buffers through one staging buffer (kiln-gpu-host's
/// upload plan), a command buffer of copies per flush.
pub(crate) struct Uploader {
    vk: Arc<Vk>,
    staging: Option<Buffer>,
    plan: Staging,
    /// (destination, copy) pending in the staging buffer.
    pending: Vec<(vk::Buffer, vk::BufferCopy)>,
}

impl Uploader {
    /// An uploader for about `total` bytes.
    pub fn new(vk: &Arc<Vk>, total: u64) -> Uploader {
        Uploader {
            vk: vk.clone(),
            staging: None,
            plan: Staging::new(total),
            pending: Vec::new(),
        }
    }

    pub fn push(&mut self, dst: &Buffer, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > dst.size) {
            return Err(BackendError::BadStep {
                backend: NAME,
                reason: format!("{len} bytes at {offset} of a {}-byte buffer", dst.size),
            });
        }
        for piece in self.plan.place(data.len()) {
            if piece.flush_first {
                self.copy_pending()?;
            }
            let staging = match &mut self.staging {
                Some(s) => s,
                None => (self.staging).insert(Buffer::new(
                    &self.vk,
                    "staging",
                    self.plan.capacity(),
                    Kind::Upload,
                )?),
            };
            staging.write(piece.staging, &data[piece.bytes.clone()])?;
            let copy = vk::BufferCopy {
                src_offset: piece.staging,
                dst_offset: offset + piece.bytes.start as u64,
                size: piece.bytes.len() as u64,
            };
            self.pending.push((dst.raw, copy));
        }
        Ok(())
    }

    /// Copy everything pending and wait.
    pub fn flush(&mut self) -> Result<(), BackendError> {
        self.plan.flushed();
        self.copy_pending()
    }

    /// Copy what is staged (the plan already counts the staging area as empty) and wait.
    fn copy_pending(&mut self) -> Result<(), BackendError> {
        let (Some(staging), false) = (&self.staging, self.pending.is_empty()) else {
            return Ok(());
        };
        let (vk, src) = (&self.vk, staging.raw);
        let pending = std::mem::take(&mut self.pending);
        vk.oneshot(|cb| {
            for (dst, copy) in &pending {
                // SAFETY: `cb` is recording; both buffers live until the oneshot has
                // waited; the ranges were checked in `push`.
                unsafe {
                    vk.device
                        .cmd_copy_buffer(cb, src, *dst, std::slice::from_ref(copy))
                };
            }
        })
    }
}
