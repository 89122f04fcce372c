//! AVX-512F micro-kernel: a 12 × 32 tile of C in 24 zmm accumulators.
//!
//! Per k-step: two 16-lane loads of the packed B micro-panel, twelve broadcasts of the
//! packed A micro-panel, 24 FMAs. 24 accumulators + 2 B vectors + 1 broadcast fit the 32
//! zmm registers; 24 independent FMA chains cover the FMA latency (4 cycles) at one zmm
//! FMA per cycle (Zen 4 double-pumps 512-bit FMAs over its two 256-bit pipes; Intel cores
//! with two 512-bit pipes need 8 in flight), so the loop is FMA-throughput-bound.

// Accumulator arrays are indexed by constant-bounded register-tile loops.
#![allow(clippy::indexing_slicing)]

use super::MicroKernel;
use std::arch::x86_64::*;

/// The AVX-512F kernel.
pub(crate) struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;

    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run`; AVX-512F was detected before
        // this kernel was selected.
        unsafe { kernel::<12>(kc, a, b, c, ldc, accumulate) }
    }

    unsafe fn run_rows(
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) -> bool {
        // SAFETY: every arm forwards the contract of `MicroKernel::run_rows`, for `ROWS =
        // rows` rows; AVX-512F was detected before this kernel was selected.
        unsafe {
            match rows {
                1 => kernel::<1>(kc, a, b, c, ldc, accumulate),
                2 => kernel::<2>(kc, a, b, c, ldc, accumulate),
                3 => kernel::<3>(kc, a, b, c, ldc, accumulate),
                4 => kernel::<4>(kc, a, b, c, ldc, accumulate),
                5 => kernel::<5>(kc, a, b, c, ldc, accumulate),
                6 => kernel::<6>(kc, a, b, c, ldc, accumulate),
                7 => kernel::<7>(kc, a, b, c, ldc, accumulate),
                8 => kernel::<8>(kc, a, b, c, ldc, accumulate),
                9 => kernel::<9>(kc, a, b, c, ldc, accumulate),
                10 => kernel::<10>(kc, a, b, c, ldc, accumulate),
                11 => kernel::<11>(kc, a, b, c, ldc, accumulate),
                _ => return false,
            }
        }
        true
    }
}

/// The first `ROWS` rows (all 12 for the full tile) of a 12-row panel's tile: a ragged
/// last strip runs with `ROWS` accumulator pairs in place instead of the whole tile on a
/// scratch tile (no wasted multiply-adds, no copy).
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const ROWS: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut lo = [_mm512_setzero_ps(); ROWS];
    let mut hi = [_mm512_setzero_ps(); ROWS];
    if accumulate {
        // The C tile is read only at the end; start fetching its lines now.
        for i in 0..ROWS {
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + 16) as *const i8);
        }
    }
    for p in 0..kc {
        // SAFETY: the packed panels hold kc·NR floats of B and kc·MR floats of A.
        unsafe {
            // The B micro-panel streams from L2 (A's stays in L1): fetch it 8 steps
            // (1 KiB) ahead. Prefetches past the panel's end are harmless hints.
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * 32 + 256) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * 32 + 272) as *const i8);
            let b0 = _mm512_loadu_ps(b.add(p * 32));
            let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
            for i in 0..ROWS {
                let ai = _mm512_set1_ps(*a.add(p * 12 + i));
                lo[i] = _mm512_fmadd_ps(ai, b0, lo[i]);
                hi[i] = _mm512_fmadd_ps(ai, b1, hi[i]);
            }
        }
    }
    for i in 0..ROWS {
        // SAFETY: c addresses a ROWS × 32 tile with row stride ldc.
        unsafe {
            let row = c.add(i * ldc);
            let (mut r0, mut r1) = (lo[i], hi[i]);
            if accumulate {
                r0 = _mm512_add_ps(r0, _mm512_loadu_ps(row));
                r1 = _mm512_add_ps(r1, _mm512_loadu_ps(row.add(16)));
            }
            _mm512_storeu_ps(row, r0);
            _mm512_storeu_ps(row.add(16), r1);
        }
    }
}
