//! First-fit allocator over one partition's address range (the same range is reserved in
//! every partition). Free blocks are kept sorted and coalesced; allocation and free are
//! linear in the number of free blocks, which stays small for tile-sized allocations.

// Block lists are indexed by positions found in the same lists.
#![allow(clippy::indexing_slicing)]

/// A first-fit allocator of `[0, capacity)` with a fixed alignment.
#[derive(Clone, Debug)]
pub(crate) struct Allocator {
    capacity: usize,
    alignment: usize,
    /// Sorted, non-overlapping, non-adjacent free blocks `(offset, len)`.
    free: Vec<(usize, usize)>,
}

impl Allocator {
    pub(crate) fn new(capacity: usize, alignment: usize) -> Self {
        Allocator {
            capacity,
            alignment: alignment.max(1),
            free: vec![(0, capacity)],
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rounds a request up to the alignment (saturating; a huge request simply fails).
    pub(crate) fn rounded(&self, len: usize) -> usize {
        len.div_ceil(self.alignment).saturating_mul(self.alignment)
    }

    /// The largest free block, for error messages.
    pub(crate) fn largest_free(&self) -> usize {
        self.free.iter().map(|b| b.1).max().unwrap_or(0)
    }

    /// Reserves `len` bytes (rounded up to the alignment); `None` when nothing fits.
    pub(crate) fn alloc(&mut self, len: usize) -> Option<(usize, usize)> {
        let len = self.rounded(len.max(1));
        let idx = self.free.iter().position(|b| b.1 >= len)?;
        let (off, blen) = self.free[idx];
        if blen == len {
            self.free.remove(idx);
        } else {
            self.free[idx] = (off + len, blen - len);
        }
        Some((off, len))
    }

    /// Returns a block obtained from [`Allocator::alloc`].
    pub(crate) fn release(&mut self, offset: usize, len: usize) {
        let idx = self.free.partition_point(|b| b.0 < offset);
        self.free.insert(idx, (offset, len));
        // Coalesce with the next block, then with the previous one.
        if idx + 1 < self.free.len() && self.free[idx].0 + self.free[idx].1 == self.free[idx + 1].0
        {
            self.free[idx].1 += self.free[idx + 1].1;
            self.free.remove(idx + 1);
        }
        if idx > 0 && self.free[idx - 1].0 + self.free[idx - 1].1 == self.free[idx].0 {
            self.free[idx - 1].1 += self.free[idx].1;
            self.free.remove(idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_reuses_and_coalesces() {
        let mut a = Allocator::new(1024, 64);
        let x = a.alloc(100).unwrap();
        assert_eq!(x, (0, 128));
        let y = a.alloc(256).unwrap();
        assert_eq!(y, (128, 256));
        assert!(a.alloc(1024).is_none());
        a.release(x.0, x.1);
        a.release(y.0, y.1);
        assert_eq!(a.largest_free(), 1024);
        assert_eq!(a.alloc(1024), Some((0, 1024)));
    }
}
