//! CPU reductions and row normalisations over the canonical `[outer, axis, inner]` form.
//!
//! Rows (`inner = 1`, the common case: reducing or normalising the last axis) run the
//! vectorised kernels of [`rows`], compiled per instruction set: the axis is cut into fixed
//! chunks of `ROW_CHUNK` elements (`WIDE_CHUNK` for 16-bit elements, widened a chunk at
//! a time in L1), every (row, chunk) is one parallel unit, and the chunk results of a row
//! merge in a fixed pairwise tree. Outer-axis reductions (`inner > 1`) use the generic
//! path below; column sums and extremes read 16-bit rows in place, a few at a time.
//!
//! Reductions: the axis is cut into fixed chunks of `CHUNK` positions. Each (outer,
//! chunk) unit folds its rows into one state per inner position (for `inner > 1` the
//! rows are contiguous, so a column reduction streams memory instead of gathering), units
//! run in parallel, and the chunk states of each output are merged in a fixed pairwise
//! tree. The decomposition depends only on the shape, never on the thread count, so
//! results are bitwise identical for any number of threads. Sums accumulate in f64 (see
//! `sum_fold`), merged pairwise.
//!
//! Normalisations: rows are independent; each `outer` block is one parallel task, and
//! rows along a non-last axis are gathered into a scratch row and scattered back.

// Kernel code: rows and columns are cut at multiples of the validated axis length from
// buffers of outer · axis · inner elements.
#![allow(clippy::indexing_slicing)]

pub(crate) mod rows;

use crate::matmul::{PackBuf, with_task_buf};
use crate::simd::Isa;
use crate::simd::nan_max;
use crate::storage::{CpuStorage, Scalar, try_vec, try_vec_overwrite};
use rayon::prelude::*;
use rows::RowKernels;
use xkern_core::{NormKind, NormSpec, ReduceKind, ReduceSpec, Result};

/// Axis positions folded sequentially before the pairwise merge.
const CHUNK: usize = 2048;

/// Merges `parts` pairwise, left to right at each level (fixed order).
fn tree<S: Copy>(parts: &[S], merge: &impl Fn(S, S) -> S) -> Option<S> {
    match parts.len() {
        0 => None,
        1 => Some(parts[0]),
        n => {
            let (l, r) = parts.split_at(n / 2);
            Some(merge(tree(l, merge)?, tree(r, merge)?))
        }
    }
}

/// Folds every `[outer, axis, inner]` row into one state per output `(o, i)`.
/// `push(state, x, output index, axis index)`; `merge(earlier, later)`.
fn fold_axis<S, P, M>(
    x: &[f32],
    outer: usize,
    axis: usize,
    inner: usize,
    init: S,
    push: P,
    merge: M,
) -> Vec<S>
where
    S: Copy + Send + Sync,
    P: Fn(S, f32, usize, usize) -> S + Sync,
    M: Fn(S, S) -> S + Sync,
{
    let chunks = axis.div_ceil(CHUNK).max(1);
    let partials: Vec<Vec<S>> = (0..outer * chunks)
        .into_par_iter()
        .map(|u| {
            let (o, c) = (u / chunks, u % chunks);
            let mut states = vec![init; inner];
            for a in c * CHUNK..((c + 1) * CHUNK).min(axis) {
                let row = &x[(o * axis + a) * inner..][..inner];
                for (i, (s, &v)) in states.iter_mut().zip(row).enumerate() {
                    *s = push(*s, v, o * inner + i, a);
                }
            }
            states
        })
        .collect();
    (0..outer * inner)
        .into_par_iter()
        .map(|oi| {
            let (o, i) = (oi / inner, oi % inner);
            let column: Vec<S> = partials[o * chunks..(o + 1) * chunks]
                .iter()
                .map(|p| p[i])
                .collect();
            tree(&column, &merge).unwrap_or(init)
        })
        .collect()
}

