//! CPU reductions and row normalisations over the canonical `[outer, axis, inner]` form.
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

use crate::attention::nan_max;
use crate::storage::{CpuStorage, try_vec};
use rayon::prelude::*;
use xkern_core::{DType, NormKind, NormSpec, ReduceKind, ReduceSpec, Result};

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

pub(crate) fn reduce(spec: &ReduceSpec, x: &CpuStorage) -> Result<CpuStorage> {
    let xs = x.f32_range(spec.offset, spec.outer * spec.axis_len * spec.inner)?;
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
    };
    CpuStorage::from_f32(spec.dtype, values)
}

/// Normalises one contiguous row `x` into `out`.
fn normalize_row(kind: NormKind, x: &[f32], out: &mut [f32], weight: Option<&[f32]>) {
    match kind {
        NormKind::Softmax | NormKind::LogSoftmax => {
            let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| nan_max(m, v));
            let mut sum = 0.0f32;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - m).exp();
                sum += *o;
            }
            if kind == NormKind::Softmax {
                for o in out.iter_mut() {
                    *o /= sum;
                }
            } else {
                let lse = sum.ln();
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v - m - lse;
                }
            }
        }
        NormKind::RmsNorm { eps } => {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
            let r = 1.0 / (ms + eps).sqrt();
            for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
                *o = v * r * weight.map_or(1.0, |w| w[j]);
            }
        }
    }
}

pub(crate) fn normalize(
    spec: &NormSpec,
    x: &CpuStorage,
    weight: Option<&CpuStorage>,
) -> Result<CpuStorage> {
    let (outer, axis, inner) = (spec.outer, spec.axis_len, spec.inner);
    let xs = x.f32_range(spec.offset, outer * axis * inner)?;
    let mut out = try_vec(outer * axis * inner, 0.0f32)?;
    let w = match (weight, &spec.weight) {
        (Some(s), Some(view)) => {
            let mut w = try_vec(axis, 0.0f32)?;
            s.gather_f32(view.offset, view.stride, 0, 1, &mut w);
            Some(w)
        }
        _ => None,
    };
    if out.is_empty() {
        return CpuStorage::from_f32(spec.dtype, out);
    }
    out.par_chunks_mut(axis * inner)
        .zip(xs.par_chunks(axis * inner))
        .for_each(|(o_blk, x_blk)| {
            if inner == 1 {
                normalize_row(spec.kind, x_blk, o_blk, w.as_deref());
                return;
            }
            let (mut row, mut res) = (vec![0.0f32; axis], vec![0.0f32; axis]);
            for i in 0..inner {
                for (a, r) in row.iter_mut().enumerate() {
                    *r = x_blk[a * inner + i];
                }
                normalize_row(spec.kind, &row, &mut res, w.as_deref());
                for (a, &r) in res.iter().enumerate() {
                    o_blk[a * inner + i] = r;
                }
            }
        });
    debug_assert!(spec.dtype != DType::U32);
    CpuStorage::from_f32(spec.dtype, out)
}
