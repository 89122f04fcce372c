#![doc = include_str!("../README.md")]
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

mod device;

pub use device::{DEVICE_NAMES, Device, DeviceStorage, NeuronProfile};
pub use xkern_core::{
    Activation, AttentionOptions, Backend, DType, DeviceInfo, Element, Error, HostData, HostSlice,
    Layout, ReduceKind, Result, Tolerance, half,
};

/// The op contract, for code generic over `B: Backend` and for backend authors.
pub use xkern_core as core;

/// The CPU backend, for static dispatch (`xkern::core::Tensor<xkern::cpu::CpuBackend>`).
#[cfg(feature = "cpu")]
pub use xkern_cpu as cpu;
/// The simulated NeuronCore backend (configurations, simulator, profiles).
#[cfg(feature = "neuron-sim")]
pub use xkern_neuron_sim as neuron_sim;

/// The wgpu backend, for static dispatch (`xkern::core::Tensor<xkern::wgpu::WgpuBackend>`).
#[cfg(feature = "wgpu")]
pub use xkern_wgpu as wgpu;

/// A tensor on a run-time chosen [`Device`].
pub type Tensor = xkern_core::Tensor<Device>;

/// Fused scaled dot-product attention, `softmax(q·kᵀ·scale [+ causal mask]) · v`:
/// `q [B, Hq, Sq, D]`, `k [B, Hkv, Skv, D]`, `v [B, Hkv, Skv, Dv]` → `[B, Hq, Sq, Dv]`,
/// GQA/MQA when `Hkv` divides `Hq`, causal mask aligned bottom-right, zeros for a query
/// that sees no key.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Tensor> {
    xkern_core::attention(q, k, v, opts)
}
