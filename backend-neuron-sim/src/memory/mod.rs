//! The memories of a NeuronCore: HBM (off-chip, addressed by access patterns), SBUF (128
//! partitions of scratchpad, the engines' working memory) and PSUM (128 partitions × 8
//! banks × 2 KiB, the tensor engine's fp32 accumulators).
//!
//! On-chip memory is a byte array per partition with a first-fit allocator over the
//! per-partition address range: a tile of `P` partitions and `F` bytes per partition
//! reserves bytes `[offset, offset + F)` of every partition, as NKI's allocator does, so
//! capacity is enforced in bytes per partition. PSUM allocations are whole banks (a tile
//! never straddles a bank, which the matmul rule needs). Capacities come from
//! [`crate::NeuronConfig`].

mod allocator;
mod hbm;
mod onchip;

pub(crate) use allocator::Allocator;
pub use hbm::{AccessPattern, HbmTensor};
pub(crate) use onchip::{OnChip, PsumInit};

/// Which memory a tile or tensor lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemKind {
    /// Device memory, off chip.
    Hbm,
    /// The state buffer: 128 partitions of scratchpad.
    Sbuf,
    /// The partial-sum buffer: fp32 accumulators of the tensor engine.
    Psum,
}

impl MemKind {
    /// Name used in error messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            MemKind::Hbm => "HBM",
            MemKind::Sbuf => "SBUF",
            MemKind::Psum => "PSUM",
        }
    }
}
