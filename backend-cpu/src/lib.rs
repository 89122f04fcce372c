//! # xkern-cpu: the CPU backend of xkern
//!
//! Every op of the contract on host memory, multi-threaded with rayon. This file is the
//! dispatch layer only; kernels live in one module per op family (`matmul`, `attention`,
//! `reduce`) and buffers in `storage`.
//!
//! ```
//! use xkern_core::{DType, Tensor};
//! use xkern_cpu::CpuBackend;
//! let dev = CpuBackend::new();
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
mod matmul;
mod pool;
mod probe;
mod reduce;
mod simd;
mod storage;
mod tasks;
mod warm;

pub use pool::{POOL_MIN_BYTES, PoolStats, pool_stats, trim_pool};
pub use simd::Isa;
pub use storage::CpuStorage;

use std::sync::{Arc, OnceLock};
use xkern_core::{
    AttentionSpec, Backend, CastSpec, DType, DeviceInfo, Error, HostData, HostSlice, Layout,
    MatmulSpec, NormSpec, ReduceSpec, Result,
};

/// The CPU device: a handle to a thread pool (rayon's global pool by default).
///
/// All CPU devices share host memory, so tensors of any two `CpuBackend` values may be
/// combined; the pool only decides where the work runs.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Option<rayon::ThreadPool>,
    /// Keeps the pool's workers awake for a while after each op (see `warm`).
    warmth: Arc<warm::Warmth>,
    isa: Isa,
    /// AVX-512 BF16 present and the AVX-512 kernels chosen: bf16 matmuls use `vdpbf16ps`.
    bf16_dot: bool,
    info: OnceLock<DeviceInfo>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// The CPU device on rayon's global thread pool (one thread per core unless
    /// `RAYON_NUM_THREADS` says otherwise), with the best micro-kernels of this CPU, or
    /// those `XKERN_CPU_ISA` names when it names a valid one ([`CpuBackend::from_env`]
    /// reports a bad value instead).
    pub fn new() -> Self {
        let isa = Isa::from_env().ok().flatten().unwrap_or_else(Isa::best);
        CpuBackend {
            inner: Arc::new(Inner {
                pool: None,
                warmth: warm::Warmth::global(),
                isa,
                bf16_dot: bf16_dot(isa),
                info: OnceLock::new(),
            }),
        }
    }

    /// Like [`CpuBackend::new`], but an `XKERN_CPU_ISA` that is unknown or not supported
    /// by this CPU is an error.
    pub fn from_env() -> Result<Self> {
        let isa = Isa::from_env()?.unwrap_or_else(Isa::best);
        CpuBackend::with_options(None, isa)
    }

    /// A CPU device with its own pool of `threads` workers (results are bitwise the same
    /// for any thread count).
    pub fn with_threads(threads: usize) -> Result<Self> {
        let isa = Isa::from_env()?.unwrap_or_else(Isa::best);
        CpuBackend::with_options(Some(threads), isa)
    }

    /// A CPU device forced to the micro-kernels of `isa` (an error if this CPU lacks it),
    /// on its own pool of `threads` workers or, for `None`, on rayon's global pool.
    pub fn with_options(threads: Option<usize>, isa: Isa) -> Result<Self> {
        if !isa.is_available() {
            return Err(Error::BackendUnavailable {
                name: "cpu".into(),
                reason: format!("this CPU cannot run the {} kernels", isa.name()),
            });
        }
        let pool = match threads {
            None => None,
            Some(t) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t.max(1))
                    .thread_name(|i| format!("xkern-cpu-{i}"))
                    .build()
                    .map_err(|e| Error::Backend {
                        backend: "cpu",
                        message: format!("cannot start {t} threads: {e}"),
                    })?,
            ),
        };
        let warmth = match pool {
            Some(_) => Arc::default(),
            None => warm::Warmth::global(),
        };
        Ok(CpuBackend {
            inner: Arc::new(Inner {
                pool,
                warmth,
                isa,
                bf16_dot: bf16_dot(isa),
                info: OnceLock::new(),
            }),
        })
    }

    /// The instruction set of the matmul micro-kernels.
    pub fn isa(&self) -> Isa {
        self.inner.isa
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.inner
            .pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `f` on this device's pool, its workers woken together first and kept awake
    /// after it for the next op (see `warm`).
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let pool = self.inner.pool.as_ref();
        self.inner.warmth.around(pool, || match pool {
            Some(pool) => pool.install(f),
            None => f(),
        })
    }
}