/// (value, index) state of argmax/argmin; `better(a, b)` says a strictly beats b.
fn arg_fold(x: &[f32], spec: &ReduceSpec, better: fn(f32, f32) -> bool) -> Vec<u32> {
    // NaN beats everything; among equals the earlier index stays.
    let wins = move |cand: f32, best: f32| !best.is_nan() && (cand.is_nan() || better(cand, best));
    fold_axis(
        x,
        spec.outer,
        spec.axis_len,
        spec.inner,
        (f32::NAN, u32::MAX),
        move |s: (f32, u32), v, _, a| {
            if s.1 == u32::MAX || wins(v, s.0) {
                (v, a as u32)
            } else {
                s
            }
        },
        move |l: (f32, u32), r: (f32, u32)| {
            if l.1 == u32::MAX || (r.1 != u32::MAX && wins(r.0, l.0)) {
                r
            } else {
                l
            }
        },
    )
    .into_iter()
    .map(|s| s.1)
    .collect()
}

fn max_fold(x: &[f32], spec: &ReduceSpec, sign: f32) -> Vec<f32> {
    let m = fold_axis(
        x,
        spec.outer,
        spec.axis_len,
        spec.inner,
        f32::NEG_INFINITY,
        |s, v, _, _| nan_max(s, sign * v),
        nan_max,
    );
    m.into_iter().map(|v| sign * v).collect()
}

/// Sums (of `exp(x − shift)` when a shift is given) accumulated in f64: these reductions
/// are bound by memory bandwidth, where f64 adds cost nothing, and f64 keeps the sum of
/// 64M mixed-sign f32 values within 1e-6 of the exact result where f32 chunks drift to
/// ~1e-5 (measured on the 4M-element quick case).
fn sum_fold(x: &[f32], spec: &ReduceSpec, shift: Option<&[f32]>) -> Vec<f64> {
    let push = |s: f64, v: f32, oi: usize, _| match shift {
        None => s + f64::from(v),
        Some(m) => s + f64::from((v - m[oi]).exp()),
    };
    fold_axis(
        x,
        spec.outer,
        spec.axis_len,
        spec.inner,
        0.0f64,
        push,
        |a, b| a + b,
    )
}

/// Outputs of at least this many elements (32 MiB of f32), and at least the size of the
/// last-level cache (see [`stream_min`]), are written by softmax and log-softmax with
/// non-temporal stores: they could not stay in cache for their consumer anyway. On Zen 4
/// (32 MiB L3), interleaved medians: 4096² softmax 5.6–6.9 → 4.8–5.4 ms, log-softmax
/// 7.2–10.3 → 6.0–6.5 ms (a plain copy-and-scale of 64 MiB through the cache takes
/// 4.8–5.1 ms there, with streaming stores 4.2–4.8).
const STREAM_MIN: usize = 8 << 20;

/// The f32 elements from which outputs stream: [`STREAM_MIN`], or the size of the first
/// CPU's last-level cache (its share of it: one CCD's L3 on AMD) where the OS reports a
/// larger one (Linux sysfs), read once. A heuristic: it changes no result.
fn stream_min() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        let llc = last_level_cache_bytes().unwrap_or(0);
        STREAM_MIN.max(llc / std::mem::size_of::<f32>())
    })
}

/// The size in bytes of the first CPU's largest cache level, from
/// `/sys/devices/system/cpu/cpu0/cache/index*/{level,size}`; `None` where unreadable.
fn last_level_cache_bytes() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let level: u32 = std::fs::read_to_string(path.join("level"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let size = parse_cache_size(&std::fs::read_to_string(path.join("size")).ok()?)?;
        Some((level, size))
    })
    .max()
    .map(|(_, size)| size)
}

/// A sysfs cache size (`"32768K"`, `"1M"`, `"512"`) in bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}
/// Rows up to this many elements (256 KiB of f32) stream; see [`STREAM_MIN`].
const STREAM_ROW_MAX: usize = 1 << 16;

/// Elements of a row reduced sequentially by one unit of work (a multiple of 16).
const ROW_CHUNK: usize = 65536;
/// [`ROW_CHUNK`] for 16-bit rows (see [`fold_rows`]): 4 KiB widened.
const WIDE_CHUNK: usize = 1024;

/// The elements a row or column reduction reads: f32 in place, or 16-bit elements widened
/// a unit at a time into a per-thread buffer that stays in cache (widening the whole
/// tensor first wrote and read back twice its size in f32: an f16 4096² row sum took
/// 6.9 ms).
#[derive(Clone, Copy)]
enum Src<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    BF16(&'a [half::bf16]),
}

