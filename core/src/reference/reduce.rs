//! Reference reductions and normalisations over the canonical `[outer, axis, inner]` form.

// The f64 reference runs only on shapes that core's validation accepted (documented:
// it panics otherwise); indices stay inside those shapes by construction.
#![allow(clippy::indexing_slicing)]

use super::{HostTensor, nan_max};
use crate::ReduceKind;

/// Calls `f(row)` for every `(outer, inner)` position with the elements along the axis,
/// collecting the results in `[outer, inner]` order.
fn rows<T>(x: &HostTensor, axis: Option<usize>, mut f: impl FnMut(&[f64]) -> T) -> Vec<T> {
    let (outer, len, inner) = match axis {
        Some(a) => (
            x.shape[..a].iter().product(),
            x.shape[a],
            x.shape[a + 1..].iter().product(),
        ),
        None => (1, x.data.len(), 1),
    };
    let mut row = Vec::with_capacity(len);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            row.clear();
            row.extend((0..len).map(|a| x.data[(o * len + a) * inner + i]));
            out.push(f(&row));
        }
    }
    out
}

/// Index of the first element that `better` prefers to all earlier ones, NaN first.
fn arg(row: &[f64], better: impl Fn(f64, f64) -> bool) -> f64 {
    if let Some(i) = row.iter().position(|x| x.is_nan()) {
        return i as f64;
    }
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if better(x, row[best]) {
            best = i;
        }
    }
    best as f64
}

/// `log Σ exp(x)`; −∞ for an empty row, the max itself when it is ±∞, NaN with any NaN.
fn logsumexp(row: &[f64]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &x| nan_max(m, x));
    if m.is_nan() || m.is_infinite() {
        return m;
    }
    m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Reduces `axis` (or everything, for `None`) with `kind`. Indices come back as f64.
/// `keepdim` keeps the axis with length 1 (ignored for `None`, whose result has shape []).
pub fn reduce(x: &HostTensor, kind: ReduceKind, axis: Option<usize>, keepdim: bool) -> HostTensor {
    let data = rows(x, axis, |row| match kind {
        ReduceKind::Sum => row.iter().sum(),
        ReduceKind::Mean => row.iter().sum::<f64>() / row.len() as f64,
        ReduceKind::Max => row.iter().fold(f64::NEG_INFINITY, |m, &v| nan_max(m, v)),
        ReduceKind::Min => -row.iter().fold(f64::NEG_INFINITY, |m, &v| nan_max(m, -v)),
        ReduceKind::ArgMax => arg(row, |a, b| a > b),
        ReduceKind::ArgMin => arg(row, |a, b| a < b),
        ReduceKind::LogSumExp => logsumexp(row),
    });
    let shape = match axis {
        None => vec![],
        Some(a) => {
            let mut s = x.shape.clone();
            if keepdim {
                s[a] = 1;
            } else {
                s.remove(a);
            }
            s
        }
    };
    HostTensor::new(&shape, data)
}

/// Applies `f` to each row along `axis` and writes the rows back in place.
fn map_rows(x: &HostTensor, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> HostTensor {
    let (len, inner) = (x.shape[axis], x.shape[axis + 1..].iter().product::<usize>());
    let mut out = x.clone();
    let results = rows(x, Some(axis), f);
    for (r, row) in results.into_iter().enumerate() {
        let (o, i) = (r / inner.max(1), r % inner.max(1));
        for (a, v) in row.into_iter().enumerate() {
            out.data[(o * len + a) * inner + i] = v;
        }
    }
    out
}

/// Softmax along `axis`: `exp(x − max) / Σ exp(x − max)`.
pub fn softmax(x: &HostTensor, axis: usize) -> HostTensor {
    map_rows(x, axis, |row| {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| nan_max(m, v));
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    })
}

/// Log-softmax along `axis`: `x − max − log Σ exp(x − max)`.
pub fn log_softmax(x: &HostTensor, axis: usize) -> HostTensor {
    map_rows(x, axis, |row| {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| nan_max(m, v));
        let lse = row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        row.iter().map(|v| v - m - lse).collect()
    })
}

/// RMS norm over the last axis: `x / sqrt(mean(x²) + eps) · weight`.
pub fn rms_norm(x: &HostTensor, weight: Option<&[f64]>, eps: f64) -> HostTensor {
    let axis = x.shape.len() - 1;
    map_rows(x, axis, |row| {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
        let r = 1.0 / (ms + eps).sqrt();
        row.iter()
            .enumerate()
            .map(|(j, v)| v * r * weight.map_or(1.0, |w| w[j]))
            .collect()
    })
}
