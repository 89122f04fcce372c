//! # xkern-wgpu: the GPU backend of xkern
//!
//! Every op of the contract as WGSL compute shaders through wgpu, so one backend runs on
//! NVIDIA, AMD, Intel and Apple GPUs (Vulkan, Metal, DX12) and on Mesa's software Vulkan
//! driver (lavapipe) where there is no GPU. This file is the dispatch layer only:
//! `device` opens the adapter and maps faults, `buffers` pools memory, `pipelines`
//! compiles and caches kernels and records dispatches, and one module + `.wgsl` file per
//! op family holds the kernels (`copy`, `matmul`, `attention`, `reduce`).
//!
//! Tensors stay in GPU buffers until downloaded; each op records all of its dispatches
//! into one compute pass of one command encoder and submits without reading back (no
//! CPU round trip between ops). [`WgpuBackend::set_gpu_timing`] times ops on the GPU
//! with timestamp queries. dtypes: f32 and u32 everywhere, bf16
//! stored packed two per 32-bit word and computed in f32 (every adapter), f16 through
//! `shader-f16` where the adapter offers it (else `Err(UnsupportedDType)`).
//!
//! ```no_run
//! use xkern_core::{DType, Tensor};
//! use xkern_wgpu::WgpuBackend;
//! let dev = WgpuBackend::new()?;
//! let a = Tensor::randn(&dev, &[4, 3], DType::F32, 0)?;
//! let c = a.matmul(&a.t()?)?;
//! assert_eq!(c.shape(), &[4, 4]);
//! # Ok::<(), xkern_core::Error>(())
//! ```

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

mod attention;
#[cfg(test)]
mod attention_tests;
mod attention_wgsl;
mod buffers;
mod copy;
mod device;
mod matmul;
mod matmul_coop;
#[cfg(test)]
mod matmul_tests;
mod pipelines;
mod reduce;
mod timing;
#[cfg(test)]
mod wgsl_tests;

pub use buffers::{PoolStats, WgpuStorage};
pub use device::DeviceOptions;
pub use matmul::MatmulBlock;

use buffers::Pool;
use device::Gpu;
use pipelines::{Binding, Kernel, Pipelines, Recording};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use timing::Timer;
use xkern_core::{
    AttentionSpec, Backend, CastSpec, DType, DeviceInfo, Error, HostData, HostSlice, Layout,
    MatmulSpec, NormSpec, ReduceSpec, Result,
};

/// Distinguishes devices (storages remember which device made them).
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// A wgpu device: a cheap handle (clones share the device, its pool and its kernels),
/// usable from many threads at once.
#[derive(Clone, Debug)]
pub struct WgpuBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gpu: Gpu,
    pool: Arc<Pool>,
    pipelines: Pipelines,
    id: usize,
    info: OnceLock<DeviceInfo>,
    timer: Timer,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("compiled", &self.len())
            .finish()
    }
}

impl WgpuBackend {
    /// Opens the high-performance adapter (or the one `XKERN_WGPU_ADAPTER` names) on the
    /// APIs `WGPU_BACKEND` allows. No adapter is `Err(BackendUnavailable)` saying what
    /// to install.
    pub fn new() -> Result<Self> {
        Self::with_options(&DeviceOptions::default())
    }

    /// Opens a device with explicit options (see [`DeviceOptions`]).
    pub fn with_options(opts: &DeviceOptions) -> Result<Self> {
        Ok(WgpuBackend {
            inner: Arc::new(Inner {
                gpu: Gpu::open(opts)?,
                pool: Arc::new(Pool::default()),
                pipelines: Pipelines::default(),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                info: OnceLock::new(),
                timer: Timer::default(),
            }),
        })
    }

    /// Counters of the buffer pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Starts or stops timing ops on the GPU with timestamp queries (see
    /// [`WgpuBackend::take_gpu_time`]). Returns whether ops are timed: false when the
    /// adapter lacks `TIMESTAMP_QUERY` (or `on` is false).
    pub fn set_gpu_timing(&self, on: bool) -> bool {
        let on = on
            && self
                .gpu()
                .features
                .contains(wgpu::Features::TIMESTAMP_QUERY);
        self.inner.timer.set(on);
        on
    }

    /// The GPU time of the ops submitted since the last call while timing was on: per op,
    /// from the start to the end of its compute pass, summed. Waits for those ops.
    /// `Ok(None)` when no op was timed.
    pub fn take_gpu_time(&self) -> Result<Option<std::time::Duration>> {
        self.gpu().check_alive()?;
        self.inner.timer.take(self.gpu())
    }

    /// Number of kernels compiled so far (each is compiled once).
    pub fn compiled_kernels(&self) -> usize {
        self.inner.pipelines.len()
    }

    /// The keys of the compiled kernels.
    #[cfg(test)]
    pub(crate) fn kernel_keys(&self) -> Vec<String> {
        self.inner.pipelines.keys()
    }

    /// What the matmul planner may choose from on this device.
    pub(crate) fn matmul_blocks(&self) -> matmul::Blocks {
        let gpu = &self.inner.gpu;
        matmul::Blocks {
            forced: gpu.matmul_block,
            storage: gpu.limits.max_compute_workgroup_storage_size as usize,
        }
    }

    /// The per-dimension workgroup limit dispatches are folded at.
    pub fn max_workgroups_per_dim(&self) -> u32 {
        self.inner.gpu.max_groups
    }

