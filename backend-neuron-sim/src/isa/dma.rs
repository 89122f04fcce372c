//! DMA: `dma_copy` between HBM and SBUF (either direction) or SBUF to SBUF, casting
//! through fp32 when the dtypes differ. PSUM is not a DMA endpoint, and HBM to HBM is
//! not modelled (the tutorial kernels and xkern's kernels never need it).
//!
//! Cost: see [`crate::cost::dma_engine_ns`] and the DMA part of `engines.rs`.

// Simulator code: partition, engine and queue indices are below the fixed counts of
// the configuration, and byte ranges are checked against each allocation before use.
#![allow(clippy::indexing_slicing)]

use crate::error::{Result, SimError};
use crate::memory::{AccessPattern, MemKind};
use crate::numerics;
use crate::sim::{InstrId, Simulator, Timing};
use crate::tile::Tile;
use xkern_core::DType;

/// One end of a DMA: an HBM access pattern or an SBUF tile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DmaEnd {
    /// HBM, through an access pattern.
    Hbm(AccessPattern),
    /// An on-chip tile.
    Tile(Tile),
}

impl From<AccessPattern> for DmaEnd {
    fn from(ap: AccessPattern) -> Self {
        DmaEnd::Hbm(ap)
    }
}

impl From<Tile> for DmaEnd {
    fn from(t: Tile) -> Self {
        DmaEnd::Tile(t)
    }
}

const DMA: &str = "dma_copy";

impl DmaEnd {
    fn shape(&self) -> [usize; 2] {
        match self {
            DmaEnd::Hbm(ap) => [ap.partitions(), ap.free_size()],
            DmaEnd::Tile(t) => t.shape(),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            DmaEnd::Hbm(ap) => ap.tensor.dtype,
            DmaEnd::Tile(t) => t.dtype,
        }
    }
}

impl Simulator {
    fn check_dma_end(&self, operand: &'static str, end: &DmaEnd) -> Result<()> {
        match end {
            DmaEnd::Hbm(ap) => {
                self.check_hbm(DMA, operand, &ap.tensor)?;
                if ap.partitions() > self.cfg.partitions {
                    return Err(SimError::PartitionLimit {
                        instr: DMA,
                        operand,
                        value: ap.partitions(),
                        limit: self.cfg.partitions,
                    });
                }
                Ok(())
            }
            DmaEnd::Tile(t) => {
                self.check_tile(DMA, operand, t)?;
                self.expect_mem(
                    DMA,
                    operand,
                    t,
                    &[MemKind::Sbuf],
                    "SBUF (PSUM is not a DMA endpoint)",
                )
            }
        }
    }

    /// Copies `src` to `dst` (HBM↔SBUF or SBUF→SBUF), casting through fp32.
    pub fn dma_copy(&mut self, dst: impl Into<DmaEnd>, src: impl Into<DmaEnd>) -> Result<InstrId> {
        let (dst, src) = (dst.into(), src.into());
        self.check_dma_end("destination", &dst)?;
        self.check_dma_end("source", &src)?;
        let onchip = match (&dst, &src) {
            (DmaEnd::Tile(t), _) | (_, DmaEnd::Tile(t)) => *t,
            (DmaEnd::Hbm(_), DmaEnd::Hbm(_)) => {
                return Err(SimError::Unsupported {
                    instr: DMA,
                    detail: "HBM to HBM copies are not modelled; stage through SBUF".to_string(),
                });
            }
        };
        if dst.shape() != src.shape() {
            return Err(SimError::ShapeMismatch {
                instr: DMA,
                operand: "destination",
                got: dst.shape().to_vec(),
                expected: src.shape().to_vec(),
            });
        }
        let [parts, free] = src.shape();
        if self.functional() && src.dtype() == dst.dtype() {
            // Same dtype: the DMA moves bytes. Through fp32, u32 values above 2²⁴ (and NaN
            // payloads) would not survive.
            let bytes = self.read_bytes(&src, parts, free);
            self.write_bytes(&dst, parts, free, &bytes);
        } else if self.functional() {
            let values = match &src {
                DmaEnd::Tile(t) => self.read_f32(t),
                DmaEnd::Hbm(ap) => self.read_ap(ap, parts, free),
            };
            match &dst {
                DmaEnd::Tile(t) => self.write_f32(t, &values),
                DmaEnd::Hbm(ap) => self.write_ap(ap, parts, free, &values),
            }
        }
        let fp = |s: &Simulator, e: &DmaEnd| match e {
            DmaEnd::Tile(t) => s.tile_fp(t),
            DmaEnd::Hbm(ap) => s.ap_fp(ap),
        };
        let (rfp, wfp) = (fp(self, &src), fp(self, &dst));
        let contiguous = |e: &DmaEnd| match e {
            DmaEnd::Hbm(ap) => ap.contiguous_bytes(),
            DmaEnd::Tile(t) if t.is_contiguous() => t.free_size() * t.dtype.size_in_bytes(),
            DmaEnd::Tile(t) => t.dtype.size_in_bytes(),
        };
        let esz = |e: &DmaEnd| match e {
            DmaEnd::Hbm(ap) => ap.tensor.dtype.size_in_bytes(),
            DmaEnd::Tile(t) => t.dtype.size_in_bytes(),
        };
        let hbm = matches!(dst, DmaEnd::Hbm(_)) || matches!(src, DmaEnd::Hbm(_));
        let timing = Timing::Dma {
            parts: onchip.part_start..onchip.part_start + onchip.parts,
            bytes_per_partition: free * esz(&src).max(esz(&dst)),
            contiguous: contiguous(&src).min(contiguous(&dst)),
            hbm,
        };
        Ok(self.issue(DMA, None, &[rfp], &[wfp], timing, 0.0))
    }

