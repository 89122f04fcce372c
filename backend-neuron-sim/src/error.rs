//! The simulator's error type: every tile rule of NEURON.md, with a message that names the
//! instruction, the operand, the offending value and the limit, in the spirit of NKI's
//! "Size of partition dimension 256 exceeds architecture limitation of 128."
//!
//! These are errors of the kernel being simulated, which xkern-core's `Error` does not
//! describe; [`From<SimError> for xkern_core::Error`] is left to the backend issue that
//! wires this crate into the facade.

use xkern_core::DType;

/// Result alias of this crate.
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// A kernel broke a rule of the NeuronCore, or the simulator was misused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A tile's partition dimension exceeds the 128 partitions.
    #[error(
        "{instr}: partition dimension of {operand} is {value}, exceeds the architecture limit of {limit}"
    )]
    PartitionLimit {
        /// The instruction (or allocation) that was issued.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// The partition size given.
        value: usize,
        /// The limit.
        limit: usize,
    },
    /// A tile does not start at an allowed partition (v2 partition-start alignment).
    #[error(
        "{instr}: {operand} starts at partition {start} with {size} partitions; on NeuronCore-v2 {rule}"
    )]
    PartitionAlignment {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// The first partition of the tile.
        start: usize,
        /// Its number of partitions.
        size: usize,
        /// The rule in words.
        rule: &'static str,
    },
    /// A free-axis size exceeds an instruction's limit (matmul M ≤ 128, N ≤ 512, ...).
    #[error("{instr}: {dim} of {operand} is {value}, exceeds the architecture limit of {limit}")]
    SizeLimit {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// Which dimension, in words ("free size (N)").
        dim: &'static str,
        /// The size given.
        value: usize,
        /// The limit.
        limit: usize,
    },
    /// An operand lives in the wrong memory (matmul operands in SBUF, result in PSUM, ...).
    #[error("{instr}: {operand} must be in {expected}, but it is in {got}")]
    Placement {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// Where it must be.
        expected: &'static str,
        /// Where it is.
        got: &'static str,
    },
    /// Operand dtypes that the engine cannot pair (fp32 pairs only with fp32).
    #[error("{instr}: {operand} has dtype {got}, {rule}")]
    DTypeRule {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// Its dtype.
        got: DType,
        /// The rule in words.
        rule: &'static str,
    },
    /// Operand shapes that do not agree.
    #[error("{instr}: {operand} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// The shape it has ([partitions, free elements]).
        got: Vec<usize>,
        /// The shape the instruction needs.
        expected: Vec<usize>,
    },
    /// An allocation does not fit in SBUF or PSUM.
    #[error(
        "allocation of {requested} bytes per partition in {memory} does not fit: {available} bytes per partition are free in one piece (capacity {capacity})"
    )]
    OutOfMemory {
        /// "SBUF", "PSUM", or HBM's host backing store (bytes, not per partition).
        memory: &'static str,
        /// Bytes per partition requested.
        requested: usize,
        /// Largest free block, bytes per partition.
        available: usize,
        /// Capacity, bytes per partition.
        capacity: usize,
    },
    /// A matmul accumulates onto PSUM that no instruction has written since allocation.
    #[error(
        "{instr}: accumulating onto uninitialised PSUM ({operand}, partition {partition}, byte {offset}); the first matmul into a location must overwrite (accumulate = false)"
    )]
    UninitialisedAccumulate {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// First uninitialised partition found.
        partition: usize,
        /// Its byte offset within the partition.
        offset: usize,
    },
    /// A matmul result crosses a PSUM bank boundary.
    #[error(
        "{instr}: {operand} spans bytes {start}..{end} of a partition, crossing a {bank_bytes}-byte PSUM bank"
    )]
    PsumBankCrossing {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// First byte (within the partition).
        start: usize,
        /// One past the last byte.
        end: usize,
        /// The bank size.
        bank_bytes: usize,
    },
    /// A view or access pattern reaches outside its tile or tensor.
    #[error("{instr}: {operand} is out of bounds: {detail}")]
    OutOfBounds {
        /// The instruction or view constructor.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// What exceeded what.
        detail: String,
    },
    /// A handle to memory that was freed, or that belongs to another simulator.
    #[error("{instr}: {operand} refers to {what}")]
    StaleHandle {
        /// The instruction.
        instr: &'static str,
        /// Which operand.
        operand: &'static str,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The instruction cannot run on the requested engine or with these arguments.
    #[error("{instr}: {detail}")]
    Unsupported {
        /// The instruction.
        instr: &'static str,
        /// Why.
        detail: String,
    },
    /// Host data given to or asked of the simulator has the wrong length or mode.
    #[error("{what}: {detail}")]
    HostData {
        /// The call.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// Writing a trace file failed.
    #[error("writing {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
}
