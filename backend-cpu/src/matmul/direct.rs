//! Direct products: f32 operands whose rows are contiguous, read where they lie by
//! register tiles, with nothing packed (AVX-512).
//!
//! The packed GEMM copies blocks of A and B into panels so that its micro-kernel reads
//! them in order; that pays when each packed element is used many times. Where it is not
//! — small products (batch 32 × 128×64×128: more than a third of the time outside the
//! micro-kernel, packing A with a 12-lane transposition, B for 64-deep kernel calls, and
//! the ragged 8-row strip through a scratch tile) and narrow ones (4096×4096×128: packing
//! A's 64 MiB in 1 KiB runs, 23% of the time, for 128 uses of each element) — the packing
//! costs more than reading in place saves. Here a tile of `R × 16·V` outputs sums its depth
//! block straight from the operands: each step loads `V` vectors of one row of B and
//! broadcasts `R` elements of A, one from each of its rows (a broadcast reads any address
//! in L1 as fast as a packed one):
//!
//! ```text
//! parallel over tasks of C (h rows × TASK_COLS columns; ≥ 4 per thread when parallel):
//!     for each depth block of KC:                   (B's block of the task: ≤ 256 KiB, L2)
//!         for each strip of R rows (fewer at the bottom: R is a const parameter):
//!             for each tile of 16·V columns:        (A's strip, R × KC, stays in L1)
//!                 acc (R × V zmm) = A[strip, block] · B[block, tile]   (masked ragged columns)
//!                 C[strip, tile] (=|+=) acc;  epilogue after the last block
//! ```
//!
//! Every output is summed in the same order as the packed GEMM's: a chain of fused
//! multiply-adds per depth block of the packed GEMM's KC, the blocks' sums added to C in
//! depth order, so both paths give the same bits and the result does not depend on the
//! thread count.

use super::{CPtr, Epilogue, View};
use crate::storage::Scalar;
use xkern_core::Result;

/// Rows of A per tile: 6 × 4 zmm accumulators (6 broadcasts and 4 loads per 24 FMAs).
const R: usize = 6;
/// Zmm vectors of columns per tile (64 columns).
const V: usize = 4;
/// Columns per task: B's depth block for them (256 × 256 floats) stays in L2. Measured
/// against 64 and 512 at 4096×4096×128 (64: 1.1× slower, 512: the same).
const TASK_COLS: usize = 256;

/// `c = epi(A · B)` (`m × n`, row-major) when both operands are f32 with unit column
/// stride and the machine has AVX-512F, on every thread of the pool when `parallel`;
/// `Ok(false)` (nothing written) otherwise, or when a view would reach past its buffer.
pub(super) fn product<T: Scalar>(
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
    parallel: bool,
) -> Result<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let (Some(ad), Some(bd)) = (T::as_f32(a.data), T::as_f32(b.data)) else {
            return Ok(false);
        };
        if m == 0 || k == 0 || n == 0 || a.cs != 1 || b.cs != 1 || c.len() != m * n {
            return Ok(false);
        }
        if !a.rows_fit(m, k) || !b.rows_fit(k, n) {
            return Ok(false);
        }
        if !crate::simd::Isa::Avx512.is_available() {
            return Ok(false);
        }
        // Depth per block, the packed GEMM's KC (also under `XKERN_GEMM_BLOCKING`): one
        // chain of fused multiply-adds per output and block, as there.
        let kc_max = super::blocking().kc;
        let (ad, bd) = (&ad[a.offset..], &bd[b.offset..]);
        let cp = CPtr(c.as_mut_ptr());
        // Rows i_lo..i_hi × columns j_lo..j_hi of C.
        let rect = |(i_lo, i_hi, j_lo, j_hi): (usize, usize, usize, usize)| {
            // The operands' pointers come from their (shared, read-only) slices.
            let (ap, bp, cp) = (ad.as_ptr(), bd.as_ptr(), cp);
            for p0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - p0);
                let last = p0 + kc == k;
                for i0 in (i_lo..i_hi).step_by(R) {
                    let rows = R.min(i_hi - i0);
                    for j0 in (j_lo..j_hi).step_by(16 * V) {
                        let cols = (16 * V).min(j_hi - j0);
                        // SAFETY: rows i0..i0 + rows, depths p0..p0 + kc of A and depths
                        // p0..p0 + kc, columns j0..j0 + cols of B lie inside their buffers
                        // (checked above); the tile of C is inside `c`, and this task's
                        // alone; AVX-512F was detected.
                        unsafe {
                            tile_rows(
                                rows,
                                kc,
                                ap.add(i0 * a.rs + p0),
                                a.rs,
                                bp.add(p0 * b.rs + j0),
                                b.rs,
                                cols,
                                cp.0.add(i0 * n + j0),
                                n,
                                p0 > 0,
                            )
                        };
                        if last {
                            for i in i0..i0 + rows {
                                // SAFETY: the row segment lies in this task's tile of C.
                                let row = unsafe {
                                    std::slice::from_raw_parts_mut(cp.0.add(i * n + j0), cols)
                                };
                                epi.apply(row, j0);
                            }
                        }
                    }
                }
            }
        };
        let wc = TASK_COLS;
        let (strips, blocks) = (m.div_ceil(R), n.div_ceil(wc));
        // Row groups: enough tasks for four per thread when parallel, else one row group.
        let groups = if parallel {
            (4 * rayon::current_num_threads().max(1))
                .div_ceil(blocks)
                .clamp(1, strips)
        } else {
            1
        };
        let h = strips.div_ceil(groups) * R;
        let rects: Vec<_> = (0..m)
            .step_by(h)
            .flat_map(|i| {
                (0..n)
                    .step_by(wc)
                    .map(move |j| (i, (i + h).min(m), j, (j + wc).min(n)))
            })
            .collect();
        if parallel {
            // On the calling thread too (see `tasks`).
            crate::tasks::share(rects.len(), |t| {
                if let Some(&r) = rects.get(t) {
                    rect(r);
                }
                true
            });
        } else {
            rects.into_iter().for_each(rect);
        }
        Ok(true)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c, (m, k, n), epi, parallel);
        Ok(false)
    }
}

