//! Reference attention: the textbook two-pass softmax per query row, in f64.

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
    let (b, hq, sq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (hkv, skv, dv) = (k.shape[1], k.shape[2], v.shape[3]);
    let group = hq / hkv;
    let mut out = vec![0.0; b * hq * sq * dv];
    let mut scores = vec![0.0; skv];
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            for i in 0..sq {
                let visible = if causal {
                    (i + 1 + skv).saturating_sub(sq).min(skv)
                } else {
                    skv
                };
                if visible == 0 {
                    continue;
                }
                let qrow = &q.data[((bi * hq + h) * sq + i) * d..][..d];
                let mut m = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate().take(visible) {
                    let krow = &k.data[((bi * hkv + kh) * skv + j) * d..][..d];
                    *s = scale * qrow.iter().zip(krow).map(|(x, y)| x * y).sum::<f64>();
                    m = nan_max(m, *s);
                }
                let mut l = 0.0;
                let o = &mut out[((bi * hq + h) * sq + i) * dv..][..dv];
                for (j, &s) in scores.iter().enumerate().take(visible) {
                    let p = (s - m).exp();
                    l += p;
                    let vrow = &v.data[((bi * hkv + kh) * skv + j) * dv..][..dv];
                    for (acc, x) in o.iter_mut().zip(vrow) {
                        *acc += p * x;
                    }
                }
                for acc in o.iter_mut() {
                    *acc /= l;
                }
            }
        }
    }
    HostTensor::new(&[b, hq, sq, dv], out)
}