/// An internal inconsistency of this backend, reported as an error rather than a panic.
pub(crate) fn internal(what: &str) -> Error {
    Error::Backend {
        backend: "cpu",
        message: what.into(),
    }
}

/// Whether bf16 matmuls on `isa` can use AVX-512 BF16 (detected once, at construction;
/// the kernel's packing also needs AVX-512BW, which every CPU with BF16 has).
fn bf16_dot(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa == Isa::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The CPU's model name, as the OS reports it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The SIMD features later kernels dispatch on.
fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let known = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
        ];
        f.extend(
            known
                .iter()
                .filter(|(_, on)| *on)
                .map(|(n, _)| n.to_string()),
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            f.push("neon".to_string());
        }
    }
    f
}

impl Backend for CpuBackend {
    type Storage = CpuStorage;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn info(&self) -> DeviceInfo {
        self.inner
            .info
            .get_or_init(|| {
                let mut info = DeviceInfo::new("cpu", cpu_model(), DType::ALL.to_vec());
                let threads = self.threads();
                info.threads = Some(threads);
                info.features = cpu_features();
                let key = format!("{}|{}|{threads}", info.device, info.features.join(","));
                if let Some(p) = self.run(|| probe::peaks(&key)) {
                    info.peak_gflops_f32 = Some(p.gflops_f32);
                    // AVX-512 BF16 (`vdpbf16ps`) does two multiply-adds per f32 lane per
                    // instruction at the FMA rate; without it bf16 runs at the f32 rate.
                    let bf16_factor = if info.features.iter().any(|f| f == "avx512bf16") {
                        2.0
                    } else {
                        1.0
                    };
                    info.peak_gflops_16 = Some(p.gflops_f32 * bf16_factor);
                    // f16 is widened to f32 when packed: it runs at the f32 rate.
                    info.peak_gflops_f16 = Some(p.gflops_f32);
                    info.bandwidth_gbs = Some(p.bandwidth_gbs);
                }
                info.features.push(format!("kernels={}", self.isa().name()));
                info
            })
            .clone()
    }

    fn same_device(&self, _other: &Self) -> bool {
        true
    }

    fn upload(&self, data: HostSlice<'_>) -> Result<CpuStorage> {
        CpuStorage::upload(data)
    }

    fn zeros(&self, dtype: DType, len: usize) -> Result<CpuStorage> {
        CpuStorage::zeros(dtype, len)
    }

    fn download(
        &self,
        src: &CpuStorage,
        _dtype: DType,
        offset: usize,
        len: usize,
    ) -> Result<HostData> {
        src.download(offset, len)
    }

    fn copy_strided(&self, src: &CpuStorage, _dtype: DType, layout: &Layout) -> Result<CpuStorage> {
        src.copy_strided(layout)
    }

    fn cast(&self, spec: &CastSpec, src: &CpuStorage) -> Result<CpuStorage> {
        let values = src.f32_range(spec.offset, spec.len)?.into_vec();
        CpuStorage::from_f32(spec.to, values)
    }

    fn matmul(
        &self,
        spec: &MatmulSpec,
        a: &CpuStorage,
        b: &CpuStorage,
        bias: Option<&CpuStorage>,
    ) -> Result<CpuStorage> {
        self.run(|| matmul::matmul(self.isa(), self.inner.bf16_dot, spec, a, b, bias))
    }

    fn attention(
        &self,
        spec: &AttentionSpec,
        q: &CpuStorage,
        k: &CpuStorage,
        v: &CpuStorage,
    ) -> Result<CpuStorage> {
        self.run(|| attention::attention(self.isa(), self.inner.bf16_dot, spec, q, k, v))
    }

    fn reduce(&self, spec: &ReduceSpec, x: &CpuStorage) -> Result<CpuStorage> {
        self.run(|| reduce::reduce(self.isa(), spec, x))
    }

    fn normalize(
        &self,
        spec: &NormSpec,
        x: &CpuStorage,
        weight: Option<&CpuStorage>,
    ) -> Result<CpuStorage> {
        self.run(|| reduce::normalize(self.isa(), spec, x, weight))
    }

    fn synchronize(&self) -> Result<()> {
        // Every op has finished when it returns.
        Ok(())
    }
}
