//! Skinny products (2 ≤ M ≤ 16 rows of A against an f32 B whose rows are contiguous, the
//! `x @ W` of a small decode batch): B is read once, by the task that uses it, and never
//! packed as a whole.
//!
//! With M ≤ 16 each element of B takes part in at most 16 multiply-adds, so the packed
//! GEMM's separate pass over B (read all of it, write the panels, read them again) cost
//! more than the product: at 16×4096×4096 it spent 56% of its time packing. Here all of A
//! is packed once (`R × K` floats), and each task packs its own block of B — a run of up to
//! 256 columns of each of 64 rows, read in row order by the GEMM's packing — into an
//! L2-resident buffer of 16·V-wide panels (a tile of rows 16 KiB apart does not stay in
//! cache: its lines share too few sets), prefetching the next block's rows while the tiles
//! compute:
//!
//! ```text
//! parallel over column chunks of C (≤ 512 columns):
//!     for each depth block of KB = 64 rows of B:
//!         for each group of 256 columns of the chunk:
//!             pack B[block, group] into 16·V-wide panels
//!             for each panel:                   R × 16·V tile in R·V = 16 zmm registers
//!                 C[:, panel] (=|+=) A[:, block] · panel   (masked at a ragged edge)
//! ```
//!
//! Every output is summed in the same order (depth blocks in order, each in one
//! accumulator) whatever the chunk width or thread count. AVX-512 only; other ISAs take
//! the packed GEMM.

use super::{Epilogue, View};
use crate::storage::{Scalar, try_vec};
use rayon::prelude::*;
use xkern_core::Result;

/// Rows of B per depth block.
const KB: usize = 64;
/// Columns of C per parallel task (at most).
const CHUNK: usize = 512;
/// Columns of B copied together (a 1 KiB run of each row): a multiple of every tile width.
const GROUP: usize = 256;

/// `c = epi(A · B)` for `2 ≤ m ≤ 16` on AVX-512 when B is f32 with unit column stride;
/// `Ok(false)` (nothing written) when the shape or layout is not one this path takes.
pub(super) fn skinny<T: Scalar>(
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
) -> Result<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let Some(bd) = T::as_f32(b.data) else {
            return Ok(false);
        };
        // The last element of B the packing reads must lie inside its buffer (the spec was
        // validated; this keeps the packing's slicing from panicking on a bad view).
        let in_bounds = k
            .checked_sub(1)
            .and_then(|last| last.checked_mul(b.rs))
            .and_then(|x| x.checked_add(b.offset + n))
            .is_some_and(|end| end <= bd.len());
        if !(2..=16).contains(&m) || k == 0 || n == 0 || b.cs != 1 || !in_bounds {
            return Ok(false);
        }
        if c.len() != m * n {
            return Ok(false);
        }
        let bv = View {
            data: bd,
            offset: b.offset,
            rs: b.rs,
            cs: 1,
        };
        match m {
            9.. => run::<T, 16, 1>(a, bv, c, (m, k, n), epi)?,
            5..=8 => run::<T, 8, 2>(a, bv, c, (m, k, n), epi)?,
            _ => run::<T, 4, 4>(a, bv, c, (m, k, n), epi)?,
        }
        Ok(true)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, b, c, (m, k, n), epi);
        Ok(false)
    }
}

