//! Skinny products (2 ≤ M ≤ 16 rows of A against a B whose rows are contiguous, the
//! `x @ W` of a small decode batch): B is read once, by the task that uses it, and never
//! packed as a whole. 16-bit B is widened 16 rows at a time, a task's chunk of them,
//! into a buffer the tiles then read (in L2).
//!
//! With M ≤ 16 each element of B takes part in at most 16 multiply-adds, so the packed
//! GEMM's separate pass over B (read all of it, write the panels, read them again) cost
//! more than the product: at 16×4096×4096 it spent 56% of its time packing. Here all of A
//! is packed once (`R × K` floats) and B is read where it lies, each element once, by
//! tiles that sweep 16 rows of it at a time across the task's columns:
//!
//! ```text
//! parallel over column chunks of C (N / threads columns, 256 to 4096):
//!     for each depth block of KB = 16 rows of B:
//!         for each tile of 16·V columns of the chunk:       (next rows prefetched 1 KiB ahead)
//!             acc (R × 16·V, in R·V = 16 zmm registers) = A[:, block] · B[block, tile]
//!             the tile's partial sums += acc               (masked at a ragged edge)
//!     C[:, chunk] = epilogue(partial sums)
//! ```
//!
//! The order is the memory's: B's rows are read 16 at a time, each in a run as long as the
//! chunk (8 KiB at 4096 columns on 2 threads), which the memory streams at nearly the pace
//! of one sequential read; reading a panel of 64 rows in 1 KiB runs (the packing this path
//! used before) ran at a third of it. The partial sums live in a task buffer, tile after
//! tile (1 KiB each at R = 16): C's own rows lie N floats apart, and a tile's lines of them
//! would share a few cache sets (reading them there cost a third of the time).
//!
//! Every output is summed in the same order whatever the chunk width or thread count: a
//! chain of fused multiply-adds per depth block, the blocks' sums added in depth order.
//! AVX-512 only; other ISAs take the packed GEMM.

use super::{Epilogue, View};
use crate::storage::{Scalar, try_vec};
use rayon::prelude::*;
use xkern_core::Result;

/// Rows of B per depth block: the rows read side by side (16 streams keep the memory's
/// pace; 32 or 64 do not).
const KB: usize = 16;
/// Columns per parallel task: at least MIN_CHUNK (runs of 1 KiB), at most MAX_CHUNK (the
/// task's outputs, 16 rows of them, stay in L2: 256 KiB).
const MIN_CHUNK: usize = 256;
const MAX_CHUNK: usize = 4096;
/// How far ahead of a tile its rows of B are prefetched, in floats (16 tiles of 16).
const AHEAD: usize = 256;

/// `c = epi(A · B)` for `2 ≤ m ≤ 16` on AVX-512 when B has unit column stride;
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
        // The last element of B the tiles read must lie inside its buffer (the spec was
        // validated; this keeps a bad view from reading past it).
        let in_bounds = b.rows_fit(k, n);
        if !(2..=16).contains(&m) || k == 0 || n == 0 || b.cs != 1 || !in_bounds {
            return Ok(false);
        }
        if c.len() != m * n {
            return Ok(false);
        }
        match m {
            9.. => run::<T, 16, 1>(a, b, c, (m, k, n), epi)?,
            5..=8 => run::<T, 8, 2>(a, b, c, (m, k, n), epi)?,
            _ => run::<T, 4, 4>(a, b, c, (m, k, n), epi)?,
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
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
) -> Result<()> {
    let mut ap = try_vec(R * k, 0.0f32)?;
    super::pack_a(a, m, 0, k, R, 1, &mut ap, false, super::PackSimd::default());
    let width = 16 * V;
    let threads = rayon::current_num_threads().max(1);
    // One chunk of columns per thread (each row of B read in runs as long as N allows),
    // whole tiles, between MIN_CHUNK and MAX_CHUNK columns.
    let chunk = n
        .div_ceil(threads)
        .clamp(MIN_CHUNK, MAX_CHUNK)
        .next_multiple_of(width);
    let c_ptr = super::CPtr(c.as_mut_ptr());
    let ap = &ap[..];
    (0..n.div_ceil(chunk)).into_par_iter().try_for_each(|t| {
        let c_base = c_ptr; // the whole (Sync) wrapper, not its raw field
        let (j0, j1) = (t * chunk, ((t + 1) * chunk).min(n));
        let tiles = (j1 - j0).div_ceil(width);
        super::with_task_buf(|buf| -> Result<()> {
            // The task's outputs, tile after tile (R rows of `width` each, 1 KiB apart at
            // most): C's own rows lie n floats apart, and a tile's lines of them would
            // share a few cache sets.
            let cols = j1 - j0;
            let b32 = T::as_f32(b.data);
            // 16-bit B: each depth block's rows are widened into the buffer's tail (KB
            // rows of the chunk, in L2) and the tiles read them there.
            let wide_len = if b32.is_some() { 0 } else { KB * cols };
            let (cb, wide) = buf
                .get(tiles * R * width + wide_len)?
                .split_at_mut(tiles * R * width);
            for p0 in (0..k).step_by(KB) {
                let kb = KB.min(k - p0);
                let (rows, ldb) = match b32 {
                    Some(bd) => (&bd[b.offset + p0 * b.rs + j0..], b.rs),
                    None => {
                        for (r, dst) in wide.chunks_exact_mut(cols).take(kb).enumerate() {
                            let at = b.offset + (p0 + r) * b.rs + j0;
                            T::widen_into(&b.data[at..at + cols], dst);
                        }
                        (&wide[..], cols)
                    }
                };
                // SAFETY: `rows` holds kb rows (`ldb` apart) of the chunk's columns (the
                // caller checked B's extent; the widened rows are the buffer's); the
                // packed A holds R·k floats; the buffer holds `tiles` tiles of R rows;
                // AVX-512F was detected when the device chose this path.
                unsafe {
                    strip::<R, V>(
                        kb,
                        ap.as_ptr().add(p0 * R),
                        rows.as_ptr(),
                        ldb,
                        cols,
                        cb.as_mut_ptr(),
                        p0 > 0,
                    )
                };
            }
            for i in 0..m {
                // SAFETY: row i, columns j0..j1 of C belong to this task alone.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(c_base.0.add(i * n + j0), j1 - j0) };
                for (q, out) in row.chunks_mut(width).enumerate() {
                    let at = (q * R + i) * width;
                    out.copy_from_slice(&cb[at..at + out.len()]);
                }
                epi.apply(row, j0);
            }
            Ok(())
        })
    })
}

