//! Small products of a batch (each at most `SMALL` multiply-adds, f32 operands whose rows
//! are contiguous, AVX-512): both operands are read where they lie, nothing is packed.
//!
//! At batch 32 × 128×64×128 each product is 1 M multiply-adds on 32 KiB of A and 32 KiB
//! of B, all of it in L1 or L2. The packed GEMM spent more than a third of its time there
//! outside its micro-kernel: packing A (a 12-lane transposition, element by element) and
//! B (64 rows copied into 32-wide panels) for a 64-deep kernel call, and copying the ragged
//! last 8 rows through a scratch tile. Here one tile of `R × 16·V` outputs sums its depth
//! block straight from the operands: each step loads `V` vectors of one row of B and
//! broadcasts `R` elements of A, one from each of its rows (A's row-major layout is the
//! broadcast's: any address in L1 is as good as a packed one):
//!
//! ```text
//! parallel over the batch:
//!     for each depth block of KC:
//!         for each tile of 16·V columns (B's block of it stays in L1 while the rows sweep):
//!             for each strip of R rows (fewer at the bottom: R is a const parameter):
//!                 acc (R × V zmm) = A[strip, block] · B[block, tile]   (masked ragged columns)
//!                 C[strip, tile] (=|+=) acc;  epilogue after the last block
//! ```
//!
//! Every output is summed in the same order as the packed GEMM's: a chain of fused
//! multiply-adds per depth block of [`KC`], the blocks' sums added to C in depth order.

use super::{Epilogue, View};
use crate::storage::Scalar;
use xkern_core::Result;

/// Depth per block: one chain of fused multiply-adds per output (the packed GEMM's KC).
const KC: usize = 256;
/// Rows of A per tile: 6 × 4 zmm accumulators (6 broadcasts and 4 loads per 24 FMAs).
const R: usize = 6;
/// Zmm vectors of columns per tile (64 columns).
const V: usize = 4;

/// `c = epi(A · B)` (`m × n`, row-major) for one small product when both operands are f32
/// with unit column stride and the machine has AVX-512F; `Ok(false)` (nothing written)
/// otherwise, or when a view would reach past its buffer.
pub(super) fn product<T: Scalar>(
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
) -> Result<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let (Some(ad), Some(bd)) = (T::as_f32(a.data), T::as_f32(b.data)) else {
            return Ok(false);
        };
        // One past the last element a view of `rows × cols` (row stride `rs`) reads.
        let end = |v: &View<'_, T>, rows: usize, cols: usize| {
            (rows - 1)
                .checked_mul(v.rs)
                .and_then(|x| x.checked_add(v.offset + cols))
        };
        if m == 0 || k == 0 || n == 0 || a.cs != 1 || b.cs != 1 || c.len() != m * n {
            return Ok(false);
        }
        let fits = |v: &View<'_, T>, rows, cols, len| end(v, rows, cols).is_some_and(|e| e <= len);
        if !fits(&a, m, k, ad.len()) || !fits(&b, k, n, bd.len()) {
            return Ok(false);
        }
        if !crate::simd::Isa::Avx512.is_available() {
            return Ok(false);
        }
        let ap = ad[a.offset..].as_ptr();
        let bp = bd[b.offset..].as_ptr();
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let last = p0 + kc == k;
            for j0 in (0..n).step_by(16 * V) {
                let cols = (16 * V).min(n - j0);
                for i0 in (0..m).step_by(R) {
                    let rows = R.min(m - i0);
                    // SAFETY: rows i0..i0 + rows, depths p0..p0 + kc of A and depths
                    // p0..p0 + kc, columns j0..j0 + cols of B lie inside their buffers
                    // (checked above); the tile of C is inside `c`, which is ours;
                    // AVX-512F was detected.
                    unsafe {
                        tile_rows(
                            rows,
                            kc,
                            ap.add(i0 * a.rs + p0),
                            a.rs,
                            bp.add(p0 * b.rs + j0),
                            b.rs,
                            cols,
                            c.as_mut_ptr().add(i0 * n + j0),
                            n,
                            p0 > 0,
                        )
                    };
                    if last {
                        for i in i0..i0 + rows {
                            epi.apply(&mut c[i * n + j0..i * n + j0 + cols], j0);
                        }
                    }
                }
            }
        }
        Ok(true)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c, (m, k, n), epi);
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
    let mut mask = [0u16; V];
    for (v, m) in mask.iter_mut().enumerate() {
        let lanes = cols.saturating_sub(16 * v).min(16);
        *m = ((1u32 << lanes) - 1) as u16;
    }
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
        let mut c = vec![f32::NAN; m * n];
        let took = product(av, bv, &mut c, (m, k, n), epi).unwrap();
        assert_eq!(took, crate::simd::Isa::Avx512.is_available());
        if took {
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| f64::from(a[i * lda + p]) * f64::from(b[5 + p * ldb + j]))
                        .sum();
                    let got = f64::from(c[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
        // Transposed A (column stride ≠ 1) and a view past its buffer: not taken.
        let at = View {
            cs: lda,
            rs: 1,
            ..av
        };
        assert!(!product(at, bv, &mut c, (m, k, n), epi).unwrap());
        // The last row of B one element short of its N columns.
        let short = View {
            data: &b[..5 + (k - 1) * ldb + n - 1],
            ..bv
        };
        assert!(!product(av, short, &mut c, (m, k, n), epi).unwrap());
    }
}
