//! AVX-512F micro-kernel: a 12 × 32 tile of C in 24 zmm accumulators.
//!
//! Per k-step: two 16-lane loads of the packed B micro-panel, twelve broadcasts of the
//! packed A micro-panel, 24 FMAs. 24 accumulators + 2 B vectors + 1 broadcast fit the 32
//! zmm registers; 24 independent FMA chains cover the FMA latency (4 cycles) at one zmm
//! FMA per cycle (Zen 4 double-pumps 512-bit FMAs over its two 256-bit pipes; Intel cores
//! with two 512-bit pipes need 8 in flight), so the loop is FMA-throughput-bound.

// Accumulator arrays are indexed by constant-bounded register-tile loops.
#![allow(clippy::indexing_slicing)]

use super::{MicroKernel, Walk};
use std::arch::x86_64::*;

/// The AVX-512F kernel.
pub(crate) struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    const PACK: super::PackSimd = super::PackSimd {
        gather: Some(gather),
        pairs: None,
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
        // SAFETY: forwarded contract of `MicroKernel::run`; AVX-512F was
        // detected before this kernel was selected.
        unsafe { kernel::<12, FETCH>(kc, a, b, c, ldc, accumulate, walk) }
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
                1 => kernel::<1, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                2 => kernel::<2, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                3 => kernel::<3, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                4 => kernel::<4, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                5 => kernel::<5, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                6 => kernel::<6, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                7 => kernel::<7, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                8 => kernel::<8, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                9 => kernel::<9, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                10 => kernel::<10, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                11 => kernel::<11, false>(kc, a, b, c, ldc, accumulate, Walk::NONE),
                _ => return false,
            }
        }
        true
    }
}

/// The first `ROWS` rows (all 12 for the full tile) of a 12-row panel's tile: a ragged
/// last strip runs with `ROWS` accumulator pairs in place instead of the whole tile on a
/// scratch tile (no wasted multiply-adds, no copy). With `FETCH`, each k-step also takes
/// a step of `walk`: a prefetch of the memory the caller packs next.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const ROWS: usize, const FETCH: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    mut walk: Walk,
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
            if FETCH {
                // One line of the next block a step (repeats while the walk lingers on a
                // line find its miss in flight).
                _mm_prefetch::<_MM_HINT_T1>(walk.step().cast());
            }
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

/// The kernel's packing of panels whose lanes are each contiguous along the depth (A
/// row-major, B transposed; f32): `out[s·w + i] = src[i·rs + s]` for `w` = 12 (A panels)
/// or 32 (B panels) lanes and `s < kc`, through 16 × 16 transpositions in registers
/// instead of one scalar load and store per element (the generic gather, 2–3 cycles per
/// element: 8% of causal attention's samples were packing K and Q). `false` for other
/// widths, with nothing written.
///
/// # Safety
/// Lane `i < w` has `kc` readable floats at `src + i·rs`, `out` has `w·kc` writable
/// floats, and the CPU has AVX-512F.
pub(crate) unsafe fn gather(
    w: usize,
    src: *const f32,
    rs: usize,
    kc: usize,
    out: *mut f32,
) -> bool {
    // SAFETY: the caller's contract, for lanes 0..12, 0..16 and 16..32.
    unsafe {
        match w {
            12 => transpose_lanes(src, rs, 12, kc, out, 12),
            32 => {
                transpose_lanes(src, rs, 16, kc, out, 32);
                transpose_lanes(src.add(16 * rs), rs, 16, kc, out.add(16), 32);
            }
            _ => return false,
        }
    }
    true
}

