//! Device memory as the host logic holds it: a buffer with its length and address,
//! allocated and copied with the checks every device shares (out of memory is
//! `OutOfMemory`, a range outside the buffer `BadStep`, before the device is asked).

use kiln_ir::backend::BackendError;

use super::device::{Contents, Device, driver_error};

/// A device buffer, its length in bytes and its device address.
pub struct Allocation<D: Device> {
    /// The device's own buffer.
    pub raw: D::Buffer,
    len: usize,
    addr: u64,
}

impl<D: Device> std::fmt::Debug for Allocation<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Allocation({} bytes at {:#x})", self.len, self.addr)
    }
}

/// A buffer of `bytes` (at least 16) that will hold `contents`; out of memory is
/// OutOfMemory, any other failure names `what`.
pub fn alloc<D: Device>(
    device: &D,
    bytes: u64,
    what: &str,
    contents: Contents,
) -> Result<Allocation<D>, BackendError> {
    let oom = || BackendError::OutOfMemory {
        backend: D::NAME,
        bytes,
    };
    let len = usize::try_from(bytes.max(16)).map_err(|_| oom())?;
    let raw = device.alloc(len, contents).map_err(|e| {
        if D::is_out_of_memory(&e) {
            oom()
        } else {
            driver_error::<D>(&format!("allocating {what} ({bytes} bytes)"), e)
        }
    })?;
    let addr = device.address(&raw);
    Ok(Allocation { raw, len, addr })
}

impl<D: Device> Allocation<D> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address (what the kernels' argument structs hold).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Copy `data` in at `offset`, in the work's order.
    pub fn write(
        &mut self,
        device: &D,
        offset: usize,
        data: &[u8],
        what: &str,
    ) -> Result<(), BackendError> {
        if data.is_empty() {
            return Ok(());
        }
        self.check(offset, data.len(), what)?;
        device
            .write(&mut self.raw, offset, data)
            .map_err(|e| driver_error::<D>(&format!("uploading {what}"), e))
    }

    /// Copy `out.len()` bytes at `offset` to the host, after the queued work.
    pub fn read(
        &self,
        device: &D,
        offset: usize,
        out: &mut [u8],
        what: &str,
    ) -> Result<(), BackendError> {
        if out.is_empty() {
            return Ok(());
        }
        self.check(offset, out.len(), what)?;
        device
            .read(&self.raw, offset, out)
            .map_err(|e| driver_error::<D>(&format!("reading {what}"), e))
    }

    /// `n` bytes at `offset` lie in the buffer.
    fn check(&self, offset: usize, n: usize, what: &str) -> Result<(), BackendError> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(BackendError::BadStep {
                backend: D::NAME,
                reason: format!("{n} bytes at {offset} outside {what}"),
            }),
        }
    }
}