/// [`tile`] with `rows ≤ R` rows (the const row count chosen at run time).
///
/// # Safety
/// As [`tile`], with `rows` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows(
    rows: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: every arm forwards the caller's contract, for the tile's `rows` rows.
    unsafe {
        match rows {
            6 => tile::<6>(kc, a, lda, b, ldb, cols, c, ldc, accumulate),
            5 => tile::<5>(kc, a, lda, b, ldb, cols, c, ldc, accumulate),
            4 => tile::<4>(kc, a, lda, b, ldb, cols, c, ldc, accumulate),
            3 => tile::<3>(kc, a, lda, b, ldb, cols, c, ldc, accumulate),
            2 => tile::<2>(kc, a, lda, b, ldb, cols, c, ldc, accumulate),
            _ => tile::<1>(kc, a, lda, b, ldb, cols, c, ldc, accumulate),
        }
    }
}

/// `C (=|+=) Σ_{p<kc} A[.., p] ⊗ B[p, ..cols]` for one tile of `RR` rows and `cols ≤
/// 16·V` columns: A's rows `lda` apart, B's `ldb`, C's `ldc`. Lanes past `cols` are
/// neither read nor written, and no address is formed for a vector wholly past them.
///
/// # Safety
/// `a` points to `RR` rows of `kc` readable floats, `b` to `kc` rows of `cols`, `c` to
/// `RR` rows of `cols` writable floats that no other thread touches; the caller is
/// compiled with AVX-512F (detected on this CPU).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const RR: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mask = super::lane_masks::<V>(cols);
    let full = cols == 16 * V;
    // SAFETY: AVX-512F, as the caller promises (so for every intrinsic below).
    let mut acc = [[unsafe { _mm512_setzero_ps() }; V]; RR];
    for p in 0..kc {
        // SAFETY: AVX-512F.
        let mut bv = [unsafe { _mm512_setzero_ps() }; V];
        for v in 0..V {
            // SAFETY: row p of B holds `cols` readable floats from `b + p·ldb`; a full
            // tile's vectors lie inside them, a ragged one's masked lanes do.
            unsafe {
                let row = b.add(p * ldb);
                if full {
                    bv[v] = _mm512_loadu_ps(row.add(16 * v));
                } else if mask[v] != 0 {
                    bv[v] = _mm512_maskz_loadu_ps(mask[v], row.add(16 * v));
                }
            }
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: row i of A holds kc floats.
            let ai = unsafe { _mm512_set1_ps(*a.add(i * lda + p)) };
            for v in 0..V {
                // SAFETY: AVX-512F.
                acc_i[v] = unsafe { _mm512_fmadd_ps(ai, bv[v], acc_i[v]) };
            }
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for v in 0..V {
            if mask[v] == 0 {
                continue;
            }
            // SAFETY: row i of the tile holds `cols` floats of C; masked lanes only.
            unsafe {
                let at = c.add(i * ldc + 16 * v);
                let mut r = acc_i[v];
                if accumulate {
                    r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], at));
                }
                _mm512_mask_storeu_ps(at, mask[v], r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path itself (the public tests cannot tell which path ran): it takes f32
    /// operands whose rows are contiguous exactly when the CPU has AVX-512F, and then
    /// matches an f64 product, ragged tile edges and two depth blocks included, on views
    /// whose rows are further apart than their length.
    #[test]
    fn reads_rows_in_place_and_matches_f64() {
        let (m, k, n, lda, ldb) = (13, 300, 70, 310, 75);
        let a: Vec<f32> = (0..m * lda)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let b: Vec<f32> = (0..5 + k * ldb)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 24.0)
            .collect();
        let av = View {
            data: &a[..],
            offset: 0,
            rs: lda,
            cs: 1,
        };
        let bv = View {
            data: &b[..],
            offset: 5,
            rs: ldb,
            cs: 1,
        };
        let epi = Epilogue {
            bias: None,
            activation: None,
        };
        for parallel in [false, true] {
            let mut c = vec![f32::NAN; m * n];
            let took = product(av, bv, &mut c, (m, k, n), epi, parallel).unwrap();
            assert_eq!(took, crate::simd::Isa::Avx512.is_available());
            if !took {
                continue;
            }
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| f64::from(a[i * lda + p]) * f64::from(b[5 + p * ldb + j]))
                        .sum();
                    let got = f64::from(c[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "({i}, {j}), parallel {parallel}: {got} vs {want}"
                    );
                }
            }
        }
        let mut c = vec![0.0f32; m * n];
        // Transposed A (column stride ≠ 1) and a view past its buffer: not taken.
        let at = View {
            cs: lda,
            rs: 1,
            ..av
        };
        assert!(!product(at, bv, &mut c, (m, k, n), epi, false).unwrap());
        // The last row of B one element short of its N columns.
        let short = View {
            data: &b[..5 + (k - 1) * ldb + n - 1],
            ..bv
        };
        assert!(!product(av, short, &mut c, (m, k, n), epi, false).unwrap());
    }
}
