//! Reduction and normalisation cases: every kind on the first, middle and last axis and
//! over all axes, odd row lengths, keepdim, permuted inputs, NaN/±∞ rows, ties, empty
//! axes.

// Test code: indexes host copies whose lengths the case has checked.
#![allow(clippy::indexing_slicing)]

use super::{
    Cases, Ctx, Outcome, SIZES, check, expect_err, input, input_from, seed_of, unsupported,
};
use crate::reference::{self, HostTensor};
use crate::{Backend, DType, Error, NormKind, ReduceKind, Tensor};

/// Runs `kind` over `axis` (None: all axes) of the (already viewed) input and checks it.
fn check_reduce<B: Backend>(
    x: &Tensor<B>,
    hx: &HostTensor,
    kind: ReduceKind,
    axis: Option<usize>,
    keepdim: bool,
    dtype: DType,
) -> Outcome {
    let got = match axis {
        Some(a) => x.reduce(kind, a as isize, keepdim)?,
        None => x.reduce_all(kind)?,
    };
    check(
        &got,
        &reference::reduce(hx, kind, axis, keepdim),
        kind.output_dtype(dtype),
    )
}

fn add_reduce<B: Backend>(
    c: &mut Cases<B>,
    kind: ReduceKind,
    dtype: DType,
    stored: Vec<usize>,
    perm: Option<Vec<usize>>,
    axis: Option<usize>,
    keepdim: bool,
) {
    let axis_name = axis.map_or("all".to_string(), |a| a.to_string());
    let view = perm
        .as_ref()
        .map_or(String::new(), |p| format!("/permute{p:?}"));
    let keep = if keepdim { "/keepdim" } else { "" };
    let name = format!(
        "reduce/{}/{dtype}/shape={stored:?}/axis={axis_name}{view}{keep}",
        kind.name()
    );
    let seed = seed_of(&name);
    c.add(name, move |cx| {
        if let Some(o) = unsupported(cx, dtype) {
            return o;
        }
        let (x, hx) = input(cx, &stored, perm.as_deref(), dtype, seed)?;
        check_reduce(&x, &hx, kind, axis, keepdim, dtype)
    });
}

/// Rows of explicit values (each row one reduction along the last axis).
fn add_rows<B: Backend>(
    c: &mut Cases<B>,
    kind: ReduceKind,
    dtype: DType,
    what: &str,
    rows: Vec<Vec<f32>>,
) {
    let name = format!("reduce/{}/{dtype}/{what}", kind.name());
    c.add(name, move |cx| {
        if let Some(o) = unsupported(cx, dtype) {
            return o;
        }
        let len = rows[0].len();
        let flat: Vec<f32> = rows.concat();
        let (x, hx) = input_from(cx, &[rows.len(), len], None, dtype, &flat)?;
        check_reduce(&x, &hx, kind, Some(1), false, dtype)
    });
}

fn add_norm<B: Backend>(
    c: &mut Cases<B>,
    kind: NormKind,
    dtype: DType,
    stored: Vec<usize>,
    perm: Option<Vec<usize>>,
    axis: usize,
    weight: bool,
) {
    let view = perm
        .as_ref()
        .map_or(String::new(), |p| format!("/permute{p:?}"));
    let w = if weight { "/weight" } else { "" };
    let name = format!(
        "{}/{dtype}/shape={stored:?}/axis={axis}{view}{w}",
        kind.name()
    );
    let seed = seed_of(&name);
    c.add(name, move |cx| {
        if let Some(o) = unsupported(cx, dtype) {
            return o;
        }
        let (x, hx) = input(cx, &stored, perm.as_deref(), dtype, seed)?;
        run_norm(cx, kind, &x, &hx, axis, weight, dtype, seed)
    });
}

#[allow(clippy::too_many_arguments)]
fn run_norm<B: Backend>(
    cx: &Ctx<B>,
    kind: NormKind,
    x: &Tensor<B>,
    hx: &HostTensor,
    axis: usize,
    weight: bool,
    dtype: DType,
    seed: u64,
) -> Outcome {
    let (got, want) = match kind {
        NormKind::Softmax => (x.softmax(axis as isize)?, reference::softmax(hx, axis)),
        NormKind::LogSoftmax => (
            x.log_softmax(axis as isize)?,
            reference::log_softmax(hx, axis),
        ),
        NormKind::RmsNorm { eps } => {
            let d = *hx.shape.last().unwrap_or(&0);
            let w = if weight {
                Some(input(cx, &[d], None, dtype, seed ^ 7)?)
            } else {
                None
            };
            let got = x.rms_norm(w.as_ref().map(|(t, _)| t), eps)?;
            (
                got,
                reference::rms_norm(
                    hx,
                    w.as_ref().map(|(_, h)| h.data.as_slice()),
                    f64::from(eps),
                ),
            )
        }
    };
    check(&got, &want, dtype)
}