    /// The largest storage binding one kernel may read or write, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.gpu.limits.max_storage_buffer_binding_size
    }

    /// The largest buffer (tensor) the device may allocate, in bytes.
    pub fn max_buffer_bytes(&self) -> u64 {
        self.inner.gpu.limits.max_buffer_size
    }

    /// Destroys the device as a driver reset would: every later call returns
    /// `Err(DeviceLost)`. For testing applications' recovery paths.
    pub fn simulate_device_loss(&self) {
        self.inner.gpu.destroy();
    }

    fn gpu(&self) -> &Gpu {
        &self.inner.gpu
    }

    /// Whether reductions and normalisations use subgroup shuffles on this device.
    pub(crate) fn subgroup_trees(&self) -> bool {
        self.gpu().subgroup_trees()
    }

    /// `Err(UnsupportedDType)` for f16 on an adapter without `shader-f16`.
    pub(crate) fn check_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if dtype == DType::F16 && !self.gpu().has_f16() {
            return Err(Error::UnsupportedDType {
                op,
                dtype,
                reason: format!(
                    "adapter {} lacks the shader-f16 feature; use bf16 or f32",
                    self.gpu().adapter_info.name
                ),
            });
        }
        Ok(())
    }

    /// A storage of `len` elements from the pool (contents undefined).
    pub(crate) fn alloc_storage(&self, dtype: DType, len: usize) -> Result<WgpuStorage> {
        self.gpu()
            .storage(&self.inner.pool, self.inner.id, dtype, len)
    }

    /// Uploads kernel metadata (offset tables, shapes).
    pub(crate) fn upload_u32(&self, data: &[u32]) -> Result<WgpuStorage> {
        self.gpu()
            .upload(&self.inner.pool, self.inner.id, HostSlice::U32(data))
    }

    /// The cached kernel `key`, compiled from `source()` on first use.
    pub(crate) fn kernel(
        &self,
        key: &str,
        bindings: &[Binding],
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        self.gpu()
            .kernel(&self.inner.pipelines, key, bindings, source)
    }

    /// [`WgpuBackend::kernel`] as a trusted module keeping only the checks `checks`
    /// unless the device overrides them (see `Gpu::kernel_with` for what the caller
    /// vouches for).
    pub(crate) fn trusted_kernel(
        &self,
        key: &str,
        bindings: &[Binding],
        checks: wgpu::ShaderRuntimeChecks,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        self.gpu().kernel_with(
            &self.inner.pipelines,
            key,
            bindings,
            crate::pipelines::Checks::Trusted(checks),
            source,
        )
    }

    /// Records an op with `f` into one encoder and submits it, inside error scopes.
    pub(crate) fn record<T>(&self, f: impl FnOnce(&mut Recording<'_>) -> Result<T>) -> Result<T> {
        let gpu = self.gpu();
        gpu.scoped(0, || {
            let mut rec = Recording::new(gpu, &self.inner.timer);
            let out = f(&mut rec)?;
            rec.submit();
            Ok(out)
        })
    }

    fn check_storage(&self, op: &'static str, s: &WgpuStorage) -> Result<()> {
        if s.device_id != self.inner.id {
            return Err(Error::Backend {
                backend: "wgpu",
                message: format!("{op}: a tensor of another wgpu device reached this one"),
            });
        }
        Ok(())
    }
}

impl Backend for WgpuBackend {
    type Storage = WgpuStorage;

    fn name(&self) -> String {
        self.gpu().label()
    }

    fn info(&self) -> DeviceInfo {
        self.inner
            .info
            .get_or_init(|| {
                let mut dtypes = vec![DType::F32, DType::BF16, DType::U32];
                if self.gpu().has_f16() {
                    dtypes.insert(1, DType::F16);
                }
                let mut info =
                    DeviceInfo::new("wgpu", self.gpu().adapter_info.name.clone(), dtypes);
                info.features = self.gpu().notes();
                info
            })
            .clone()
    }

    fn same_device(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }

    fn upload(&self, data: HostSlice<'_>) -> Result<WgpuStorage> {
        self.check_dtype("upload", data.dtype())?;
        self.gpu().upload(&self.inner.pool, self.inner.id, data)
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<WgpuStorage> {
        self.check_dtype("zeros", dtype)?;
        self.gpu()
            .zeros(&self.inner.pool, self.inner.id, dtype, len)
    }

    fn download(
        &self,
        src: &WgpuStorage,
        dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<HostData> {
        self.check_storage("download", src)?;
        self.gpu()
            .download(&self.inner.pool, src, dtype, offset, len)
    }

    fn copy_strided(
        &self,
        src: &WgpuStorage,
        dtype: DType,
        layout: &Layout,
    ) -> Result<WgpuStorage> {
        self.check_storage("contiguous", src)?;
        self.copy_strided_impl(src, dtype, layout)
    }

    fn cast(&self, spec: &CastSpec, src: &WgpuStorage) -> Result<WgpuStorage> {
        self.check_storage("cast", src)?;
        self.check_dtype("cast", spec.to)?;
        self.cast_impl(spec, src)
    }

    fn matmul(
        &self,
        spec: &MatmulSpec,
        a: &WgpuStorage,
        b: &WgpuStorage,
        bias: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.matmul_impl(spec, a, b, bias)
    }

    fn attention(
        &self,
        spec: &AttentionSpec,
        q: &WgpuStorage,
        k: &WgpuStorage,
        v: &WgpuStorage,
    ) -> Result<WgpuStorage> {
        self.attention_impl(spec, q, k, v)
    }

    fn reduce(&self, spec: &ReduceSpec, x: &WgpuStorage) -> Result<WgpuStorage> {
        self.reduce_impl(spec, x)
    }

    fn normalize(
        &self,
        spec: &NormSpec,
        x: &WgpuStorage,
        weight: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.normalize_impl(spec, x, weight)
    }

    fn synchronize(&self) -> Result<()> {
        self.gpu().check_alive()?;
        self.gpu().wait(None)
    }
}
