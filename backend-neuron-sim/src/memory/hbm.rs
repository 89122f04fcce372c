//! HBM tensors and the access patterns that address them.
//!
//! An [`AccessPattern`] is NKI's access pattern: an element offset, a `[stride, size]`
//! pair for the partition axis, and up to two `[stride, size]` pairs for the free axis
//! (outer first), all in elements of the tensor's dtype. A DMA between an access pattern
//! and a tile maps pattern partition `i` to tile partition `i`, and the free elements in
//! row-major order of the pairs.

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::error::{Result, SimError};
use xkern_core::DType;

/// A tensor in (simulated) HBM: a row-major `[rows, cols]` array of one dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HbmTensor {
    pub(crate) alloc: u32,
    pub(crate) sim: u32,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) dtype: DType,
}

impl HbmTensor {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (the contiguous axis).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True for a tensor of no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block `[row0, row0 + nrows) × [col0, col0 + ncols)`: rows on the partition
    /// axis, columns on the free axis.
    pub fn block(
        &self,
        row0: usize,
        nrows: usize,
        col0: usize,
        ncols: usize,
    ) -> Result<AccessPattern> {
        if nrows == 0
            || ncols == 0
            || row0.saturating_add(nrows) > self.rows
            || col0.saturating_add(ncols) > self.cols
        {
            return Err(SimError::OutOfBounds {
                instr: "HbmTensor::block",
                operand: "block",
                detail: format!(
                    "rows {row0}..{} and columns {col0}..{} of a [{}, {}] tensor",
                    row0.saturating_add(nrows),
                    col0.saturating_add(ncols),
                    self.rows,
                    self.cols
                ),
            });
        }
        self.pattern(row0 * self.cols + col0, [self.cols, nrows], &[[1, ncols]])
    }

    /// A general access pattern: `offset`, the partition `[stride, size]`, and one or two
    /// free-axis `[stride, size]` pairs (outer first), in elements.
    pub fn pattern(
        &self,
        offset: usize,
        partition: [usize; 2],
        free: &[[usize; 2]],
    ) -> Result<AccessPattern> {
        let bad = |detail: String| SimError::OutOfBounds {
            instr: "HbmTensor::pattern",
            operand: "access pattern",
            detail,
        };
        if free.is_empty() || free.len() > 2 {
            return Err(bad(format!(
                "{} free-axis pairs given; 1 or 2 are supported",
                free.len()
            )));
        }
        let mut pairs = [[0usize, 1usize]; 2];
        pairs[2 - free.len()..].copy_from_slice(free);
        let mut last = offset;
        for [stride, size] in std::iter::once(partition).chain(pairs) {
            if size == 0 {
                return Err(bad("a size of 0".to_string()));
            }
            last = (size - 1)
                .checked_mul(stride)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| bad("the pattern overflows the address space".to_string()))?;
        }
        if last >= self.len() {
            return Err(bad(format!(
                "it reaches element {last} of a tensor of {} elements",
                self.len()
            )));
        }
        Ok(AccessPattern {
            tensor: *self,
            offset,
            partition,
            free: pairs,
        })
    }
}

/// A view of an HBM tensor for a DMA (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessPattern {
    pub(crate) tensor: HbmTensor,
    pub(crate) offset: usize,
    pub(crate) partition: [usize; 2],
    /// Outer then inner `[stride, size]`; a 1-D free axis has outer `[0, 1]`.
    pub(crate) free: [[usize; 2]; 2],
}

impl AccessPattern {
    /// Partition size.
    pub fn partitions(&self) -> usize {
        self.partition[1]
    }

    /// Free-axis element count.
    pub fn free_size(&self) -> usize {
        self.free[0][1] * self.free[1][1]
    }

    /// The tensor addressed.
    pub fn tensor(&self) -> HbmTensor {
        self.tensor
    }

    /// Bytes of the longest contiguous run per partition (what a DMA descriptor moves).
    pub(crate) fn contiguous_bytes(&self) -> usize {
        let esz = self.tensor.dtype.size_in_bytes();
        let [[os, on], [is, isz]] = self.free;
        if is != 1 {
            return esz;
        }
        if on > 1 && os == isz {
            on * isz * esz
        } else {
            isz * esz
        }
    }

    /// Element index of `(partition i, free element j)`.
    #[inline]
    pub(crate) fn index(&self, i: usize, j: usize) -> usize {
        let inner = self.free[1][1];
        self.offset
            + i * self.partition[0]
            + (j / inner) * self.free[0][0]
            + (j % inner) * self.free[1][0]
    }
}