/// `out[s·ldo + i] = src[i·rs + s]` for `i < lanes ≤ 16`, `s < kc`: blocks of 16 depths
/// loaded one lane per register (masked at the end), transposed, and stored one depth
/// per row (masked to `lanes`).
///
/// # Safety
/// As [`gather`], for `lanes` lanes and rows of `out` `ldo ≥ lanes` floats apart.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_lanes(
    src: *const f32,
    rs: usize,
    lanes: usize,
    kc: usize,
    out: *mut f32,
    ldo: usize,
) {
    let lane_mask = ((1u32 << lanes) - 1) as u16;
    for s0 in (0..kc).step_by(16) {
        let depths = (kc - s0).min(16);
        let in_mask = ((1u32 << depths) - 1) as u16;
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, ri) in r.iter_mut().enumerate().take(lanes) {
            // SAFETY: lane i holds kc floats; the masked lanes stay below kc.
            unsafe {
                let at = src.add(i * rs + s0);
                // Each lane is its own stream, rs apart: fetch its line 4 ahead.
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64) as *const i8);
                *ri = _mm512_maskz_loadu_ps(in_mask, at);
            }
        }
        let t = transpose16(r);
        for (d, row) in t.iter().enumerate().take(depths) {
            // SAFETY: row s0 + d of `out` holds `lanes` writable floats.
            unsafe { _mm512_mask_storeu_ps(out.add((s0 + d) * ldo), lane_mask, *row) };
        }
    }
}

/// The transpose of a 16 × 16 block held one row per register: 64 shuffles in four
/// stages (pairs of floats, pairs of doubles, then 128-bit lanes twice).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut a = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // b[4i + j], 128-bit lane L: rows 4i..4i + 4 of column 4L + j.
    let mut b = [_mm512_setzero_ps(); 16];
    let pd = _mm512_castps_pd;
    for i in 0..4 {
        let (x0, x1, y0, y1) = (
            pd(a[4 * i]),
            pd(a[4 * i + 1]),
            pd(a[4 * i + 2]),
            pd(a[4 * i + 3]),
        );
        b[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(x0, y0));
        b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x0, y0));
        b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(x1, y1));
        b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(x1, y1));
    }
    // Column 4L + j gathers lane L of b[j], b[4 + j], b[8 + j], b[12 + j].
    let mut t = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let c0 = _mm512_shuffle_f32x4::<0x44>(b[j], b[4 + j]);
        let c1 = _mm512_shuffle_f32x4::<0xEE>(b[j], b[4 + j]);
        let d0 = _mm512_shuffle_f32x4::<0x44>(b[8 + j], b[12 + j]);
        let d1 = _mm512_shuffle_f32x4::<0xEE>(b[8 + j], b[12 + j]);
        t[j] = _mm512_shuffle_f32x4::<0x88>(c0, d0);
        t[4 + j] = _mm512_shuffle_f32x4::<0xDD>(c0, d0);
        t[8 + j] = _mm512_shuffle_f32x4::<0x88>(c1, d1);
        t[12 + j] = _mm512_shuffle_f32x4::<0xDD>(c1, d1);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register transposition packs exactly what the generic gather packs: every
    /// element of 12- and 32-lane panels, depths around its 16-deep blocks.
    #[test]
    fn gather_packs_the_transposed_lanes() {
        if !crate::simd::Isa::Avx512.is_available() {
            eprintln!("no AVX-512F on this CPU: the AVX-512 packing cannot run here");
            return;
        }
        for w in [12, 32] {
            for kc in [1, 2, 15, 16, 17, 31, 64, 100, 256] {
                let rs = kc + 3;
                let src: Vec<f32> = (0..w * rs).map(|i| i as f32 * 0.5 - 7.0).collect();
                let mut out = vec![f32::NAN; w * kc];
                // SAFETY: w lanes of kc floats rs apart in `src`, w·kc floats in `out`;
                // AVX-512F checked above.
                assert!(unsafe { gather(w, src.as_ptr(), rs, kc, out.as_mut_ptr()) });
                for s in 0..kc {
                    for i in 0..w {
                        assert_eq!(out[s * w + i], src[i * rs + s], "w {w} kc {kc} ({s}, {i})");
                    }
                }
            }
        }
        let mut out = [0.0f32; 16];
        // SAFETY: 16 lanes of one float in a 16-float source; AVX-512F checked above.
        assert!(!unsafe { gather(16, out.as_ptr(), 1, 1, out.as_mut_ptr()) });
    }
}
