//! The upload plan of a GPU backend: host bytes go to the device through a staging area of
//! at most [`Staging::MAX_BYTES`], filled piece by piece and flushed (copied and waited
//! for) when full, so that loading a model never holds more than that in flight. Where a
//! piece lies in the staging area and when to flush is decided here; the copies are the
//! backend's (Vulkan: a staging buffer and copy commands; wgpu: queue writes, whose own
//! staging is submitted at each flush).

use std::ops::Range;

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

#[cfg(test)]
mod tests {
    use super::*;

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
