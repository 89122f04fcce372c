//! Shapes, strides and views.
//!
//! A [`Layout`] maps a logical row-major index to a storage offset:
//! `offset + Σ index[d] · strides[d]`. Views (transpose, permute, broadcast batch axes in
//! op specs) only change strides; nothing here touches data. Every element count is
//! checked so that it, and its size in bytes at the widest dtype, fits in `isize`.

// Indices are axis numbers below the rank and positions below the extent of their axis,
// checked on entry of each public function (shapes and strides have the rank's length).
#![allow(clippy::indexing_slicing)]

use crate::{Error, Result};

/// The widest element, in bytes: element counts are bounded so that bytes fit in `isize`.
const MAX_ELEMENT_BYTES: usize = 4;

/// Number of elements of `shape`, or [`Error::SizeOverflow`] if it (or its size in bytes)
/// does not fit the address space.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    let overflow = || Error::SizeOverflow {
        shape: shape.to_vec(),
    };
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    if n > isize::MAX as usize / MAX_ELEMENT_BYTES {
        return Err(overflow());
    }
    Ok(n)
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.saturating_mul(d);
    }
    strides
}

/// Numpy-style broadcast of two batch shapes (aligned at the right; a 1 stretches).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shapes(
                    op,
                    a,
                    b,
                    format!("batch axes {a:?} and {b:?} do not broadcast (axis {i}: {da} vs {db})"),
                ));
            }
        };
    }
    Ok(out)
}

/// Strides that read a tensor of `shape`/`strides` as if broadcast to `target` (a shape
/// at least as long, equal or 1 on each of `shape`'s axes): stride 0 on stretched axes.
pub fn broadcast_strides(shape: &[usize], strides: &[usize], target: &[usize]) -> Vec<usize> {
    let lead = target.len() - shape.len();
    (0..target.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                strides[i - lead]
            }
        })
        .collect()
}

/// Resolves a possibly negative axis (`-1` is the last) against `rank`.
pub fn resolve_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::AxisOutOfRange { op, axis, rank });
    }
    Ok(a as usize)
}

/// Shape, strides (in elements) and offset of a tensor view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// The row-major layout of a fresh tensor of `shape`.
    pub fn contiguous(shape: &[usize]) -> Result<Layout> {
        checked_numel(shape)?;
        Ok(Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        })
    }

    /// A layout from its parts. The caller guarantees that every offset it addresses is
    /// inside the storage it will be used with.
    pub fn from_parts(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Layout {
        debug_assert_eq!(shape.len(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// Sizes of the axes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides of the axes, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (checked when the layout was made).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are stored row-major without gaps (strides of axes of size
    /// 1 do not matter; an empty tensor is contiguous).
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// One past the largest storage offset this view addresses (0 when empty).
    pub fn storage_span(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// The view with axes reordered: axis `i` of the result is axis `perm[i]` of `self`.
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        let valid = perm.len() == rank
            && perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} axes of shape {:?}",
                    self.shape
                ),
            ));
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// The view with the last two axes swapped.
    pub fn transpose_last2(&self) -> Result<Layout> {
        let rank = self.rank();
        if rank < 2 {
            return Err(Error::invalid(
                "t",
                format!(
                    "transpose needs at least two axes, got shape {:?}",
                    self.shape
                ),
            ));
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.permute(&perm)
    }

    /// The same elements under a new shape, as a view when the layout is contiguous
    /// (`Ok(None)` when a copy is needed first). Errors if the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Option<Layout>> {
        let n = checked_numel(shape)?;
        if n != self.numel() {
            return Err(Error::shapes(
                "reshape",
                &self.shape,
                shape,
                format!("{} elements cannot be viewed as {n}", self.numel()),
            ));
        }
        if !self.is_contiguous() {
            return Ok(None);
        }
        Ok(Some(Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: self.offset,
        }))
    }

    /// Storage offsets of every element in logical row-major order.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets {
            layout: self,
            index: vec![0; self.rank()],
            next: self.offset,
            remaining: self.numel(),
        }
    }
}

/// Iterator over the storage offsets of a [`Layout`], in row-major logical order.
#[derive(Debug, Clone)]
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: usize,
    remaining: usize,
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.next;
        // Advance the multi-index like an odometer, keeping the offset in step.
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            self.next += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                break;
            }
            self.next -= self.layout.strides[d] * self.index[d];
            self.index[d] = 0;
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StridedOffsets<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numel_overflow_is_an_error() {
        assert!(matches!(
            checked_numel(&[usize::MAX, 2]),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            checked_numel(&[1 << 40, 1 << 30]),
            Err(Error::SizeOverflow { .. })
        ));
        assert_eq!(checked_numel(&[0, usize::MAX]).ok(), Some(0));
        assert_eq!(checked_numel(&[]).ok(), Some(1));
    }

    #[test]
    fn transposed_offsets_walk_columns() {
        let l = Layout::contiguous(&[2, 3])
            .unwrap()
            .transpose_last2()
            .unwrap();
        assert_eq!(l.shape(), &[3, 2]);
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
        assert_eq!(l.storage_span(), 6);
    }

    #[test]
    fn permute_rejects_non_permutations() {
        let l = Layout::contiguous(&[2, 3, 4]).unwrap();
        assert!(l.permute(&[0, 0, 1]).is_err());
        assert!(l.permute(&[0, 1]).is_err());
        assert!(l.permute(&[0, 1, 3]).is_err());
        assert_eq!(l.permute(&[2, 0, 1]).unwrap().shape(), &[4, 2, 3]);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast_shapes("t", &[2, 1, 4], &[3, 1]).unwrap(),
            vec![2, 3, 4]
        );
        assert!(broadcast_shapes("t", &[2], &[3]).is_err());
        assert_eq!(
            broadcast_strides(&[3, 1], &[5, 7], &[2, 3, 4]),
            vec![0, 5, 0]
        );
    }

    #[test]
    fn axes_resolve_from_either_end() {
        assert_eq!(resolve_axis("t", -1, 3).unwrap(), 2);
        assert_eq!(resolve_axis("t", 0, 3).unwrap(), 0);
        assert!(resolve_axis("t", 3, 3).is_err());
        assert!(resolve_axis("t", -4, 3).is_err());
        assert!(resolve_axis("t", 0, 0).is_err());
    }

    #[test]
    fn size_one_axes_do_not_break_contiguity() {
        let l = Layout::from_parts(vec![3, 1, 4], vec![4, 99, 1], 0);
        assert!(l.is_contiguous());
        let empty = Layout::from_parts(vec![3, 0], vec![1, 3], 0);
        assert!(empty.is_contiguous());
        assert_eq!(empty.storage_span(), 0);
    }
}
