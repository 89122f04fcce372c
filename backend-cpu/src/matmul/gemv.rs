//! Matrix-vector products (M = 1 or N = 1): the matrix is streamed once from memory, so
//! the floor is its size over the memory bandwidth (64 MiB of f32 at 1×4096×4096: ~1.4 ms
//! at 47 GB/s); packing would only add traffic.
//!
//! Two layouts, two loops, each compiled per ISA (FMA where the ISA has it):
//! - **axpy** (`x · B` with B's rows contiguous, the usual `x @ W`): B's rows are cut into
//!   fixed chunks (K / 16 rows, 64 to 256) and its columns into blocks of [`AXPY_COLS`];
//!   each task sums its chunk's rows, four per pass, into partial outputs, so that a
//!   thread streams long runs of memory (one contiguous run up to 4096 columns), and the
//!   chunks' partials are added in a fixed pairwise tree. (Threads owning halves of every
//!   row instead, 8 KiB runs of each, ran 1.24–1.35× OpenBLAS's time at 1×4096×4096,
//!   interleaved, against 1.08–1.17× now.) With a single chunk, threads own blocks of
//!   output columns, as wide as possible.
//! - **dot** (`x · Wᵀ` views and `A · v`: the matrix's rows are the dot products): threads
//!   own blocks of outputs, each a dot product with 32 independent partial sums.
//!
//! Every output is computed in a fixed order (rows in order within a chunk, then the
//! chunks' tree, for axpy; fixed lanes for dot) that depends on the shape only, so results
//! do not depend on the thread count.

use super::View;
use crate::simd::Isa;
use crate::storage::{Scalar, reserve};
use rayon::prelude::*;
use xkern_core::Result;

/// Rows of B per chunk of the axpy form: K / 16 within these bounds (so that K ≥ 1024
/// gives 16 chunks to spread over the threads), more for tall B so that there are at most
/// [`AXPY_CHUNKS`] partial vectors.
const AXPY_ROWS: usize = 256;
/// See [`AXPY_ROWS`].
const AXPY_ROWS_MIN: usize = 64;
/// The most chunks (partial output vectors) of an axpy product.
const AXPY_CHUNKS: usize = 64;
/// Output columns per task of a chunk (16 KiB runs of each row, partials that stay in L1).
const AXPY_COLS: usize = 4096;

/// `out[j] = ((out[j] + w0·r0[j]) + w1·r1[j]) + …` over the rows given, fused when `FMA`.
#[inline(always)]
fn axpy<T: Scalar, const FMA: bool>(out: &mut [f32], w: &[f32], rows: &[&[T]]) {
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    match (w, rows) {
        ([w0, w1, w2, w3], [r0, r1, r2, r3]) => {
            for ((((o, a), b), c), d) in out.iter_mut().zip(*r0).zip(*r1).zip(*r2).zip(*r3) {
                let mut t = madd(*w0, a.to_f32(), *o);
                t = madd(*w1, b.to_f32(), t);
                t = madd(*w2, c.to_f32(), t);
                *o = madd(*w3, d.to_f32(), t);
            }
        }
        _ => {
            for (&wp, row) in w.iter().zip(rows) {
                for (o, x) in out.iter_mut().zip(*row) {
                    *o = madd(wp, x.to_f32(), *o);
                }
            }
        }
    }
}

/// `Σ a[p]·b[p]` with 32 lane sums (fixed lanes, then a fixed tree).
#[inline(always)]
fn dot<T: Scalar, const FMA: bool>(a: &[T], b: &[f32]) -> f32 {
    const L: usize = 32;
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    let mut acc = [0.0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s = madd(p.to_f32(), *q, *s);
        }
    }
    for ((s, p), q) in acc.iter_mut().zip(ra).zip(rb) {
        *s = madd(p.to_f32(), *q, *s);
    }
    let mut width = L;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

macro_rules! isa_gemv {
    ($name:ident, $feat:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use crate::storage::Scalar;
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn axpy<T: Scalar>(out: &mut [f32], w: &[f32], rows: &[&[T]]) {
                super::axpy::<T, true>(out, w, rows)
            }
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn dot<T: Scalar>(a: &[T], b: &[f32]) -> f32 {
                super::dot::<T, true>(a, b)
            }
        }
    };
}
isa_gemv!(avx512, "avx512f,avx512vl,fma");
isa_gemv!(avx2, "avx2,fma");

fn axpy_isa<T: Scalar>(isa: Isa, out: &mut [f32], w: &[f32], rows: &[&[T]]) {
    match isa {
        // SAFETY: a device only holds an ISA that was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::axpy(out, w, rows) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::axpy(out, w, rows) },
        _ => axpy::<T, false>(out, w, rows),
    }
}

fn dot_isa<T: Scalar>(isa: Isa, a: &[T], b: &[f32]) -> f32 {
    match isa {
        // SAFETY: a device only holds an ISA that was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::dot(a, b) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dot(a, b) },
        _ => dot::<T, false>(a, b),
    }
}

