//! AVX-512 BF16 micro-kernel: a 12 × 32 tile of C from bf16 pairs with `vdpbf16ps`.
//!
//! Panels hold pairs of consecutive-k bf16 values per 32-bit slot (`KU = 2`). Per packed
//! step: two 512-bit loads of B pairs (32 columns), twelve broadcasts of an A pair, 24
//! `vdpbf16ps`, each doing two multiply-adds per f32 lane — twice the FLOPs of an f32 FMA
//! at the same issue rate. Accumulation is f32. `vdpbf16ps` treats bf16 denormal inputs
//! as zero and does not consult MXCSR (Intel SDM, DPBF16PS). Its packing interleaves the
//! bf16 of two rows with AVX-512BW word permutes (`pair_rows`); the device selects this
//! kernel only where AVX-512F, BW and BF16 are all present.

// Accumulator arrays are indexed by constant-bounded register-tile loops.
#![allow(clippy::indexing_slicing)]

use super::{MicroKernel, PackSimd, Walk};
use std::arch::x86_64::*;

/// The AVX-512 BF16 kernel.
pub(crate) struct Avx512Bf16;

impl MicroKernel for Avx512Bf16 {
    const MR: usize = 12;
    const NR: usize = 32;
    const KU: usize = 2;
    const PACK: PackSimd = PackSimd {
        // bf16 lanes along the depth are lanes of 32-bit pairs: the f32 transposition.
        gather: Some(super::kernel_avx512::gather),
        pairs: Some(pair_rows),
    };

    unsafe fn run<const FETCH: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        walk: Walk,
    ) {
        // SAFETY: forwarded contract of `MicroKernel::run`; AVX-512F and AVX-512 BF16 were
        // detected before this kernel was selected.
        unsafe { kernel::<FETCH>(kc, a, b, c, ldc, accumulate, walk) }
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const FETCH: bool>(
    steps: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    mut walk: Walk,
) {
    let mut lo = [_mm512_setzero_ps(); 12];
    let mut hi = [_mm512_setzero_ps(); 12];
    for p in 0..steps {
        // SAFETY: the packed panels hold `steps`·NR and `steps`·MR 32-bit slots; bf16 pairs
        // are reinterpreted, not converted (`__m512bh` is 32 bf16 in a 512-bit register).
        unsafe {
            if FETCH {
                // A line of the next block a step (see `Walk`).
                _mm_prefetch::<_MM_HINT_T1>(walk.step().cast());
            }
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

/// `out[j] = r0[j] | r1[j] << 16` for `j < n ≤ 32` (see `PairRows`): one 32-lane load of
/// each row, two word permutes, two stores (masked to `n`).
///
/// # Safety
/// `r0`, `r1` have `n ≤ 32` readable u16, `out` `n` writable slots, and the CPU has
/// AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn pair_rows(n: usize, r0: *const u16, r1: *const u16, out: *mut f32) {
    debug_assert!(n <= 32);
    let n = n.min(32);
    let in_mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
    // Word 2j of the low half is r0[j], word 2j + 1 is r1[j] (index 32 + j picks r1);
    // the high half does the same for j + 16.
    let mut lo_idx = [0u16; 32];
    let mut hi_idx = [0u16; 32];
    for j in 0..16u16 {
        lo_idx[2 * j as usize] = j;
        lo_idx[2 * j as usize + 1] = 32 + j;
        hi_idx[2 * j as usize] = 16 + j;
        hi_idx[2 * j as usize + 1] = 48 + j;
    }
    // SAFETY: the index arrays are 64 bytes; rows and slots as the caller guarantees,
    // masked to n elements.
    unsafe {
        let li = _mm512_loadu_si512(lo_idx.as_ptr().cast());
        let hi = _mm512_loadu_si512(hi_idx.as_ptr().cast());
        let a = _mm512_maskz_loadu_epi16(in_mask, r0.cast());
        let b = _mm512_maskz_loadu_epi16(in_mask, r1.cast());
        let lo = _mm512_permutex2var_epi16(a, li, b);
        let hi = _mm512_permutex2var_epi16(a, hi, b);
        let lo_mask = ((1u32 << n.min(16)) - 1) as u16;
        _mm512_mask_storeu_epi32(out.cast(), lo_mask, lo);
        if n > 16 {
            // Only then is `out + 16` inside the caller's n slots.
            let hi_mask = ((1u32 << (n - 16)) - 1) as u16;
            _mm512_mask_storeu_epi32(out.add(16).cast(), hi_mask, hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_rows_interleaves_two_rows() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            eprintln!("no AVX-512BW on this CPU: the bf16 pair packing cannot run here");
            return;
        }
        let r0: Vec<u16> = (0..32).map(|i| 0x1000 + i).collect();
        let r1: Vec<u16> = (0..32).map(|i| 0x8000 + 3 * i).collect();
        for n in [0, 1, 15, 16, 17, 31, 32] {
            let mut out = vec![f32::from_bits(0xdead_beef); 33];
            // SAFETY: n ≤ 32 elements in each row, 33 slots; AVX-512F/BW checked above.
            unsafe { pair_rows(n, r0.as_ptr(), r1.as_ptr(), out.as_mut_ptr()) };
            for (j, o) in out.iter().enumerate() {
                let want = if j < n {
                    u32::from(r0[j]) | (u32::from(r1[j]) << 16)
                } else {
                    0xdead_beef
                };
                assert_eq!(o.to_bits(), want, "n {n} slot {j}");
            }
        }
    }
}
