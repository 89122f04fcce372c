//! The f64 reference: straightforward kernels that define what every backend must
//! compute. They run on the exact values a backend received (low-precision inputs are
//! widened exactly), accumulate in f64 and implement the special-value rules of DESIGN.md
//! explicitly, so the conformance suite can hold a backend to them.

mod attention;
mod matmul;
mod reduce;

pub use attention::{attention, attention_row};
pub use matmul::matmul;
pub use reduce::{log_softmax, reduce, rms_norm, softmax};

use crate::layout::contiguous_strides;

/// A row-major f64 array: the reference's input and output.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Sizes of the axes.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f64>,
}

impl HostTensor {
    /// Wraps `data` (which must hold `shape`'s element count).
    pub fn new(shape: &[usize], data: Vec<f64>) -> HostTensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs {} values",
            data.len()
        );
        HostTensor {
            shape: shape.to_vec(),
            data,
        }
    }

    /// Row-major strides.
    pub fn strides(&self) -> Vec<usize> {
        contiguous_strides(&self.shape)
    }
}

/// `max` that propagates NaN (f64::max ignores it).
pub(crate) fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
