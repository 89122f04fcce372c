//! Cast and strided copy, by DMA through SBUF (HBM → SBUF → HBM; the DMA casts through
//! fp32 when the dtypes differ, rounding to nearest even).
//!
//! A contiguous run is cut into `[128, C]` tiles (partition p holds elements
//! `p·C .. p·C + C` of the tile's span) so every DMA spans all 16 DMA engines. A strided
//! view is gathered with its last two axes as (partition, free) access-pattern pairs and
//! the leading axes walked by the kernel, i.e. the transpose happens in the DMA.

// Kernel code: tile and block indices are bounded by the validated op spec and the
// tile sizes this kernel chose.
#![allow(clippy::indexing_slicing)]

use super::rows_ap;
use crate::{HbmTensor, Result, Simulator};
use xkern_core::{DType, Layout};

/// Elements per partition of one staging tile.
const CHUNK: usize = 2048;

/// Converts `len` elements of `src` from `offset` into `out` (its dtype).
pub(crate) fn cast(
    sim: &mut Simulator,
    src: HbmTensor,
    offset: usize,
    len: usize,
    out: HbmTensor,
) -> Result<()> {
    let parts = sim.config().partitions;
    let dt = out.dtype();
    let cols = len.div_ceil(parts).clamp(1, CHUNK);
    let bufs = [sim.sbuf(parts, cols, dt)?, sim.sbuf(parts, cols, dt)?];
    let mut done = 0;
    let mut i = 0;
    while done < len {
        let left = len - done;
        let (rows, c) = if left >= cols {
            ((left / cols).min(parts), cols)
        } else {
            (1, left)
        };
        let tile = bufs[i % 2].partition_slice(0, rows)?.cols(0, c)?;
        sim.dma_copy(tile, rows_ap(&src, offset + done, rows, c)?)?;
        sim.dma_copy(rows_ap(&out, done, rows, c)?, tile)?;
        done += rows * c;
        i += 1;
    }
    Ok(())
}

/// Gathers the view `layout` of `src` into the contiguous `out`.
pub(crate) fn copy_strided(
    sim: &mut Simulator,
    src: HbmTensor,
    layout: &Layout,
    out: HbmTensor,
) -> Result<()> {
    let shape = layout.shape();
    let strides = layout.strides();
    let rank = shape.len();
    // The last two axes map to (partition, free); a view of rank < 2 gets unit axes.
    let (rows, rs, cols, cs) = match rank {
        0 => (1, 0, 1, 1),
        1 => (1, 0, shape[0], strides[0]),
        _ => (
            shape[rank - 2],
            strides[rank - 2],
            shape[rank - 1],
            strides[rank - 1],
        ),
    };
    let lead = &shape[..rank.saturating_sub(2)];
    let lead_strides = &strides[..rank.saturating_sub(2)];
    let outer: usize = lead.iter().product();
    let parts = sim.config().partitions;
    let c_chunk = cols.clamp(1, CHUNK);
    let dt: DType = out.dtype();
    let bufs = [
        sim.sbuf(parts.min(rows), c_chunk, dt)?,
        sim.sbuf(parts.min(rows), c_chunk, dt)?,
    ];
    let mut i = 0;
    let mut index = vec![0usize; lead.len()];
    for o in 0..outer {
        // Unravel o over the leading axes.
        let mut rem = o;
        for (d, &n) in lead.iter().enumerate().rev() {
            index[d] = rem % n;
            rem /= n;
        }
        let base = layout.offset()
            + index
                .iter()
                .zip(lead_strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        for r0 in (0..rows).step_by(parts) {
            let nr = parts.min(rows - r0);
            for c0 in (0..cols).step_by(c_chunk) {
                let nc = c_chunk.min(cols - c0);
                let tile = bufs[i % 2].partition_slice(0, nr)?.cols(0, nc)?;
                let ap = src.pattern(base + r0 * rs + c0 * cs, [rs, nr], &[[cs, nc]])?;
                sim.dma_copy(tile, ap)?;
                let dst = out.pattern((o * rows + r0) * cols + c0, [cols, nr], &[[1, nc]])?;
                sim.dma_copy(dst, tile)?;
                i += 1;
            }
        }
    }
    Ok(())
}