/// Packs A (`m ≤ R` rows, zero rows below) depth-major, `R` floats per depth, and runs the
/// column chunks in parallel.
#[cfg(target_arch = "x86_64")]
fn run<T: Scalar, const R: usize, const V: usize>(
    a: View<'_, T>,
    b: View<'_, f32>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
) -> Result<()> {
    let mut ap = try_vec(R * k, 0.0f32)?;
    super::pack_a(a, m, 0, k, R, 1, &mut ap, false);
    let width = 16 * V;
    let threads = rayon::current_num_threads().max(1);
    // At least four chunks per thread where N allows it, whole tiles each.
    let chunk = n
        .div_ceil(4 * threads)
        .next_multiple_of(width)
        .clamp(width, CHUNK.next_multiple_of(width));
    let c_ptr = super::CPtr(c.as_mut_ptr());
    let ap = &ap[..];
    (0..n.div_ceil(chunk)).into_par_iter().try_for_each(|t| {
        let c_base = c_ptr; // the whole (Sync) wrapper, not its raw field
        let (j0, j1) = (t * chunk, ((t + 1) * chunk).min(n));
        super::with_task_buf(|buf| -> Result<()> {
            let buf = buf.get(KB * GROUP)?;
            for p0 in (0..k).step_by(KB) {
                let kb = KB.min(k - p0);
                for jg in (j0..j1).step_by(GROUP) {
                    let gw = GROUP.min(j1 - jg);
                    // Rows p0.. and columns jg..jg+gw of B as width-wide panels, kb deep
                    // (the GEMM's packing: each row read as one run, in order).
                    let group = View {
                        offset: b.offset + jg,
                        ..b
                    };
                    let panels = &mut buf[..gw.div_ceil(width) * width * kb];
                    super::pack_b(group, gw, p0, kb, width, 1, panels, false);
                    // The block copied next: its rows are fetched while this one computes.
                    let (np, nj) = match () {
                        _ if jg + GROUP < j1 => (p0, jg + GROUP),
                        _ if p0 + KB < k => (p0 + KB, j0),
                        _ => (p0, jg),
                    };
                    let next = b.data.as_ptr().wrapping_add(b.offset + np * b.rs + nj);
                    for (q, jt) in (jg..jg + gw).step_by(width).enumerate() {
                        let cols = width.min(jg + gw - jt);
                        // SAFETY: the packed B panel holds kb·width floats; the packed A
                        // R·k floats; C's tile (m rows of n, columns jt..jt+cols) belongs
                        // to this task alone; AVX-512F was detected when the device chose
                        // this path.
                        unsafe {
                            tile::<R, V>(
                                kb,
                                ap.as_ptr().add(p0 * R),
                                buf.as_ptr().add(q * kb * width),
                                width,
                                next.wrapping_add(q * width),
                                b.rs,
                                cols,
                                c_base.0.add(jt),
                                n,
                                m,
                                p0 > 0,
                            )
                        };
                    }
                }
            }
            Ok(())
        })?;
        if epi.bias.is_some() || epi.activation.is_some() {
            for i in 0..m {
                // SAFETY: row i, columns j0..j1 of C belong to this task alone.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(c_base.0.add(i * n + j0), j1 - j0) };
                epi.apply(row, j0);
            }
        }
        Ok(())
    })
}

/// `C[rows × cols] (=|+=) Σ_{p<kb} a[p·R..][..R] ⊗ B[p, ..cols]`, with `cols ≤ 16·V` and
/// `rows ≤ R`; lanes past `cols` are neither read nor written.
///
/// # Safety
/// `a` points to `kb·R` floats, `b` to `kb` rows (`ldb` apart) of at least `cols` floats,
/// `c` to `rows` rows (`ldc` apart) of `cols` floats that no other thread touches, and the
/// CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const V: usize>(
    kb: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    next: *const f32,
    next_ld: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut mask = [0u16; V];
    for (v, m) in mask.iter_mut().enumerate() {
        let lanes = cols.saturating_sub(16 * v).min(16);
        *m = ((1u32 << lanes) - 1) as u16;
    }
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for p in 0..kb {
        let row = b.wrapping_add(p * ldb);
        for v in 0..V {
            // The next block's lines, row p (a hint: harmless past B's end).
            crate::simd::prefetch(next.wrapping_add(p * next_ld + 16 * v));
        }
        let mut bv = [_mm512_setzero_ps(); V];
        for v in 0..V {
            // SAFETY: masked lanes lie within the row's `cols` readable floats.
            bv[v] = unsafe { _mm512_maskz_loadu_ps(mask[v], row.add(16 * v)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: a holds kb·R floats.
            let ai = _mm512_set1_ps(unsafe { *a.add(p * R + i) });
            for v in 0..V {
                acc_i[v] = _mm512_fmadd_ps(ai, bv[v], acc_i[v]);
            }
        }
    }
    for (i, acc_i) in acc.iter().enumerate().take(rows) {
        for v in 0..V {
            if mask[v] == 0 {
                // Past the ragged edge: not even an address is formed (it could lie past
                // the end of C).
                continue;
            }
            // SAFETY: vector v has lanes inside row i's `cols` writable floats of the
            // tile, and only those lanes are loaded and stored.
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