/// Computes `c` (m·n outputs, m = 1 or n = 1) from views `a` and `b`; `Ok(false)` when
/// the layout has no streaming path (the packed GEMM then handles it), `Err` when the
/// partial sums find no memory.
pub(super) fn gemv<T: Scalar>(
    isa: Isa,
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
) -> Result<bool> {
    // The streamed matrix, the vector, and whether the matrix's rows are the dot products.
    // The vector is A's row when the matrix is B and B's column when it is A, decided by
    // the branch, not by `m == 1`: with M = N = 1 either may be the vector.
    let a_row = || (0..k).map(|p| a.at(0, p)).collect::<Vec<f32>>();
    let (mat, v, dots) = match () {
        _ if m == 1 && b.cs == 1 => (b, a_row(), false),
        _ if m == 1 && b.rs == 1 => (
            View {
                data: b.data,
                offset: b.offset,
                rs: b.cs,
                cs: 1,
            },
            a_row(),
            true,
        ),
        _ if n == 1 && a.cs == 1 => (a, (0..k).map(|p| b.at(p, 0)).collect(), true),
        _ => return Ok(false),
    };
    let outputs = c.len();
    let Some(data) = mat.data.get(mat.offset..) else {
        return Ok(false);
    };
    let row = |i: usize, from: usize, len: usize| {
        data.get(i * mat.rs + from..).and_then(|r| r.get(..len))
    };
    let threads = rayon::current_num_threads().max(1);
    if dots {
        // One dot product per output; blocks of outputs per task.
        let block = outputs.div_ceil(4 * threads).clamp(1, 64);
        return Ok(c
            .par_chunks_mut(block)
            .enumerate()
            .map(|(bi, out)| {
                for (ii, x) in out.iter_mut().enumerate() {
                    let Some(r) = row(bi * block + ii, 0, k) else {
                        return false;
                    };
                    *x = dot_isa(isa, r, &v);
                }
                true
            })
            .all(|ok| ok));
    }
    // axpy over fixed chunks of rows and blocks of columns, each into its own partials.
    let chunk_rows = (k / 16)
        .clamp(AXPY_ROWS_MIN, AXPY_ROWS)
        .max(k.div_ceil(AXPY_CHUNKS));
    let chunks = k.div_ceil(chunk_rows);
    if chunks > 1 {
        // Not from the tensor pool: this buffer is dropped, not handed back.
        let len = chunks * outputs;
        let mut parts: Vec<f32> = reserve(len)?;
        parts.resize(len, 0.0);
        // Every (chunk, first column, segment) of the partials is one task, run by the
        // calling thread and the workers as they come (`tasks::share_slices`).
        let mut segments: Vec<(usize, usize, &mut [f32])> = parts
            .chunks_mut(outputs)
            .enumerate()
            .flat_map(|(ci, part)| {
                part.chunks_mut(AXPY_COLS)
                    .enumerate()
                    .map(move |(bi, seg)| (ci, bi * AXPY_COLS, seg))
            })
            .collect();
        let summed = crate::tasks::share_slices(&mut segments, 1, |_, task| {
            task.iter_mut().all(|(ci, j0, seg)| {
                let (p0, p1) = (*ci * chunk_rows, ((*ci + 1) * chunk_rows).min(k));
                let (j0, len) = (*j0, seg.len());
                axpy_rows(isa, seg, &v, p0..p1, |i| row(i, j0, len))
            })
        });
        drop(segments);
        if !summed {
            return Ok(false);
        }
        // Pairwise tree: at level s, chunk c += chunk c + s for c a multiple of 2s (on
        // the calling thread: a few microseconds, less than waking a worker).
        let mut s = 1;
        while s < chunks {
            for pair in parts.chunks_mut(2 * s * outputs) {
                if let Some((lo, hi)) = pair.split_at_mut_checked(s * outputs) {
                    for (x, y) in lo.iter_mut().zip(hi.iter()).take(outputs) {
                        *x += *y;
                    }
                }
            }
            s *= 2;
        }
        c.copy_from_slice(&parts[..outputs]);
        return Ok(true);
    }
    // axpy: column blocks as wide as the thread count allows (multiples of 64 columns,
    // at least 256 so a block's rows stay long runs).
    let block = outputs
        .div_ceil(threads)
        .next_multiple_of(64)
        .clamp(256, outputs.max(256));
    Ok(c.par_chunks_mut(block)
        .enumerate()
        .map(|(bi, out)| {
            out.fill(0.0);
            let (j0, len) = (bi * block, out.len());
            axpy_rows(isa, out, &v, 0..k, |i| row(i, j0, len))
        })
        .all(|ok| ok))
}

/// `out += Σ v[i]·row(i)` over `rows`, four rows per pass, in order; `false` when a row
/// is out of the matrix's bounds.
fn axpy_rows<'a, T: Scalar + 'a>(
    isa: Isa,
    out: &mut [f32],
    v: &[f32],
    rows: std::ops::Range<usize>,
    row: impl Fn(usize) -> Option<&'a [T]>,
) -> bool {
    let mut p = rows.start;
    while p < rows.end {
        let step = (rows.end - p).min(4);
        let mut four: [&[T]; 4] = [&[]; 4];
        for (q, r) in four.iter_mut().enumerate().take(step) {
            match row(p + q) {
                Some(s) => *r = s,
                None => return false,
            }
        }
        let Some(w) = v.get(p..p + step) else {
            return false;
        };
        axpy_isa(isa, out, w, &four[..step]);
        p += step;
    }
    true
}
