//! Device memory of the emulator: host allocations whose addresses are the device
//! addresses the lowering bakes into the argument structs. 256-byte aligned, as
//! cuMemAlloc's are (the kernels' 16-byte loads and cp.async rely on it).

/// One aligned unit of a buffer.
#[derive(Clone, Copy)]
#[repr(C, align(256))]
struct Unit([u8; 256]);

/// A device buffer: `len` bytes at a fixed host address (never reallocated).
pub struct DeviceBuf {
    units: Vec<Unit>,
    len: usize,
}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuf({} bytes at {:#x})", self.len, self.addr())
    }
}

impl DeviceBuf {
    /// `len` bytes (at least one unit, so the address is never null), filled with
    /// `poison` (memory a kernel reads before anything writes it shows up as garbage).
    pub fn new(len: usize, poison: u8) -> DeviceBuf {
        DeviceBuf {
            units: vec![Unit([poison; 256]); len.div_ceil(256).max(1)],
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device (= host) address.
    pub fn addr(&self) -> u64 {
        self.units.as_ptr() as u64
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the units are `units.len() · 256 ≥ len` contiguous initialised bytes.
        unsafe { std::slice::from_raw_parts(self.units.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.units.as_mut_ptr().cast::<u8>(), self.len) }
    }
}
