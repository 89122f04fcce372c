//! xkern's ops as kernels written against the simulated instruction set, one module per
//! op family, the way NKI kernels are written: tiles in SBUF/PSUM, DMA by access
//! patterns, the tensor engine for contractions and transposes, the vector, scalar and
//! GpSimd engines for everything elementwise and along the free axis. No value of an op
//! is computed on the host: the host code only decides which instructions to issue.
//!
//! - `copy`: cast and strided gather (DMA through SBUF).
//! - `matmul`: K×M×N = 128×128×512 tiles, PSUM accumulation, SBUF blocking, on-chip
//!   transposes of the stationary operand, eviction with the fused epilogue.
//! - `attention`: the flash loop (NEURON.md "How xkern's ops become kernels").
//! - `reduce`: reductions and row normalisations, rows on partitions.

pub(crate) mod attention;
pub(crate) mod copy;
pub(crate) mod matmul;
pub(crate) mod reduce;

use crate::{HbmTensor, Result, SimError, Simulator};

/// SBUF bytes per partition a kernel may plan for (the rest is headroom).
pub(crate) fn sbuf_budget(sim: &Simulator) -> usize {
    sim.config().sbuf_bytes_per_partition * 7 / 8
}

/// A contiguous run `[start, start + rows·cols)` of a flat HBM tensor viewed as `rows`
/// partitions of `cols` elements.
pub(crate) fn rows_ap(
    t: &HbmTensor,
    start: usize,
    rows: usize,
    cols: usize,
) -> Result<crate::AccessPattern> {
    t.pattern(start, [cols, rows], &[[1, cols]])
}

/// An error for a shape a kernel does not handle (never expected for valid specs).
pub(crate) fn unsupported(instr: &'static str, detail: String) -> SimError {
    SimError::Unsupported { instr, detail }
}