/// Runs the tiles of one depth block across `cols` columns: [`tile`] per `16·V` columns,
/// each into its own `R × 16·V` block of `c`.
///
/// # Safety
/// As [`tile`], for `cols` columns of B and `cols.div_ceil(16·V)` tiles at `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn strip<const R: usize, const V: usize>(
    kb: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    cols: usize,
    c: *mut f32,
    accumulate: bool,
) {
    let width = 16 * V;
    for (q, jt) in (0..cols).step_by(width).enumerate() {
        let w = width.min(cols - jt);
        // SAFETY: as the caller's, for columns jt..jt + w and tile q of the buffer.
        unsafe {
            let bt = b.add(jt);
            let next = if w == width {
                bt.wrapping_add(AHEAD)
            } else {
                bt
            };
            tile::<R, V>(kb, a, bt, ldb, next, w, c.add(q * R * width), accumulate)
        }
    }
}

/// `T (=|+=) Σ_{p<kb} a[p·R..][..R] ⊗ B[p, ..cols]` for one tile `T` of partial sums (`R`
/// rows of `16·V` floats, back to back at `c`), with `cols ≤ 16·V`; lanes of B past
/// `cols` are not read, and those of `T` neither read nor written.
///
/// # Safety
/// `a` points to `kb·R` floats, `b` to `kb` rows (`ldb` apart) of at least `cols` floats,
/// `c` to `R·16·V` floats that no other thread touches; the caller is compiled with
/// AVX-512F (detected on this CPU).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const V: usize>(
    kb: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    next: *const f32,
    cols: usize,
    c: *mut f32,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mask = super::lane_masks::<V>(cols);
    // SAFETY: AVX-512F, as the caller promises (so for every intrinsic below).
    let mut acc = [[unsafe { _mm512_setzero_ps() }; V]; R];
    for p in 0..kb {
        let row = b.wrapping_add(p * ldb);
        for v in 0..V {
            // Row p's lines further on (a hint: harmless past B's end).
            crate::simd::prefetch(next.wrapping_add(p * ldb + 16 * v));
        }
        // SAFETY: AVX-512F.
        let mut bv = [unsafe { _mm512_setzero_ps() }; V];
        for v in 0..V {
            if mask[v] == 0 {
                // Past the ragged edge: not even an address is formed (on B's last row
                // it could lie past the end of B).
                continue;
            }
            // SAFETY: masked lanes lie within the row's `cols` readable floats.
            bv[v] = unsafe { _mm512_maskz_loadu_ps(mask[v], row.add(16 * v)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: a holds kb·R floats.
            let ai = unsafe { _mm512_set1_ps(*a.add(p * R + i)) };
            for v in 0..V {
                // SAFETY: AVX-512F.
                acc_i[v] = unsafe { _mm512_fmadd_ps(ai, bv[v], acc_i[v]) };
            }
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for v in 0..V {
            // SAFETY: the tile's R·16·V floats; masked lanes only.
            unsafe {
                let at = c.add((i * V + v) * 16);
                let mut r = acc_i[v];
                if accumulate {
                    r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], at));
                }
                _mm512_mask_storeu_ps(at, mask[v], r);
            }
        }
    }
}