    /// Where element `(i, j)` of `end` starts: a byte of the HBM tensor, or of partition
    /// `i` for a tile.
    fn byte_at(end: &DmaEnd, i: usize, j: usize) -> usize {
        match end {
            DmaEnd::Hbm(ap) => ap.index(i, j) * ap.tensor.dtype.size_in_bytes(),
            DmaEnd::Tile(t) => t.elem_offset(j),
        }
    }

    /// Whether each row of `end` is one contiguous run of bytes.
    fn row_contiguous(end: &DmaEnd, free: usize) -> bool {
        match end {
            DmaEnd::Hbm(ap) => ap.contiguous_bytes() >= free * ap.tensor.dtype.size_in_bytes(),
            DmaEnd::Tile(t) => t.is_contiguous(),
        }
    }

    /// `len` bytes from byte `at` of row `i` of `end`'s memory.
    fn bytes_of(&self, end: &DmaEnd, i: usize, at: usize, len: usize) -> &[u8] {
        match end {
            DmaEnd::Hbm(ap) => &self.allocs[ap.tensor.alloc as usize].data[at..at + len],
            DmaEnd::Tile(t) => self.store_of(t.mem).row(t.part_start + i, at, len),
        }
    }

    fn bytes_of_mut(&mut self, end: &DmaEnd, i: usize, at: usize, len: usize) -> &mut [u8] {
        match end {
            DmaEnd::Hbm(ap) => &mut self.allocs[ap.tensor.alloc as usize].data[at..at + len],
            DmaEnd::Tile(t) => self.store_of_mut(t.mem).row_mut(t.part_start + i, at, len),
        }
    }

    /// The `[parts][free]` elements of `end` as raw bytes, row-major.
    fn read_bytes(&self, end: &DmaEnd, parts: usize, free: usize) -> Vec<u8> {
        let esz = end.dtype().size_in_bytes();
        let mut out = Vec::with_capacity(parts * free * esz);
        for i in 0..parts {
            if Self::row_contiguous(end, free) {
                out.extend_from_slice(self.bytes_of(end, i, Self::byte_at(end, i, 0), free * esz));
            } else {
                for j in 0..free {
                    out.extend_from_slice(self.bytes_of(end, i, Self::byte_at(end, i, j), esz));
                }
            }
        }
        out
    }

    /// Writes raw bytes from [`Simulator::read_bytes`] into `end` (of the same dtype).
    fn write_bytes(&mut self, end: &DmaEnd, parts: usize, free: usize, bytes: &[u8]) {
        let esz = end.dtype().size_in_bytes();
        for (i, row) in bytes.chunks_exact(free * esz).enumerate().take(parts) {
            if Self::row_contiguous(end, free) {
                let at = Self::byte_at(end, i, 0);
                self.bytes_of_mut(end, i, at, free * esz)
                    .copy_from_slice(row);
            } else {
                for (j, e) in row.chunks_exact(esz).enumerate() {
                    let at = Self::byte_at(end, i, j);
                    self.bytes_of_mut(end, i, at, esz).copy_from_slice(e);
                }
            }
        }
    }

    fn read_ap(&self, ap: &AccessPattern, parts: usize, free: usize) -> Vec<f32> {
        let data = &self.allocs[ap.tensor.alloc as usize].data;
        let dt = ap.tensor.dtype;
        let esz = dt.size_in_bytes();
        let mut out = vec![0f32; parts * free];
        let contiguous = ap.contiguous_bytes() >= free * esz;
        for (i, row) in out.chunks_exact_mut(free).enumerate() {
            if contiguous {
                let b = ap.index(i, 0) * esz;
                numerics::load_run(dt, &data[b..b + free * esz], row);
            } else {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = numerics::load(dt, &data[ap.index(i, j) * esz..]);
                }
            }
        }
        out
    }

    fn write_ap(&mut self, ap: &AccessPattern, parts: usize, free: usize, values: &[f32]) {
        let dt = ap.tensor.dtype;
        let esz = dt.size_in_bytes();
        let contiguous = ap.contiguous_bytes() >= free * esz;
        let data = &mut self.allocs[ap.tensor.alloc as usize].data;
        for (i, row) in values.chunks_exact(free).enumerate().take(parts) {
            if contiguous {
                let b = ap.index(i, 0) * esz;
                numerics::store_run(dt, &mut data[b..b + free * esz], row);
            } else {
                for (j, v) in row.iter().enumerate() {
                    numerics::store(dt, &mut data[ap.index(i, j) * esz..], *v);
                }
            }
        }
    }
}
