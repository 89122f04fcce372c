//! Thin wrappers over `std::arch`, one function per ISA, selected at run time: the FMA
//! throughput loop of the peak probe, the [`Isa`] choice, and a vectorisable `exp`.

pub(crate) mod convert;
pub(crate) mod exp;
pub(crate) mod rowops;

/// Asks the CPU to start loading the cache line holding `p` (a hint: it never faults,
/// reads nothing the program sees and changes no result, whatever the address).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ std::arch::x86_64::_MM_HINT_T0 }, T>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `prefetcht0`/`prefetcht1`… of the line holding `p`, as the hint `H` says.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_hint<const H: i32, T>(p: *const T) {
    // SAFETY: SSE is part of the x86-64 baseline; a prefetch does not dereference.
    unsafe { std::arch::x86_64::_mm_prefetch::<H>(p.cast::<i8>()) };
}

/// Stores 16 floats at `p` with a non-temporal (cache-bypassing, weakly ordered) store.
///
/// # Safety
/// `p` is valid for 16 floats and 64-byte aligned.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stream16_avx512(p: *mut f32, v: &[f32; 16]) {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_stream_ps};
    // SAFETY: the caller's contract.
    unsafe { _mm512_stream_ps(p, _mm512_loadu_ps(v.as_ptr())) }
}

/// [`stream16_avx512`] in two 256-bit halves.
///
/// # Safety
/// As [`stream16_avx512`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn stream16_avx(p: *mut f32, v: &[f32; 16]) {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_stream_ps};
    // SAFETY: the caller's contract (both halves are 32-byte aligned).
    unsafe {
        _mm256_stream_ps(p, _mm256_loadu_ps(v.as_ptr()));
        _mm256_stream_ps(p.add(8), _mm256_loadu_ps(v.as_ptr().add(8)));
    }
}

/// Orders this thread's earlier non-temporal stores before its later stores (`sfence`):
/// a task that streamed its output calls it before the task's completion is published.
#[inline(always)]
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// [`prefetch`] into the L2 cache (and outer levels) only.
#[inline(always)]
pub(crate) fn prefetch_l2<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ std::arch::x86_64::_MM_HINT_T1 }, T>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch_l2`]s the cache line of `s` holding element `at`; nothing past its end
/// (so an empty slice, e.g. no row to come, asks for nothing).
#[inline(always)]
pub(crate) fn prefetch_l2_at<T>(s: &[T], at: usize) {
    if let Some(p) = s.get(at) {
        prefetch_l2(p);
    }
}

/// [`prefetch_l2`]es every cache line of the `len` contiguous elements from `start` (a
/// hint like it: any address is fine).
#[inline(always)]
pub(crate) fn prefetch_run_l2<T>(start: *const T, len: usize) {
    let bytes = start.cast::<u8>();
    for off in (0..len * std::mem::size_of::<T>()).step_by(64) {
        prefetch_l2(bytes.wrapping_add(off));
    }
}

/// `max` that propagates NaN (`f32::max` ignores it); inlined into every ISA's kernels.
#[inline(always)]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() { a } else { b }
}

/// Runs `iters` iterations of `ACC` independent FMA chains of the widest vector the CPU
/// has, and returns the number of floating-point operations performed (2 per lane per
/// FMA). `ACC = 12` chains cover 2 FMA pipes × 4–6 cycles of latency on current x86
/// cores, so the loop is throughput-bound.
pub(crate) fn fma_loop(iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked on the line above).
            let sink = unsafe { x86::fma_avx512(iters) };
            std::hint::black_box(sink);
            return (iters * 12 * 16 * 2) as f64;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked on the line above).
            let sink = unsafe { x86::fma_avx2(iters) };
            std::hint::black_box(sink);
            return (iters * 12 * 8 * 2) as f64;
        }
    }
    let sink = fma_portable(iters);
    std::hint::black_box(sink);
    (iters * 12 * 2) as f64
}

/// Scalar fallback: 12 independent `mul_add` chains.
fn fma_portable(iters: u64) -> f32 {
    let mut acc = [0.0f32; 12];
    let (a, b) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(a, b);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 independent 16-lane FMA chains.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512(iters: u64) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm512_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut total = _mm512_setzero_ps();
        for x in acc {
            total = _mm512_add_ps(total, x);
        }
        _mm512_reduce_add_ps(total)
    }

    /// 12 independent 8-lane FMA chains.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2(iters: u64) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut total = _mm256_setzero_ps();
        for x in acc {
            total = _mm256_add_ps(total, x);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 f32, the 32 bytes an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }
}

/// The instruction set the matmul micro-kernels use, chosen once per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64 AVX-512F: 12 × 32 micro-kernel.
    Avx512,
    /// x86-64 AVX2 + FMA: 6 × 16 micro-kernel.
    Avx2,
    /// Portable Rust: 4 × 16 micro-kernel, vectorised by the compiler.
    Generic,
}

impl Isa {
    /// The name used by `XKERN_CPU_ISA` and in `info()`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Generic => "generic",
        }
    }

    /// Parses a name as printed by [`Isa::name`].
    pub fn parse(name: &str) -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Generic]
            .into_iter()
            .find(|i| i.name() == name.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the ISA's kernels.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            // The AVX-512 row kernels also call AVX2 code (rows.rs): every AVX-512 CPU
            // has it, and requiring it keeps that sound.
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Generic => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every ISA this CPU can run, best first.
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Generic]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The best ISA of this CPU.
    pub fn best() -> Isa {
        Isa::available().first().copied().unwrap_or(Isa::Generic)
    }

    /// The ISA `XKERN_CPU_ISA` asks for (`None` when unset or empty); an unknown name or
    /// one this CPU lacks is an error.
    pub fn from_env() -> xkern_core::Result<Option<Isa>> {
        let Ok(value) = std::env::var("XKERN_CPU_ISA") else {
            return Ok(None);
        };
        if value.trim().is_empty() {
            return Ok(None);
        }
        let isa = Isa::parse(&value).ok_or_else(|| xkern_core::Error::BackendUnavailable {
            name: "cpu".into(),
            reason: format!("XKERN_CPU_ISA={value:?} is not one of avx512, avx2, generic"),
        })?;
        if !isa.is_available() {
            return Err(xkern_core::Error::BackendUnavailable {
                name: "cpu".into(),
                reason: format!("XKERN_CPU_ISA={value} asks for an instruction set this CPU lacks"),
            });
        }
        Ok(Some(isa))
    }
}