impl Src<'_> {
    /// Elements `r` as f32: borrowed, or widened into `buf` (`None` if it finds no memory).
    fn get<'s>(&'s self, r: std::ops::Range<usize>, buf: &'s mut PackBuf) -> Option<&'s [f32]> {
        match self {
            Src::F32(x) => Some(&x[r]),
            _ => {
                let dst = buf.get(r.len()).ok()?;
                self.widen(r, dst);
                Some(dst)
            }
        }
    }

    /// The bytes of elements `r` seen as f32s, for the kernels' prefetches only (which
    /// take the row to come as an f32 slice and use just its addresses): the elements
    /// themselves for f32, the aligned middle of the 16-bit run otherwise.
    fn lines(&self, r: std::ops::Range<usize>) -> &[f32] {
        match self {
            Src::F32(x) => &x[r],
            Src::F16(x) => bytemuck::pod_align_to::<_, f32>(&x[r]).1,
            Src::BF16(x) => bytemuck::pod_align_to::<_, f32>(&x[r]).1,
        }
    }

    /// Writes elements `r` as f32 into `dst` (of the same length).
    fn widen(&self, r: std::ops::Range<usize>, dst: &mut [f32]) {
        match self {
            Src::F32(x) => dst.copy_from_slice(&x[r]),
            Src::F16(x) => Scalar::widen_into(&x[r], dst),
            Src::BF16(x) => Scalar::widen_into(&x[r], dst),
        }
    }
}

