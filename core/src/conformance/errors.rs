//! Bad input: every error the contract lists, with its variant, on every backend.

use super::{Cases, Ctx, Fail, Outcome, expect_err};
use crate::{Activation, AttentionOptions, Backend, DType, Error, Tensor, attention};
use half::{bf16, f16};

fn randn<B: Backend>(cx: &Ctx<B>, shape: &[usize]) -> Result<Tensor<B>, Fail> {
    Ok(Tensor::randn(&cx.dev, shape, DType::F32, 3)?)
}

fn shape_err(e: &Error) -> bool {
    matches!(e, Error::ShapeMismatch { .. })
}

/// Adds a case expecting `f` to fail with an error matching `pred`.
fn add<B: Backend, T: std::fmt::Debug>(
    c: &mut Cases<B>,
    name: &str,
    what: &'static str,
    pred: fn(&Error) -> bool,
    f: impl Fn(&Ctx<B>) -> Result<Result<T, Error>, Fail> + Send + Sync + 'static,
) {
    c.add(format!("errors/{name}"), move |cx| -> Outcome {
        expect_err(f(cx)?, what, pred)
    });
}

pub(crate) fn cases<B: Backend>(c: &mut Cases<B>) {
    c.add("errors/matmul-inner-mismatch-names-both-shapes", |cx| {
        let r = randn(cx, &[3, 4])?.matmul(&randn(cx, &[5, 6])?);
        match r {
            Err(e @ Error::ShapeMismatch { .. }) => {
                let msg = e.to_string();
                if msg.contains("[3, 4]") && msg.contains("[5, 6]") {
                    Ok(())
                } else {
                    Err(Fail(format!("message does not name both shapes: {msg}")))
                }
            }
            other => Err(Fail(format!("expected ShapeMismatch, got {other:?}"))),
        }
    });
    add(
        c,
        "matmul-batch-not-broadcastable",
        "ShapeMismatch",
        shape_err,
        |cx| Ok(randn(cx, &[2, 3, 4])?.matmul(&randn(cx, &[3, 4, 5])?)),
    );
    add(c, "matmul-rank-1", "ShapeMismatch", shape_err, |cx| {
        Ok(randn(cx, &[4])?.matmul(&randn(cx, &[4, 5])?))
    });
    add(c, "matmul-bias-shape", "ShapeMismatch", shape_err, |cx| {
        Ok(randn(cx, &[3, 4])?.matmul_fused(
            &randn(cx, &[4, 5])?,
            Some(&randn(cx, &[4])?),
            Some(Activation::Relu),
        ))
    });
    add(
        c,
        "matmul-dtype-mismatch",
        "DTypeMismatch",
        |e| matches!(e, Error::DTypeMismatch { .. }),
        |cx| {
            Ok(randn(cx, &[3, 4])?.matmul(&Tensor::from_slice(&cx.dev, &[4, 1], &[bf16::ONE; 4])?))
        },
    );
    add(
        c,
        "matmul-bias-dtype-mismatch",
        "DTypeMismatch",
        |e| matches!(e, Error::DTypeMismatch { .. }),
        |cx| {
            let bias = Tensor::from_slice(&cx.dev, &[1], &[bf16::ONE])?;
            Ok(randn(cx, &[3, 4])?.matmul_fused(&randn(cx, &[4, 1])?, Some(&bias), None))
        },
    );
    add(
        c,
        "matmul-u32-unsupported",
        "UnsupportedDType",
        |e| {
            matches!(
                e,
                Error::UnsupportedDType {
                    dtype: DType::U32,
                    ..
                }
            )
        },
        |cx| {
            let a = Tensor::from_slice(&cx.dev, &[2, 2], &[1u32, 2, 3, 4])?;
            Ok(a.matmul(&a))
        },
    );
    add(
        c,
        "reduce-axis-out-of-range",
        "AxisOutOfRange",
        |e| {
            matches!(
                e,
                Error::AxisOutOfRange {
                    axis: 3,
                    rank: 3,
                    ..
                }
            )
        },
        |cx| Ok(randn(cx, &[2, 3, 4])?.sum(3, false)),
    );
    add(
        c,
        "reduce-negative-axis-out-of-range",
        "AxisOutOfRange",
        |e| matches!(e, Error::AxisOutOfRange { axis: -4, .. }),
        |cx| Ok(randn(cx, &[2, 3, 4])?.argmax(-4, true)),
    );
    add(
        c,
        "softmax-axis-of-rank-0",
        "AxisOutOfRange",
        |e| matches!(e, Error::AxisOutOfRange { .. }),
        |cx| Ok(Tensor::from_slice(&cx.dev, &[], &[1.0f32])?.softmax(0)),
    );
    add(
        c,
        "reduce-u32-unsupported",
        "UnsupportedDType",
        |e| matches!(e, Error::UnsupportedDType { .. }),
        |cx| Ok(Tensor::from_slice(&cx.dev, &[2], &[1u32, 2])?.max(0, false)),
    );
    add(
        c,
        "max-empty-axis",
        "EmptyReduction",
        |e| matches!(e, Error::EmptyReduction { .. }),
        |cx| Ok(Tensor::zeros(&cx.dev, &[4, 0], DType::F32)?.max(-1, false)),
    );
    add(
        c,
        "argmax-empty-tensor",
        "EmptyReduction",
        |e| matches!(e, Error::EmptyReduction { .. }),
        |cx| Ok(Tensor::zeros(&cx.dev, &[0], DType::BF16)?.reduce_all(crate::ReduceKind::ArgMax)),
    );
    add(
        c,
        "zeros-size-overflow",
        "SizeOverflow",
        |e| matches!(e, Error::SizeOverflow { .. }),
        |cx| Ok(Tensor::zeros(&cx.dev, &[usize::MAX / 2, 3], DType::F32)),
    );
    add(
        c,
        "randn-size-overflow",
        "SizeOverflow",
        |e| matches!(e, Error::SizeOverflow { .. }),
        |cx| {
            Ok(Tensor::randn(
                &cx.dev,
                &[1 << 31, 1 << 31, 1 << 4],
                DType::F32,
                0,
            ))
        },
    );
    add(
        c,
        "matmul-output-size-overflow",
        "SizeOverflow",
        |e| matches!(e, Error::SizeOverflow { .. }),
        |cx| {
            // Two empty operands whose product shape [M, N] overflows.
            let l = Tensor::zeros(&cx.dev, &[usize::MAX / 4, 0], DType::F32)?;
            let r = Tensor::zeros(&cx.dev, &[0, 8], DType::F32)?;
            Ok(l.matmul(&r))
        },
    );
    add(
        c,
        "from-slice-length-mismatch",
        "InvalidArgument",
        |e| matches!(e, Error::InvalidArgument { .. }),
        |cx| Ok(Tensor::from_slice(&cx.dev, &[2, 3], &[1.0f32; 5])),
    );
    add(
        c,
        "to-vec-wrong-type",
        "ElementType",
        |e| {
            matches!(
                e,
                Error::ElementType {
                    actual: DType::F32,
                    requested: DType::F16
                }
            )
        },
        |cx| Ok(randn(cx, &[2])?.to_vec::<f16>()),
    );
    add(
        c,
        "to-vec-u32-of-float",
        "ElementType",
        |e| matches!(e, Error::ElementType { .. }),
        |cx| Ok(randn(cx, &[2])?.to_vec::<u32>()),
    );
    add(
        c,
        "randn-u32",
        "UnsupportedDType",
        |e| matches!(e, Error::UnsupportedDType { .. }),
        |cx| Ok(Tensor::randn(&cx.dev, &[2], DType::U32, 0)),
    );
    add(
        c,
        "to-dtype-float-to-u32",
        "UnsupportedDType",
        |e| matches!(e, Error::UnsupportedDType { .. }),
        |cx| Ok(randn(cx, &[2])?.to_dtype(DType::U32)),
    );
    add(
        c,
        "permute-not-a-permutation",
        "InvalidArgument",
        |e| matches!(e, Error::InvalidArgument { .. }),
        |cx| Ok(randn(cx, &[2, 3])?.permute(&[1, 1])),
    );
    add(
        c,
        "transpose-rank-1",
        "InvalidArgument",
        |e| matches!(e, Error::InvalidArgument { .. }),
        |cx| Ok(randn(cx, &[3])?.t()),
    );
    add(
        c,
        "reshape-count-mismatch",
        "ShapeMismatch",
        shape_err,
        |cx| Ok(randn(cx, &[2, 3])?.reshape(&[7])),
    );
    add(
        c,
        "attention-heads-do-not-divide",
        "InvalidHeads",
        |e| {
            matches!(
                e,
                Error::InvalidHeads {
                    q_heads: 6,
                    kv_heads: 4
                }
            )
        },
        |cx| {
            let q = randn(cx, &[1, 6, 3, 8])?;
            let kv = randn(cx, &[1, 4, 5, 8])?;
            Ok(attention(&q, &kv, &kv, &AttentionOptions::default()))
        },
    );
    add(
        c,
        "attention-zero-kv-heads",
        "InvalidHeads",
        |e| matches!(e, Error::InvalidHeads { .. }),
        |cx| {
            let q = randn(cx, &[1, 2, 3, 8])?;
            let kv = randn(cx, &[1, 0, 5, 8])?;
            Ok(attention(&q, &kv, &kv, &AttentionOptions::default()))
        },
    );
    add(
        c,
        "attention-head-dim-mismatch",
        "ShapeMismatch",
        shape_err,
        |cx| {
            let q = randn(cx, &[1, 2, 3, 8])?;
            let kv = randn(cx, &[1, 2, 5, 4])?;
            Ok(attention(&q, &kv, &kv, &AttentionOptions::default()))
        },
    );
    add(c, "attention-rank-3", "ShapeMismatch", shape_err, |cx| {
        let q = randn(cx, &[2, 3, 8])?;
        Ok(attention(&q, &q, &q, &AttentionOptions::default()))
    });
    add(
        c,
        "attention-batch-mismatch",
        "ShapeMismatch",
        shape_err,
        |cx| {
            let q = randn(cx, &[2, 2, 3, 8])?;
            let kv = randn(cx, &[1, 2, 5, 8])?;
            Ok(attention(&q, &kv, &kv, &AttentionOptions::default()))
        },
    );
    add(
        c,
        "attention-kv-length-mismatch",
        "ShapeMismatch",
        shape_err,
        |cx| {
            let q = randn(cx, &[1, 2, 3, 8])?;
            Ok(attention(
                &q,
                &randn(cx, &[1, 2, 5, 8])?,
                &randn(cx, &[1, 2, 6, 8])?,
                &AttentionOptions::default(),
            ))
        },
    );
    add(
        c,
        "attention-nan-scale",
        "InvalidArgument",
        |e| matches!(e, Error::InvalidArgument { .. }),
        |cx| {
            let q = randn(cx, &[1, 1, 3, 8])?;
            Ok(attention(
                &q,
                &q,
                &q,
                &AttentionOptions {
                    causal: false,
                    scale: Some(f32::NAN),
                },
            ))
        },
    );
    add(
        c,
        "attention-dtype-mismatch",
        "DTypeMismatch",
        |e| matches!(e, Error::DTypeMismatch { .. }),
        |cx| {
            let q = randn(cx, &[1, 1, 3, 8])?;
            let k = q.to_dtype(DType::BF16)?;
            Ok(attention(&q, &k, &q, &AttentionOptions::default()))
        },
    );
    add(
        c,
        "rms-norm-weight-shape",
        "ShapeMismatch",
        shape_err,
        |cx| Ok(randn(cx, &[3, 8])?.rms_norm(Some(&randn(cx, &[3])?), 1e-6)),
    );
    add(
        c,
        "rms-norm-negative-eps",
        "InvalidArgument",
        |e| matches!(e, Error::InvalidArgument { .. }),
        |cx| Ok(randn(cx, &[3, 8])?.rms_norm(None, -1.0)),
    );
}

/// The device-mismatch case, added when the backend offers a second device.
pub(crate) fn device_cases<B: Backend>(c: &mut Cases<B>) {
    c.add("errors/device-mismatch", |cx| {
        let other = cx
            .other
            .as_ref()
            .ok_or_else(|| Fail("the context has no second device".into()))?;
        let a = randn(cx, &[2, 2])?;
        let b = Tensor::randn(other, &[2, 2], DType::F32, 1)?;
        expect_err(a.matmul(&b), "DeviceMismatch", |e| {
            matches!(e, Error::DeviceMismatch { .. })
        })?;
        expect_err(
            attention(
                &a.reshape(&[1, 1, 2, 2])?,
                &b.reshape(&[1, 1, 2, 2])?,
                &a.reshape(&[1, 1, 2, 2])?,
                &AttentionOptions::default(),
            ),
            "DeviceMismatch",
            |e| matches!(e, Error::DeviceMismatch { .. }),
        )
    });
}
