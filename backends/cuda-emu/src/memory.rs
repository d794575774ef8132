//! Device memory of the emulator: host allocations whose addresses are the device
//! addresses the lowering bakes into the argument structs. 256-byte aligned, as
//! cuMemAlloc's are (the kernels' 16-byte loads and cp.async rely on it). The buffer is
//! a raw allocation, so the kernels' writes through its address and the host's reads
//! of [`DeviceBuf::bytes`] share one provenance (no borrow is invalidated behind them).

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;

/// A device buffer: `len` bytes at a fixed host address.
pub struct DeviceBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively; access goes through &self / &mut
// self (and kernel launches, which the owner serialises).
unsafe impl Send for DeviceBuf {}
// SAFETY: as above: &self only reads.
unsafe impl Sync for DeviceBuf {}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuf({} bytes at {:#x})", self.len, self.addr())
    }
}

impl DeviceBuf {
    /// `len` bytes (at least 256 allocated, so the address is never null), filled with
    /// `poison` (memory a kernel reads before anything writes it shows up as garbage);
    /// None when the host cannot allocate them.
    pub fn new(len: usize, poison: u8) -> Option<DeviceBuf> {
        let size = len.checked_next_multiple_of(256)?.max(256);
        let layout = Layout::from_size_align(size, 256).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc(layout) })?;
        // SAFETY: `size` bytes were just allocated at ptr.
        unsafe { ptr.as_ptr().write_bytes(poison, size) };
        Some(DeviceBuf { ptr, layout, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device (= host) address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes at ptr, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
