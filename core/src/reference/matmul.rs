//! Reference matmul with broadcast batches and the fused epilogue.

// The f64 reference runs only on shapes that core's validation accepted (documented:
// it panics otherwise); indices stay inside those shapes by construction.
#![allow(clippy::indexing_slicing, clippy::expect_used)]

use super::HostTensor;
use crate::Activation;
use crate::layout::{broadcast_shapes, broadcast_strides};

/// `act(a @ b + bias)`; `a [..., M, K]`, `b [..., K, N]`, `bias [N]`. Panics on shapes that
/// core's validation rejects (the reference is only called on valid input).
pub fn matmul(
    a: &HostTensor,
    b: &HostTensor,
    bias: Option<&[f64]>,
    act: Option<Activation>,
) -> HostTensor {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    assert_eq!(k, b.shape[rb - 2], "inner dimensions");
    let batch_shape = broadcast_shapes("reference matmul", &a.shape[..ra - 2], &b.shape[..rb - 2])
        .expect("broadcast");
    let sa = broadcast_strides(&a.shape[..ra - 2], &a.strides()[..ra - 2], &batch_shape);
    let sb = broadcast_strides(&b.shape[..rb - 2], &b.strides()[..rb - 2], &batch_shape);
    let batch: usize = batch_shape.iter().product();
    let mut out = Vec::with_capacity(batch * m * n);
    for bi in 0..batch {
        let (mut oa, mut ob, mut rem) = (0, 0, bi);
        for d in (0..batch_shape.len()).rev() {
            let idx = rem % batch_shape[d];
            rem /= batch_shape[d];
            oa += idx * sa[d];
            ob += idx * sb[d];
        }
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    acc += a.data[oa + i * k + p] * b.data[ob + p * n + j];
                }
                if let Some(bias) = bias {
                    acc += bias[j];
                }
                out.push(act.map_or(acc, |f| f.apply_f64(acc)));
            }
        }
    }
    let mut shape = batch_shape;
    shape.extend([m, n]);
    HostTensor::new(&shape, out)
}