pub(crate) fn cases<B: Backend>(c: &mut Cases<B>) {
    let shape = vec![7, 33, 129];
    for kind in ReduceKind::ALL {
        for dtype in DType::FLOATS {
            // First, middle and last axes, and all axes, of a [7, 33, 129] input.
            for axis in [Some(0), Some(1), Some(2), None] {
                add_reduce(c, kind, dtype, shape.clone(), None, axis, false);
            }
        }
        // Odd row lengths along the last axis and along the first (outer-axis streaming).
        for &s in &SIZES {
            add_reduce(c, kind, DType::F32, vec![5, s], None, Some(1), false);
            add_reduce(c, kind, DType::F32, vec![s, 129], None, Some(0), false);
        }
        add_reduce(c, kind, DType::F32, shape.clone(), None, Some(1), true);
        add_reduce(
            c,
            kind,
            DType::BF16,
            vec![3, 4, 1000],
            Some(vec![2, 0, 1]),
            Some(0),
            false,
        );
        add_reduce(
            c,
            kind,
            DType::F32,
            vec![3, 4, 1000],
            Some(vec![2, 0, 1]),
            Some(2),
            true,
        );
        add_reduce(c, kind, DType::F32, vec![200_000], None, None, false);
        // Special values: each row holds its own mix.
        for dtype in [DType::F32, DType::BF16] {
            let nan = f32::NAN;
            let (inf, ninf) = (f32::INFINITY, f32::NEG_INFINITY);
            add_rows(
                c,
                kind,
                dtype,
                "nan-inf-rows",
                vec![
                    vec![1.0, nan, 3.0, -2.0, nan, 0.5],
                    vec![1.0, inf, 3.0, -2.0, 0.0, 0.5],
                    vec![1.0, ninf, 3.0, -2.0, 0.0, 0.5],
                    vec![ninf, ninf, ninf, ninf, ninf, ninf],
                    vec![inf, 2.0, ninf, inf, 0.0, 0.5],
                    vec![-0.0, 0.0, -0.0, 0.0, -0.0, 0.0],
                ],
            );
        }
        // Ties: the first index wins.
        add_rows(
            c,
            kind,
            DType::F32,
            "ties",
            vec![
                vec![2.0, 5.0, 5.0, -1.0, -1.0, 5.0, -1.0],
                vec![3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
            ],
        );
        // Empty axes: sum 0, mean NaN, logsumexp −∞; max/min/argmax/argmin refuse.
        let name = format!("reduce/{}/f32/empty-axis", kind.name());
        c.add(name, move |cx| {
            let x = Tensor::zeros(&cx.dev, &[3, 0, 2], DType::F32)?;
            let hx = HostTensor::new(&[3, 0, 2], vec![]);
            if kind.needs_nonempty() {
                let empty = |e: &Error| matches!(e, Error::EmptyReduction { .. });
                expect_err(x.reduce(kind, 1, false), "EmptyReduction", empty)?;
                expect_err(x.reduce_all(kind), "EmptyReduction", empty)
            } else {
                check_reduce(&x, &hx, kind, Some(1), false, DType::F32)?;
                check_reduce(&x, &hx, kind, None, false, DType::F32)
            }
        });
    }

    let norms = [NormKind::Softmax, NormKind::LogSoftmax];
    for kind in norms {
        for dtype in DType::FLOATS {
            for axis in 0..3 {
                add_norm(c, kind, dtype, shape.clone(), None, axis, false);
            }
        }
        for &s in &SIZES {
            add_norm(c, kind, DType::F32, vec![5, s], None, 1, false);
        }
        add_norm(
            c,
            kind,
            DType::F16,
            vec![3, 4, 129],
            Some(vec![2, 0, 1]),
            2,
            false,
        );
        add_norm(c, kind, DType::F32, vec![4, 0], None, 1, false);
    }
    let rms = NormKind::RmsNorm { eps: 1e-6 };
    for dtype in DType::FLOATS {
        add_norm(c, rms, dtype, shape.clone(), None, 2, false);
        add_norm(c, rms, dtype, shape.clone(), None, 2, true);
        add_norm(c, rms, dtype, vec![33, 4, 7], Some(vec![1, 2, 0]), 2, true);
    }
    for &s in &SIZES {
        add_norm(c, rms, DType::F32, vec![5, s], None, 1, true);
    }
    add_norm(
        c,
        NormKind::RmsNorm { eps: 0.5 },
        DType::F32,
        vec![7, 33],
        None,
        1,
        true,
    );
    add_norm(c, rms, DType::F32, vec![4, 0], None, 1, true);
    // Special values through the normalisations.
    for kind in [NormKind::Softmax, NormKind::LogSoftmax, rms] {
        let name = format!("{}/f32/nan-inf-rows", kind.name());
        c.add(name, move |cx| {
            let (nan, inf, ninf) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY);
            let rows = [
                [1.0, nan, 3.0, -2.0, 0.5],
                [1.0, inf, 3.0, -2.0, 0.5],
                [1.0, ninf, 3.0, -2.0, 0.5],
                [ninf, ninf, ninf, ninf, ninf],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [1e18, -1e18, 2.0, 0.0, 1.0],
            ];
            let (x, hx) = input_from(cx, &[6, 5], None, DType::F32, &rows.concat())?;
            run_norm(cx, kind, &x, &hx, 1, false, DType::F32, 0)
        });
    }
}
