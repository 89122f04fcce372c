//! Reference attention: the textbook two-pass softmax per query row, in f64.

// The f64 reference runs only on shapes that core's validation accepted (documented:
// it panics otherwise); indices stay inside those shapes by construction.
#![allow(clippy::indexing_slicing)]

use super::{HostTensor, nan_max};

/// `softmax(q·kᵀ·scale [+ bottom-right causal mask]) · v`, GQA by head grouping; a query
/// that sees no key gets zeros. `q [B,Hq,Sq,D]`, `k [B,Hkv,Skv,D]`, `v [B,Hkv,Skv,Dv]`.
pub fn attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    causal: bool,
    scale: f64,
) -> HostTensor {
    let (b, hq, sq, dv) = (q.shape[0], q.shape[1], q.shape[2], v.shape[3]);
    let mut out = Vec::with_capacity(b * hq * sq * dv);
    for bi in 0..b {
        for h in 0..hq {
            for i in 0..sq {
                out.extend(attention_row(q, k, v, causal, scale, bi, h, i));
            }
        }
    }
    HostTensor::new(&[b, hq, sq, dv], out)
}

/// One output row `(b, h, i)` of [`attention`] (for spot checks of large problems).
#[allow(clippy::too_many_arguments)]
pub fn attention_row(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    causal: bool,
    scale: f64,
    b: usize,
    h: usize,
    i: usize,
) -> Vec<f64> {
    let (hq, sq, d) = (q.shape[1], q.shape[2], q.shape[3]);
    let (hkv, skv, dv) = (k.shape[1], k.shape[2], v.shape[3]);
    let kh = h / (hq / hkv);
    let visible = if causal {
        (i + 1 + skv).saturating_sub(sq).min(skv)
    } else {
        skv
    };
    let mut o = vec![0.0; dv];
    if visible == 0 {
        return o;
    }
    let qrow = &q.data[((b * hq + h) * sq + i) * d..][..d];
    let scores: Vec<f64> = (0..visible)
        .map(|j| {
            let krow = &k.data[((b * hkv + kh) * skv + j) * d..][..d];
            scale * qrow.iter().zip(krow).map(|(x, y)| x * y).sum::<f64>()
        })
        .collect();
    let m = scores.iter().fold(f64::NEG_INFINITY, |m, &s| nan_max(m, s));
    let mut l = 0.0;
    for (j, &s) in scores.iter().enumerate() {
        let p = (s - m).exp();
        l += p;
        let vrow = &v.data[((b * hkv + kh) * skv + j) * dv..][..dv];
        for (acc, x) in o.iter_mut().zip(vrow) {
            *acc += p * x;
        }
    }
    o.iter_mut().for_each(|x| *x /= l);
    o
}
