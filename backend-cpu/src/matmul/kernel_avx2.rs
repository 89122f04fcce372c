//! AVX2 + FMA micro-kernel: a 6 × 16 tile of C in 12 ymm accumulators.
//!
//! Per k-step: two 8-lane loads of packed B, six broadcasts of packed A, 12 FMAs; 12
//! independent chains cover 2 FMA pipes × 4–5 cycles of latency, and the 16 ymm registers
//! hold 12 accumulators + 2 B vectors + 1 broadcast (the classic Haswell shape, also
//! BLIS's).

// Accumulator arrays are indexed by constant-bounded register-tile loops.
#![allow(clippy::indexing_slicing)]

use super::{MicroKernel, Walk};
use std::arch::x86_64::*;

/// The AVX2 + FMA kernel.
pub(crate) struct Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    // A step is 6 cycles of FMAs (12 on two pipes); one walk step in each made the kernel
    // as much slower as packing got faster (128×4096×11008, perf).
    const STEPS_PER_FETCH: usize = 4;

    unsafe fn run<const FETCH: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        walk: Walk,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run`; AVX2 and FMA were
        // detected before this kernel was selected.
        unsafe { kernel::<FETCH>(kc, a, b, c, ldc, accumulate, walk) }
    }
}

/// The full tile; with `FETCH`, each k-step also takes a step of `walk` (a prefetch of
/// the memory the caller packs next).
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const FETCH: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    mut walk: Walk,
) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for p in 0..kc {
        // SAFETY: the packed panels hold kc·NR floats of B and kc·MR floats of A.
        unsafe {
            if FETCH && p % <Avx2 as MicroKernel>::STEPS_PER_FETCH == 0 {
                _mm_prefetch::<_MM_HINT_T1>(walk.step().cast());
            }
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            for i in 0..6 {
                let ai = _mm256_set1_ps(*a.add(p * 6 + i));
                lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
                hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
            }
        }
    }
    for i in 0..6 {
        // SAFETY: c addresses a 6 × 16 tile with row stride ldc.
        unsafe {
            let row = c.add(i * ldc);
            let (mut r0, mut r1) = (lo[i], hi[i]);
            if accumulate {
                r0 = _mm256_add_ps(r0, _mm256_loadu_ps(row));
                r1 = _mm256_add_ps(r1, _mm256_loadu_ps(row.add(8)));
            }
            _mm256_storeu_ps(row, r0);
            _mm256_storeu_ps(row.add(8), r1);
        }
    }
}
