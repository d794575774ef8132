//! The upload plan of a GPU backend: host bytes go to the device through a staging area of
//! at most [`Staging::MAX_BYTES`], filled piece by piece and flushed (copied and waited
//! for) when full, so that loading a model never holds more than that in flight. Where a
//! piece lies in the staging area and when to flush is decided here; the copies are the
//! backend's (Vulkan: a staging buffer and copy commands; wgpu: queue writes, whose own
//! staging is submitted at each flush), through [`StagedCopies`]; [`Uploader`] drives
//! them.

use std::ops::Range;

use kiln_ir::backend::BackendError;

/// Alignment of each piece in the staging area.
const ALIGN: u64 = 16;

/// A staging area and how full it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staging {
    capacity: u64,
    used: u64,
}

/// One piece of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Flush what is staged before this piece (the area is full).
    pub flush_first: bool,
    /// Where the piece goes in the staging area.
    pub staging: u64,
    /// Which bytes of the upload it holds (also its offset from the destination's).
    pub bytes: Range<usize>,
}

impl Staging {
    /// The largest staging area: uploads of more go in pieces.
    pub const MAX_BYTES: u64 = 64 << 20;

    /// A staging area for uploads of about `total` bytes (at most [`Self::MAX_BYTES`]).
    pub fn new(total: u64) -> Staging {
        let capacity = total
            .clamp(ALIGN, Staging::MAX_BYTES)
            .next_multiple_of(ALIGN);
        Staging { capacity, used: 0 }
    }

    /// Bytes of the staging area.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether anything is staged and not yet flushed.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The pieces of an upload of `len` bytes, in order; the area counts them as staged.
    pub fn place(&mut self, len: usize) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut done = 0;
        while done < len {
            let flush_first = self.used == self.capacity;
            if flush_first {
                self.used = 0;
            }
            let n = ((self.capacity - self.used) as usize).min(len - done);
            pieces.push(Piece {
                flush_first,
                staging: self.used,
                bytes: done..done + n,
            });
            // Each piece starts aligned in the staging area.
            self.used = (self.used + n as u64)
                .next_multiple_of(ALIGN)
                .min(self.capacity);
            done += n;
        }
        pieces
    }

    /// What was staged has been flushed.
    pub fn flushed(&mut self) {
        self.used = 0;
    }
}

/// A piece of an upload to stage (`B`: the device's buffer).
#[derive(Debug)]
pub struct Staged<'a, B> {
    /// Where it goes: `dst` at byte `offset`, at the next flush.
    pub dst: &'a B,
    pub offset: u64,
    /// Where it lies in the staging area ([`Piece::staging`]).
    pub staging: u64,
    pub bytes: &'a [u8],
}

/// A device's side of an upload through a staging area (`B`: its buffer).
pub trait StagedCopies<B> {
    /// Put a piece in the staging area.
    fn stage(&mut self, piece: Staged<'_, B>) -> Result<(), BackendError>;
    /// Copy everything staged to its destination and wait.
    fn flush(&mut self) -> Result<(), BackendError>;
}

/// Uploads through a [`Staging`] area: each write cut into pieces, flushed when the area
/// is full and at [`Uploader::finish`].
#[derive(Debug)]
pub struct Uploader<C> {
    plan: Staging,
    copies: C,
}

impl<C> Uploader<C> {
    /// An uploader through the staging area `plan` (empty), whose copies are `copies`.
    pub fn new(plan: Staging, copies: C) -> Uploader<C> {
        Uploader { plan, copies }
    }

    /// Write `bytes` at byte `offset` of `dst`.
    pub fn write<B>(&mut self, dst: &B, offset: u64, bytes: &[u8]) -> Result<(), BackendError>
    where
        C: StagedCopies<B>,
    {
        for piece in self.plan.place(bytes.len()) {
            if piece.flush_first {
                self.copies.flush()?;
            }
            self.copies.stage(Staged {
                dst,
                offset: offset + piece.bytes.start as u64,
                staging: piece.staging,
                bytes: &bytes[piece.bytes],
            })?;
        }
        Ok(())
    }

    /// Flush what is still staged, and give the device's copies back.
    pub fn finish<B>(mut self) -> Result<C, BackendError>
    where
        C: StagedCopies<B>,
    {
        if !self.plan.is_empty() {
            self.plan.flushed();
            self.copies.flush()?;
        }
        Ok(self.copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies into host vectors, flushes counted.
    #[derive(Default)]
    struct HostCopies {
        staged: Vec<(usize, u64, u64, Vec<u8>)>,
        flushes: usize,
    }

    impl StagedCopies<usize> for HostCopies {
        fn stage(&mut self, p: Staged<'_, usize>) -> Result<(), BackendError> {
            (self.staged).push((*p.dst, p.offset, p.staging, p.bytes.to_vec()));
            Ok(())
        }
        fn flush(&mut self) -> Result<(), BackendError> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn an_uploader_stages_pieces_and_flushes_when_full_and_at_the_end() {
        let mut up = Uploader::new(Staging::new(40), HostCopies::default());
        assert_eq!(up.plan.capacity(), 48);
        let a: Vec<u8> = (1..=30).collect();
        let b: Vec<u8> = (101..=130).collect();
        up.write(&0, 5, &a).unwrap();
        up.write(&1, 1000, &b).unwrap();
        let copies = up.finish().unwrap();
        // a at 0..30; b's first 16 bytes fill 32..48, the rest after a flush.
        assert_eq!(copies.flushes, 2);
        assert_eq!(
            copies.staged,
            [
                (0, 5, 0, a.clone()),
                (1, 1000, 32, b[..16].to_vec()),
                (1, 1016, 0, b[16..].to_vec()),
            ]
        );
        let empty = Uploader::new(Staging::new(40), HostCopies::default()).finish::<usize>();
        assert_eq!(empty.unwrap().flushes, 0, "nothing staged, nothing flushed");
    }

    #[test]
    fn uploads_fill_the_area_then_flush() {
        let mut s = Staging::new(100);
        assert_eq!(s.capacity(), 112);
        let a = s.place(30);
        assert_eq!(
            a,
            [Piece {
                flush_first: false,
                staging: 0,
                bytes: 0..30
            }]
        );
        // Aligned after the first; the second spills over a flush.
        let b = s.place(90);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].staging, b[0].bytes.clone()), (32, 0..80));
        assert!(!b[0].flush_first && b[1].flush_first);
        assert_eq!((b[1].staging, b[1].bytes.clone()), (0, 80..90));
        assert!(!s.is_empty());
        s.flushed();
        assert!(s.is_empty());
        assert_eq!(s.place(0), []);
        let big = Staging::new(1 << 40);
        assert_eq!(big.capacity(), Staging::MAX_BYTES);
        let mut odd = Staging::new(7 * 16 + 3);
        let pieces = odd.place(1000);
        let covered: usize = pieces.iter().map(|p| p.bytes.len()).sum();
        assert_eq!(covered, 1000);
        assert!(pieces.iter().all(|p| p.staging % 16 == 0));
        assert!(
            pieces
                .iter()
                .all(|p| p.staging + p.bytes.len() as u64 <= odd.capacity())
        );
    }
}
