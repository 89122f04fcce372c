//! # xkern-core: the contract every xkern backend honours
//!
//! - [`DType`], [`Element`]: the element types (f32, f16, bf16, u32).
//! - [`Tensor`]: device storage + a strided view; ops are methods on it.
//! - [`Backend`]: what a device must implement (`backend.rs` is the one place that says
//!   so); it receives only validated, canonical op specs.
//! - [`ops`]: each op family's spec, validation and `Tensor` methods.
//! - [`reference`](mod@reference): f64 kernels that define the right answer.
//! - [`conformance`]: the shared suite every backend instantiates, with [`Tolerance`].
//!
//! Users normally depend on the `xkern` facade crate, which re-exports this crate and
//! adds the runtime `Device` choice.

#![deny(missing_docs)]
// No panics from library code: a bad input or a failed resource is an `Err`. Unit tests
// may unwrap. Modules whose kernels index slices within bounds that validation has
// established allow `indexing_slicing` at their top, saying why.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing
    )
)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod backend;
pub mod conformance;
mod dtype;
mod error;
pub mod layout;
pub mod ops;
pub mod random;
pub mod reference;
mod tensor;
mod tolerance;

pub use backend::{Backend, DeviceInfo};
pub use dtype::{DType, Element, HostData, HostSlice};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::attention::{AttentionOptions, AttentionSpec, View4, attention};
pub use ops::matmul::{Activation, MatmulSpec, MatrixView, VectorView};
pub use ops::reduce::{NormKind, NormSpec, ReduceKind, ReduceSpec};
pub use tensor::{CastSpec, Tensor};
pub use tolerance::Tolerance;

/// Re-export of the `half` crate, whose `f16` and `bf16` are xkern's 16-bit elements.
pub use half;