/// Folds every row of `[outer, axis]` with `f(chunk, first index of the chunk, row)` per
/// fixed chunk ([`ROW_CHUNK`] elements, [`WIDE_CHUNK`] for 16-bit ones), merging a row's
/// chunk results pairwise in order. The units run as tasks of about [`ROW_CHUNK`]
/// elements each on the calling thread and the workers (`tasks::share`: a 4096² row sum
/// is 2 ms, and waking a sleeping worker up to 0.5).
fn fold_rows<S, F, M>(x: Src<'_>, outer: usize, axis: usize, f: F, merge: M) -> Result<Vec<S>>
where
    S: Copy + Send + Sync,
    F: Fn(&[f32], usize, usize) -> S + Sync,
    M: Fn(S, S) -> S + Sync,
{
    // 16-bit units are widened into a buffer that stays in L1. An f16 sum of 64M
    // elements (3 interleaved rounds, medians): 8.9–10.7 ms with 16 Ki-element units,
    // 7.4–10.7 with 4 Ki, 7.2–8.2 with 1 Ki, 7.6–9.6 with 256.
    let unit = match x {
        Src::F32(_) => ROW_CHUNK,
        Src::F16(_) | Src::BF16(_) => WIDE_CHUNK,
    };
    let chunks = axis.div_ceil(unit).max(1);
    let units = outer * chunks;
    // Units per task: whole chunks, or enough short rows to make one.
    let group = (ROW_CHUNK / axis.clamp(1, unit)).max(1);
    let mut parts: Vec<Option<S>> = vec![None; units];
    crate::tasks::share_slices(&mut parts, group, |u0, out| {
        with_task_buf(|buf| {
            for (i, slot) in out.iter_mut().enumerate() {
                let (o, c) = ((u0 + i) / chunks, (u0 + i) % chunks);
                let start = c * unit;
                let end = (start + unit).min(axis);
                // A unit left `None` (no memory to widen it) is reported below.
                if let Some(chunk) = x.get(o * axis + start..o * axis + end, buf) {
                    *slot = Some(f(chunk, start, o));
                }
            }
            true
        })
    });
    let merge = |a: Option<S>, b: Option<S>| match (a, b) {
        (Some(a), Some(b)) => Some(merge(a, b)),
        (a, None) => a,
        (None, b) => b,
    };
    parts
        .chunks(chunks)
        .map(|p| tree(p, &merge).flatten())
        .collect::<Option<Vec<S>>>()
        .ok_or_else(|| crate::internal("a row reduction left a unit unreduced (out of memory?)"))
}

/// Reductions of rows (`inner = 1`) through the vectorised kernels.
fn reduce_rows(k: RowKernels, spec: &ReduceSpec, x: Src<'_>) -> Result<CpuStorage> {
    let (outer, axis) = (spec.outer, spec.axis_len);
    // SAFETY: `k` was built for an ISA detected on this CPU (every call below).
    let sum = |x: &[f32], _, _| unsafe { (k.sum)(x) };
    let extreme = |sign: f32| -> Result<Vec<f32>> {
        fold_rows(
            x,
            outer,
            axis,
            // SAFETY: `k` was built for an ISA detected on this CPU.
            move |c, _, _| unsafe { (k.extreme)(c, sign) },
            move |a: f32, b: f32| sign * nan_max(sign * a, sign * b),
        )
    };
    let arg = |sign: f32| -> Result<Vec<u32>> {
        let better = move |(v, j): (f32, u32), (bv, bj): (f32, u32)| {
            rows::beats((sign * v, j), (sign * bv, bj))
        };
        fold_rows(
            x,
            outer,
            axis,
            // SAFETY: `k` was built for an ISA detected on this CPU.
            move |c, start, _| unsafe { (k.arg)(c, sign) }.map(|(v, j)| (v, j + start as u32)),
            move |a: Option<(f32, u32)>, b: Option<(f32, u32)>| match (a, b) {
                (Some(a), Some(b)) => Some(if better(b, a) { b } else { a }),
                (a, None) => a,
                (None, b) => b,
            },
        )
        .map(|v| v.into_iter().map(|s| s.map_or(0, |(_, j)| j)).collect())
    };
    let values: Vec<f32> = match spec.kind {
        ReduceKind::Sum => fold_rows(x, outer, axis, sum, |a, b| a + b)?
            .into_iter()
            .map(|s| s as f32)
            .collect(),
        ReduceKind::Mean => {
            let n = axis as f64;
            fold_rows(x, outer, axis, sum, |a, b| a + b)?
                .into_iter()
                .map(|s| (s / n) as f32)
                .collect()
        }
        ReduceKind::Max => extreme(1.0)?,
        ReduceKind::Min => extreme(-1.0)?,
        ReduceKind::ArgMax => return Ok(CpuStorage::U32(arg(1.0)?)),
        ReduceKind::ArgMin => return Ok(CpuStorage::U32(arg(-1.0)?)),
        ReduceKind::LogSumExp => {
            let m = extreme(1.0)?;
            let s = fold_rows(
                x,
                outer,
                axis,
                // SAFETY: `k` was built for an ISA detected on this CPU.
                |c, _, o| unsafe { (k.sum_exp)(c, m[o]) },
                |a, b| a + b,
            )?;
            logsumexp(&m, s)
        }
    };
    CpuStorage::from_f32(spec.dtype, values)
}

/// `m + ln(s)` per row from the row max and Σ exp(x − m); a max of ±∞ or NaN is the answer.
fn logsumexp(m: &[f32], s: Vec<f64>) -> Vec<f32> {
    m.iter()
        .zip(s)
        .map(|(&m, s)| {
            if m.is_nan() || m.is_infinite() {
                m
            } else {
                (f64::from(m) + s.ln()) as f32
            }
        })
        .collect()
}

/// Columns per unit of an outer-axis reduction.
const COL_BLOCK: usize = 4096;

/// Outer-axis reductions (`inner > 1`) that stream whole rows: each unit (outer, axis
/// chunk, column block) adds its rows into one state per column with `push(states,
/// row)`, a loop over contiguous memory the compiler vectorises; chunk states merge
/// pairwise in order. 16-bit rows are widened four at a time into a per-thread buffer
/// first (`None` if it finds no memory).
fn fold_cols<S, P, P4, M>(
    x: Src<'_>,
    spec: &ReduceSpec,
    init: S,
    push: P,
    push4: P4,
    merge: M,
) -> Option<Vec<S>>
where
    S: Copy + Send + Sync,
    P: Fn(&mut [S], &[f32]) + Sync,
    P4: Fn(&mut [S], [&[f32]; 4], [&[f32]; 4]) + Sync,
    M: Fn(S, S) -> S + Sync,
{
    let (outer, axis, inner) = (spec.outer, spec.axis_len, spec.inner);
    let chunks = axis.div_ceil(CHUNK).max(1);
    let blocks = inner.div_ceil(COL_BLOCK);
    let parts: Vec<Vec<S>> = (0..outer * chunks * blocks)
        .into_par_iter()
        .map(|u| {
            let (o, c, blk) = (u / (chunks * blocks), u / blocks % chunks, u % blocks);
            let (j0, j1) = (blk * COL_BLOCK, ((blk + 1) * COL_BLOCK).min(inner));
            let w = j1 - j0;
            let mut st = vec![init; w];
            let at = |a: usize| (o * axis + a) * inner + j0;
            let (a0, a1) = (c * CHUNK, ((c + 1) * CHUNK).min(axis));
            // Four rows per pass while they last (a fixed grouping: the chunks do not
            // depend on the thread count), then one at a time.
            let quads = (a1 - a0) / 4;
            // A row to prefetch (for 16-bit rows, their bytes: see `Src::lines`); empty
            // past the unit's rows.
            let ahead = |a: usize| {
                if a < a1 {
                    x.lines(at(a)..at(a) + w)
                } else {
                    &[]
                }
            };
            if let Src::F32(x) = x {
                let row = |a: usize| &x[at(a)..at(a) + w];
                for q in 0..quads {
                    let a = a0 + 4 * q;
                    let next = [ahead(a + 4), ahead(a + 5), ahead(a + 6), ahead(a + 7)];
                    push4(&mut st, [row(a), row(a + 1), row(a + 2), row(a + 3)], next);
                }
                for a in a0 + 4 * quads..a1 {
                    push(&mut st, row(a));
                }
                return Some(st);
            }
            with_task_buf(|buf| {
                let rows = buf.get(4 * w).ok()?;
                for q in 0..quads {
                    let a = a0 + 4 * q;
                    for (i, dst) in rows.chunks_exact_mut(w).enumerate() {
                        x.widen(at(a + i)..at(a + i) + w, dst);
                    }
                    let (r01, r23) = rows.split_at(2 * w);
                    let ((r0, r1), (r2, r3)) = (r01.split_at(w), r23.split_at(w));
                    let next = [ahead(a + 4), ahead(a + 5), ahead(a + 6), ahead(a + 7)];
                    push4(&mut st, [r0, r1, r2, r3], next);
                }
                for a in a0 + 4 * quads..a1 {
                    x.widen(at(a)..at(a) + w, &mut rows[..w]);
                    push(&mut st, &rows[..w]);
                }
                Some(st)
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(
        (0..outer * inner)
            .into_par_iter()
            .map(|oi| {
                let (o, i) = (oi / inner, oi % inner);
                let (blk, j) = (i / COL_BLOCK, i % COL_BLOCK);
                let column: Vec<S> = (0..chunks)
                    .map(|c| parts[(o * chunks + c) * blocks + blk][j])
                    .collect();
                tree(&column, &merge).unwrap_or(init)
            })
            .collect(),
    )
}

/// Calls `f` with elements `offset..offset + len` of `x`: 16-bit ones in place, others as
/// f32 (borrowed, or a widened copy).
fn with_src<R>(
    x: &CpuStorage,
    offset: usize,
    len: usize,
    f: impl FnOnce(Src<'_>) -> Result<R>,
) -> Result<R> {
    match x {
        CpuStorage::F16(v) => f(Src::F16(&v[x.range(offset, len)?])),
        CpuStorage::BF16(v) => f(Src::BF16(&v[x.range(offset, len)?])),
        _ => f(Src::F32(&x.f32_range(offset, len)?)),
    }
}

/// Column sums, means, maxima and minima (`inner > 1`) through [`fold_cols`].
fn reduce_cols(k: RowKernels, spec: &ReduceSpec, src: Src<'_>) -> Result<CpuStorage> {
    let no_memory = || crate::internal("an outer-axis reduction found no memory for its rows");
    let col_sum = || {
        // SAFETY: `k` was built for an ISA detected on this CPU.
        let add = |st: &mut [f64], row: &[f32]| unsafe { (k.col_add)(st, row) };
        // SAFETY: as above.
        let add4 = |st: &mut [f64], rows: [&[f32]; 4], next: [&[f32]; 4]| unsafe {
            (k.col_add4)(st, rows, next)
        };
        fold_cols(src, spec, 0.0f64, add, add4, |a, b| a + b).ok_or_else(no_memory)
    };
    let col_extreme = |sign: f32| {
        // SAFETY: as above.
        let extreme = move |st: &mut [f32], row: &[f32], next: &[f32]| unsafe {
            (k.col_extreme)(st, row, sign, next)
        };
        let push = move |st: &mut [f32], row: &[f32]| extreme(st, row, &[]);
        // Each row prefetches the one four rows on (see `col_add4`).
        let push4 = move |st: &mut [f32], rows: [&[f32]; 4], next: [&[f32]; 4]| {
            for (r, n) in rows.into_iter().zip(next) {
                extreme(st, r, n);
            }
        };
        fold_cols(src, spec, f32::NEG_INFINITY, push, push4, nan_max)
            .map(|m| m.into_iter().map(|v| sign * v).collect::<Vec<f32>>())
            .ok_or_else(no_memory)
    };
    let values = match spec.kind {
        ReduceKind::Sum => col_sum()?.into_iter().map(|s| s as f32).collect(),
        ReduceKind::Mean => {
            let n = spec.axis_len as f64;
            col_sum()?.into_iter().map(|s| (s / n) as f32).collect()
        }
        ReduceKind::Max => col_extreme(1.0)?,
        ReduceKind::Min => col_extreme(-1.0)?,
        _ => return Err(crate::internal("not a column sum or extreme")),
    };
    CpuStorage::from_f32(spec.dtype, values)
}

pub(crate) fn reduce(isa: Isa, spec: &ReduceSpec, x: &CpuStorage) -> Result<CpuStorage> {
    let len = spec.outer * spec.axis_len * spec.inner;
    let k = RowKernels::for_isa(isa);
    if spec.inner == 1 {
        return with_src(x, spec.offset, len, |src| reduce_rows(k, spec, src));
    }
    // Column sums and extremes read 16-bit rows in place (widened a few rows at a time);
    // the other outer-axis reductions read an f32 copy.
    if matches!(
        spec.kind,
        ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Max | ReduceKind::Min
    ) {
        return with_src(x, spec.offset, len, |src| reduce_cols(k, spec, src));
    }
    let xs = x.f32_range(spec.offset, len)?;
    let x = &*xs;
    let values = match spec.kind {
        ReduceKind::Sum => sum_fold(x, spec, None)
            .into_iter()
            .map(|s| s as f32)
            .collect(),
        ReduceKind::Mean => {
            let n = spec.axis_len as f64;
            sum_fold(x, spec, None)
                .into_iter()
                .map(|s| (s / n) as f32)
                .collect()
        }
        ReduceKind::Max => max_fold(x, spec, 1.0),
        ReduceKind::Min => max_fold(x, spec, -1.0),
        ReduceKind::ArgMax => return Ok(CpuStorage::U32(arg_fold(x, spec, |a, b| a > b))),
        ReduceKind::ArgMin => return Ok(CpuStorage::U32(arg_fold(x, spec, |a, b| a < b))),
        ReduceKind::LogSumExp => {
            let m = max_fold(x, spec, 1.0);
            let s = sum_fold(x, spec, Some(&m));
            logsumexp(&m, s)
        }
    };
    CpuStorage::from_f32(spec.dtype, values)
}

/// Softmax, log-softmax or RMS norm of every row along the axis. Rows of the last axis
/// are contiguous and go straight to the vectorised kernel; rows along another axis are
/// gathered into a scratch row first. Each `outer` block is one parallel task.
pub(crate) fn normalize(
    isa: Isa,
    spec: &NormSpec,
    x: &CpuStorage,
    weight: Option<&CpuStorage>,
) -> Result<CpuStorage> {
    let k = RowKernels::for_isa(isa);
    let (outer, axis, inner) = (spec.outer, spec.axis_len, spec.inner);
    let w = match (weight, &spec.weight) {
        (Some(s), Some(view)) => {
            let mut w = try_vec(axis, 0.0f32)?;
            s.gather_f32(view.offset, view.stride, 0, 1, &mut w);
            Some(w)
        }
        _ => None,
    };
    let len = outer * axis * inner;
    // `next`: the row to come, which softmax prefetches while it computes this one;
    // `stream`: write the output with non-temporal stores (see the f32 path below).
    let row_next = |x: &[f32], o: &mut [f32], next: &[f32], stream: bool| {
        // SAFETY: `k` was built for an ISA detected on this CPU; every call with `stream`
        // is followed by a store fence on the same thread, at the end of its task.
        unsafe {
            match spec.kind {
                NormKind::Softmax => (k.softmax)(x, o, false, next, stream),
                NormKind::LogSoftmax => (k.softmax)(x, o, true, next, stream),
                NormKind::RmsNorm { eps } => (k.rms_norm)(x, o, w.as_deref(), eps),
            }
        }
    };
    let row = |x: &[f32], o: &mut [f32]| row_next(x, o, &[], false);
    if inner == 1 && len > 0 {
        // 16-bit rows are widened and narrowed one row at a time in L1, instead of three
        // whole-tensor conversion passes through memory.
        match x {
            CpuStorage::F16(v) if spec.dtype == xkern_core::DType::F16 => {
                let src = &v[x.range(spec.offset, len)?];
                let narrow = crate::simd::convert::narrow_f16;
                return Ok(CpuStorage::F16(normalize_16(src, axis, row_next, narrow)?));
            }
            CpuStorage::BF16(v) if spec.dtype == xkern_core::DType::BF16 => {
                let src = &v[x.range(spec.offset, len)?];
                // SAFETY: `k` was built for an ISA detected on this CPU.
                let narrow = |s: &[f32], d: &mut [half::bf16]| unsafe { (k.narrow_bf16)(s, d) };
                return Ok(CpuStorage::BF16(normalize_16(src, axis, row_next, narrow)?));
            }
            _ => {}
        }
    }
    let xs = x.f32_range(spec.offset, len)?;
    // Every element is written below (each row in full).
    let mut out = try_vec_overwrite(len, 0.0f32)?;
    if out.is_empty() {
        return CpuStorage::from_f32(spec.dtype, out);
    }
    let blk = axis * inner;
    // f32 outputs this large cannot stay in cache for their consumer: (log-)softmax
    // writes them with non-temporal stores, for rows short enough that the exponentials'
    // scratch row stays in L2 (longer rows would write and read it back through memory).
    let stream = inner == 1 && len >= stream_min() && axis <= STREAM_ROW_MAX;
    // Tasks of whole blocks, about ROW_CHUNK elements each, on the calling thread and the
    // workers (see `fold_rows`).
    let per_task = (ROW_CHUNK / blk.max(1)).max(1) * blk;
    let done = crate::tasks::share_slices(&mut out, per_task, |i0, piece| {
        for (j, o_blk) in piece.chunks_mut(blk).enumerate() {
            let r = i0 / blk + j;
            let x_blk = &xs[r * blk..(r + 1) * blk];
            if inner == 1 {
                let next = xs.get((r + 1) * blk..(r + 2) * blk).unwrap_or(&[]);
                row_next(x_blk, o_blk, next, stream);
                continue;
            }
            let (mut xr, mut or) = (vec![0.0f32; axis], vec![0.0f32; axis]);
            for i in 0..inner {
                for (a, r) in xr.iter_mut().enumerate() {
                    *r = x_blk[a * inner + i];
                }
                row(&xr, &mut or);
                for (a, &r) in or.iter().enumerate() {
                    o_blk[a * inner + i] = r;
                }
            }
        }
        if stream {
            // The streamed stores reach memory before the task reports its end.
            crate::simd::store_fence();
        }
        true
    });
    if !done {
        // The output is allocated without a fill: a piece left unwritten must not escape.
        return Err(crate::internal("a normalisation left rows unwritten"));
    }
    CpuStorage::from_f32(spec.dtype, out)
}

/// Rows of `axis` 16-bit elements through `row(x, out, next, stream)` (f32 in, f32 out),
/// each widened (`Scalar::widen_into`) into and narrowed from per-thread scratch rows. The next 16-bit row is
/// handed to the kernel as the row to prefetch (its bytes seen as f32: only their
/// addresses are used), so memory works while this row's exponentials are computed.
fn normalize_16<T: Scalar + bytemuck::Pod + Default + crate::pool::Pooled>(
    src: &[T],
    axis: usize,
    row: impl Fn(&[f32], &mut [f32], &[f32], bool) + Sync,
    narrow: impl Fn(&[f32], &mut [T]) + Sync,
) -> Result<Vec<T>> {
    // Every element is written below (each row in full).
    let mut out = try_vec_overwrite(src.len(), T::default())?;
    out.par_chunks_mut(axis).enumerate().for_each_init(
        || (vec![0.0f32; axis], vec![0.0f32; axis]),
        |(xr, or), (r, o)| {
            let x = &src[r * axis..(r + 1) * axis];
            let next = src.get((r + 1) * axis..(r + 2) * axis).unwrap_or(&[]);
            T::widen_into(x, xr);
            row(xr, or, bytemuck::pod_align_to::<T, f32>(next).1, false);
            narrow(or, o);
        },
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("12Q"), None);
        assert_eq!(parse_cache_size("17179869184G"), None, "overflows");
    }
}
