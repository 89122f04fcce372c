//! The ops of the contract: for each op family its spec (what a backend receives), its
//! validation, and the `Tensor` methods that users call.

pub mod attention;
pub mod matmul;
pub mod reduce;
