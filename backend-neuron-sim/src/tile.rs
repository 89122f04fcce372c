//! Tiles: 2-D views of SBUF or PSUM, a partition axis and a free-axis pattern.
//!
//! A [`Tile`] is a small `Copy` handle: which allocation, the first partition and the
//! number of partitions, a byte address within each partition, and up to two free-axis
//! `[stride, size]` pairs in elements (outer first). Views (`partitions`, `cols`,
//! `block`, `split`) are cheap and alias their allocation; the simulator tracks
//! dependencies by the bytes a view covers, so aliasing views are still ordered.

use crate::error::{Result, SimError};
use crate::memory::MemKind;
use xkern_core::DType;

/// A view of on-chip memory (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub(crate) mem: MemKind,
    pub(crate) alloc: u32,
    pub(crate) sim: u32,
    pub(crate) part_start: usize,
    pub(crate) parts: usize,
    /// Byte address of element `(p, 0)` within partition `p`.
    pub(crate) offset: usize,
    /// Outer then inner `[stride, size]` in elements; a 1-D free axis has outer `[0, 1]`.
    pub(crate) free: [[usize; 2]; 2],
    pub(crate) dtype: DType,
}

impl Tile {
    /// The memory the tile lives in.
    pub fn memory(&self) -> MemKind {
        self.mem
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// First partition.
    pub fn partition_start(&self) -> usize {
        self.part_start
    }

    /// Number of partitions.
    pub fn partitions(&self) -> usize {
        self.parts
    }

    /// Number of elements on the free axis (per partition).
    pub fn free_size(&self) -> usize {
        self.free[0][1] * self.free[1][1]
    }

    /// `[partitions, free size]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.parts, self.free_size()]
    }

    /// True when the free axis is one contiguous run of elements.
    pub fn is_contiguous(&self) -> bool {
        let [[os, on], [is, isz]] = self.free;
        if on == 1 {
            isz == 1 || is == 1
        } else if isz == 1 {
            os == 1
        } else {
            is == 1 && os == isz
        }
    }

    /// Bytes between consecutive elements of the innermost free axis.
    pub(crate) fn minor_stride_bytes(&self) -> usize {
        if self.free[1][1] > 1 {
            self.free[1][0] * self.dtype.size_in_bytes()
        } else {
            self.dtype.size_in_bytes()
        }
    }

    /// Byte range `[lo, hi)` within a partition that the view touches (its bounding range).
    pub(crate) fn byte_range(&self) -> (usize, usize) {
        let esz = self.dtype.size_in_bytes();
        let span =
            self.free[0][0] * (self.free[0][1] - 1) + self.free[1][0] * (self.free[1][1] - 1);
        (self.offset, self.offset + (span + 1) * esz)
    }

    /// Byte address within a partition of free element `j`.
    #[inline]
    pub(crate) fn elem_offset(&self, j: usize) -> usize {
        let inner = self.free[1][1];
        self.offset
            + ((j / inner) * self.free[0][0] + (j % inner) * self.free[1][0])
                * self.dtype.size_in_bytes()
    }

    fn oob(&self, what: &'static str, detail: String) -> SimError {
        SimError::OutOfBounds {
            instr: what,
            operand: "tile",
            detail,
        }
    }

    /// The partitions `[start, start + count)` of this tile (relative to its first).
    pub fn partition_slice(&self, start: usize, count: usize) -> Result<Tile> {
        if count == 0 || start.saturating_add(count) > self.parts {
            return Err(self.oob(
                "Tile::partition_slice",
                format!(
                    "partitions {start}..{} of a tile of {} partitions",
                    start.saturating_add(count),
                    self.parts
                ),
            ));
        }
        Ok(Tile {
            part_start: self.part_start + start,
            parts: count,
            ..*self
        })
    }

    /// Elements `[start, start + count)` of the innermost free axis (all outer indices kept).
    pub fn cols(&self, start: usize, count: usize) -> Result<Tile> {
        let [_, [is, isz]] = self.free;
        if count == 0 || start.saturating_add(count) > isz {
            return Err(self.oob(
                "Tile::cols",
                format!(
                    "columns {start}..{} of an inner free axis of {isz}",
                    start.saturating_add(count)
                ),
            ));
        }
        let mut t = *self;
        t.offset += start * is * self.dtype.size_in_bytes();
        t.free[1][1] = count;
        Ok(t)
    }

    /// Index `i` of the outer free axis: a tile with a 1-D free axis.
    pub fn block(&self, i: usize) -> Result<Tile> {
        let [[os, on], inner] = self.free;
        if i >= on {
            return Err(self.oob(
                "Tile::block",
                format!("block {i} of an outer free axis of {on}"),
            ));
        }
        let mut t = *self;
        t.offset += i * os * self.dtype.size_in_bytes();
        t.free = [[0, 1], inner];
        Ok(t)
    }

    /// Indices `[start, start + count)` of the outer free axis (same inner axis).
    pub fn outer(&self, start: usize, count: usize) -> Result<Tile> {
        let [[os, on], _] = self.free;
        if count == 0 || start.saturating_add(count) > on {
            return Err(self.oob(
                "Tile::outer",
                format!(
                    "blocks {start}..{} of an outer free axis of {on}",
                    start.saturating_add(count)
                ),
            ));
        }
        let mut t = *self;
        t.offset += start * os * self.dtype.size_in_bytes();
        t.free[0][1] = count;
        Ok(t)
    }

    /// Views a contiguous 1-D free axis as `[blocks, len / blocks]` (outer, inner).
    pub fn split(&self, blocks: usize) -> Result<Tile> {
        let n = self.free_size();
        if !self.is_contiguous() || blocks == 0 || !n.is_multiple_of(blocks) {
            return Err(self.oob(
                "Tile::split",
                format!(
                    "cannot split a free axis of {n} elements into {blocks} equal contiguous blocks"
                ),
            ));
        }
        let mut t = *self;
        t.free = [[n / blocks, blocks], [1, n / blocks]];
        Ok(t)
    }
}
