//! AVX-512 BF16 micro-kernel: a 12 × 32 tile of C from bf16 pairs with `vdpbf16ps`.
//!
//! Panels hold pairs of consecutive-k bf16 values per 32-bit slot (`KU = 2`). Per packed
//! step: two 512-bit loads of B pairs (32 columns), twelve broadcasts of an A pair, 24
//! `vdpbf16ps`, each doing two multiply-adds per f32 lane — twice the FLOPs of an f32 FMA
//! at the same issue rate. Accumulation is f32. `vdpbf16ps` treats bf16 denormal inputs
//! as zero and does not consult MXCSR (Intel SDM, DPBF16PS).

// Accumulator arrays are indexed by constant-bounded register-tile loops.
#![allow(clippy::indexing_slicing)]

use super::MicroKernel;
use std::arch::x86_64::*;

/// The AVX-512 BF16 kernel.
pub(crate) struct Avx512Bf16;

impl MicroKernel for Avx512Bf16 {
    const MR: usize = 12;
    const NR: usize = 32;
    const KU: usize = 2;

    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run`; AVX-512F and AVX-512 BF16 were
        // detected before this kernel was selected.
        unsafe { kernel(kc, a, b, c, ldc, accumulate) }
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
    steps: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut lo = [_mm512_setzero_ps(); 12];
    let mut hi = [_mm512_setzero_ps(); 12];
    for p in 0..steps {
        // SAFETY: the packed panels hold `steps`·NR and `steps`·MR 32-bit slots; bf16 pairs
        // are reinterpreted, not converted (`__m512bh` is 32 bf16 in a 512-bit register).
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_ps(b.add(p * 32)));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_ps(b.add(p * 32 + 16)));
            for i in 0..12 {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_ps(*a.add(p * 12 + i)));
                lo[i] = _mm512_dpbf16_ps(lo[i], ai, b0);
                hi[i] = _mm512_dpbf16_ps(hi[i], ai, b1);
            }
        }
    }
    for i in 0..12 {
        // SAFETY: c addresses a 12 × 32 tile with row stride ldc.
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
