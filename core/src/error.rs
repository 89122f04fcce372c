//! The one error type of xkern. Validation in core produces the same variant for the same
//! bad input on every backend; backends map their own failures (allocation, device loss)
//! into the variants below.

use crate::DType;

/// Result alias used throughout xkern.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in xkern. Messages name the op and the offending values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that the op needs to agree do not.
    #[error("{op}: shapes {lhs:?} and {rhs:?} are incompatible: {reason}")]
    ShapeMismatch {
        /// The op that was called.
        op: &'static str,
        /// The first shape involved.
        lhs: Vec<usize>,
        /// The second shape involved.
        rhs: Vec<usize>,
        /// What rule they break.
        reason: String,
    },
    /// Operands of an op have different dtypes.
    #[error("{op}: dtype mismatch: expected {expected}, got {got}")]
    DTypeMismatch {
        /// The op that was called.
        op: &'static str,
        /// The dtype the op needed.
        expected: DType,
        /// The dtype it got.
        got: DType,
    },
    /// The op does not accept this dtype (e.g. U32 matmul), or the device cannot hold it.
    #[error("{op}: dtype {dtype} is not supported{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    UnsupportedDType {
        /// The op that was called.
        op: &'static str,
        /// The dtype it got.
        dtype: DType,
        /// Why (which dtypes are supported, or what the device lacks).
        reason: String,
    },
    /// Operands live on different devices.
    #[error(
        "{op}: operands are on different devices ({lhs} and {rhs}); move them to one device first"
    )]
    DeviceMismatch {
        /// The op that was called.
        op: &'static str,
        /// The first operand's device.
        lhs: String,
        /// The other device.
        rhs: String,
    },
    /// An axis index outside `-rank..rank`.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    AxisOutOfRange {
        /// The op that was called.
        op: &'static str,
        /// The axis as given.
        axis: isize,
        /// The tensor's rank.
        rank: usize,
    },
    /// The number of elements (or bytes) of a shape does not fit the address space.
    #[error("shape {shape:?} has more elements than this machine can address")]
    SizeOverflow {
        /// The shape that overflows.
        shape: Vec<usize>,
    },
    /// max/min/argmax/argmin over an axis of length zero: there is no answer.
    #[error("{op}: cannot reduce over an empty axis ({} of shape {shape:?})", axis.map_or("all axes".to_string(), |a| format!("axis {a}")))]
    EmptyReduction {
        /// The op that was called.
        op: &'static str,
        /// The axis reduced (`None` for a reduction over all axes).
        axis: Option<usize>,
        /// The input shape.
        shape: Vec<usize>,
    },
    /// Attention head counts where `q_heads` is not a multiple of `kv_heads`.
    #[error(
        "attention: {q_heads} query heads cannot be grouped over {kv_heads} key/value heads (q_heads must be a positive multiple of kv_heads)"
    )]
    InvalidHeads {
        /// Query heads.
        q_heads: usize,
        /// Key/value heads.
        kv_heads: usize,
    },
    /// `to_vec::<T>` (or `from_slice` into a view) with an element type other than the
    /// tensor's dtype.
    #[error("element type mismatch: the tensor holds {actual}, the caller asked for {requested}")]
    ElementType {
        /// The tensor's dtype.
        actual: DType,
        /// The element type requested.
        requested: DType,
    },
    /// Any other argument that breaks the op's rules (a permutation that is not one, a
    /// reshape that changes the element count, a non-finite scale...).
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The op that was called.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A device name that xkern does not know.
    #[error("unknown device {name:?}: expected one of {expected}")]
    UnknownDevice {
        /// The name as given.
        name: String,
        /// The names xkern accepts.
        expected: String,
    },
    /// A known backend that is not compiled in or cannot run here.
    #[error("backend {name} is unavailable: {reason}")]
    BackendUnavailable {
        /// The backend's name.
        name: String,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The device could not allocate memory.
    #[error("out of memory on {device}: could not allocate {bytes} bytes")]
    OutOfMemory {
        /// The device.
        device: String,
        /// The allocation that failed.
        bytes: u64,
    },
    /// The device is gone (driver reset, GPU removed); create a new one.
    #[error("device lost: {reason}")]
    DeviceLost {
        /// What the driver reported.
        reason: String,
    },
    /// A backend failure that has no better variant; the message says what happened.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shapes(
        op: &'static str,
        lhs: &[usize],
        rhs: &[usize],
        reason: impl Into<String>,
    ) -> Error {
        Error::ShapeMismatch {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            reason: reason.into(),
        }
    }
}
