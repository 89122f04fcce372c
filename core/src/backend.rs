//! The backend contract: what a device must do for xkern.
//!
//! Core validates every call and hands a backend only *canonical* op specs ([`MatmulSpec`],
//! [`AttentionSpec`], [`ReduceSpec`], [`NormSpec`], [`CastSpec`]) whose shapes agree,
//! whose dtypes are supported by the op, and whose offsets lie inside the storages passed
//! with them. A backend therefore never re-validates user input; it only reports its own
//! failures (out of memory, device lost, a dtype the device lacks) as [`Error`] values.
//!
//! Storage is immutable once created: every op returns a new, contiguous storage, so
//! tensors can share storage freely between views and threads.
//!
//! [`Error`]: crate::Error

use crate::{
    AttentionSpec, CastSpec, DType, HostData, HostSlice, Layout, MatmulSpec, NormSpec, ReduceSpec,
    Result,
};
use std::fmt;

/// What a device is and what it can do: shown by `xkern-bench` and used for rooflines.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The backend's name (`cpu`, `wgpu`, `neuron-sim`).
    pub backend: String,
    /// The device itself (CPU model, adapter name, simulated core).
    pub device: String,
    /// The dtypes this device stores and computes.
    pub dtypes: Vec<DType>,
    /// Worker threads (CPU), or `None` where it does not apply.
    pub threads: Option<usize>,
    /// Instruction-set or feature notes (e.g. `avx2,fma,f16c`).
    pub features: Vec<String>,
    /// Peak f32 arithmetic rate in GFLOP/s, where known.
    pub peak_gflops_f32: Option<f64>,
    /// Peak 16-bit (bf16/f16) arithmetic rate in GFLOP/s, where known.
    pub peak_gflops_16: Option<f64>,
    /// Peak f16 arithmetic rate in GFLOP/s where it differs from `peak_gflops_16` (a CPU
    /// with a bf16 dot product but no f16 arithmetic computes f16 at its f32 rate).
    pub peak_gflops_f16: Option<f64>,
    /// Memory bandwidth in GB/s, where known.
    pub bandwidth_gbs: Option<f64>,
}

impl DeviceInfo {
    /// An info record with the required fields set and every figure unknown.
    pub fn new(
        backend: impl Into<String>,
        device: impl Into<String>,
        dtypes: Vec<DType>,
    ) -> DeviceInfo {
        DeviceInfo {
            backend: backend.into(),
            device: device.into(),
            dtypes,
            threads: None,
            features: Vec::new(),
            peak_gflops_f32: None,
            peak_gflops_16: None,
            peak_gflops_f16: None,
            bandwidth_gbs: None,
        }
    }
}

/// A device that runs xkern's ops.
///
/// Values are cheap handles (clone shares the device) and may be used from many threads
/// at once. Code generic over `B: Backend` gets static dispatch; the facade's `Device`
/// enum implements this trait too, for a choice made at run time.
pub trait Backend: Clone + Send + Sync + fmt::Debug + 'static {
    /// A buffer of elements in device memory. It holds one dtype; which one is known to
    /// the tensor that owns it and is repeated in every spec.
    type Storage: Send + Sync + fmt::Debug + 'static;

    /// A short label for messages (`cpu`, `wgpu:<adapter>`, `neuron-sim:trn2`).
    fn name(&self) -> String;

    /// Describes the device. May be slow the first time (a backend may probe peak
    /// figures once); later calls return the cached record.
    fn info(&self) -> DeviceInfo;

    /// True when tensors of `self` and `other` may be combined in one op.
    fn same_device(&self, other: &Self) -> bool;

    /// Copies host data into a new storage of `data.dtype()` and `data.len()` elements.
    /// Returns [`crate::Error::UnsupportedDType`] if the device cannot hold the dtype.
    fn upload(&self, data: HostSlice<'_>) -> Result<Self::Storage>;

    /// A new storage of `len` zeros of `dtype`.
    fn zeros(&self, dtype: DType, len: usize) -> Result<Self::Storage>;

    /// Copies `len` elements starting at element `offset` back to the host, waiting for
    /// any work that produces them.
    fn download(
        &self,
        src: &Self::Storage,
        dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<HostData>;

    /// Gathers the strided view `layout` of `src` into a new contiguous storage (row-major
    /// in the view's logical order).
    fn copy_strided(
        &self,
        src: &Self::Storage,
        dtype: DType,
        layout: &Layout,
    ) -> Result<Self::Storage>;

    /// Converts `spec.len` contiguous elements from `spec.from` to `spec.to`. Float to
    /// float rounds to nearest even; U32 to float rounds to nearest even as well.
    fn cast(&self, spec: &CastSpec, src: &Self::Storage) -> Result<Self::Storage>;

    /// Batched matrix multiply with the optional epilogue; output `[batch, m, n]`
    /// contiguous, in `spec.dtype`, accumulated in at least f32. See [`MatmulSpec`].
    fn matmul(
        &self,
        spec: &MatmulSpec,
        a: &Self::Storage,
        b: &Self::Storage,
        bias: Option<&Self::Storage>,
    ) -> Result<Self::Storage>;

    /// Fused attention; output `[batch, q_heads, q_seq, v_head_dim]` contiguous. Memory
    /// must stay linear in the sequence lengths. See [`AttentionSpec`] for the semantics.
    fn attention(
        &self,
        spec: &AttentionSpec,
        q: &Self::Storage,
        k: &Self::Storage,
        v: &Self::Storage,
    ) -> Result<Self::Storage>;

    /// Reduction of the canonical `[outer, axis_len, inner]` problem to `[outer, inner]`.
    /// See [`ReduceSpec`] for the semantics of each kind, NaN and empty axes.
    fn reduce(&self, spec: &ReduceSpec, x: &Self::Storage) -> Result<Self::Storage>;

    /// Softmax, log-softmax or RMS norm along the axis of `[outer, axis_len, inner]`;
    /// output has the input's shape, contiguous. See [`NormSpec`].
    fn normalize(
        &self,
        spec: &NormSpec,
        x: &Self::Storage,
        weight: Option<&Self::Storage>,
    ) -> Result<Self::Storage>;

    /// Waits until all work submitted so far has finished (benchmarks time with it).
    fn synchronize(&self) -> Result<()>;
}
