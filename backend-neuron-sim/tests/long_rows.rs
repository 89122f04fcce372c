//! Reductions of few long rows, which the reduce kernel splits across all partitions and
//! combines across partitions on GpSimd: accuracy against f64, the first-index and NaN
//! rules of argmax/argmin across partition boundaries and the tail, and agreement with
//! the core reference for every other kind.

mod common;

use common::data;
use xkern_core::reference::{self, HostTensor};
use xkern_core::{DType, Error, ReduceKind, Tensor};
use xkern_neuron_sim::NeuronBackend;

/// Positions per partition of a row of `n` on 128 partitions.
const P: usize = 128;
/// A long row: 1024 positions per partition plus a tail of 37 (folded into partition 0).
const N: usize = P * 1024 + 37;

/// Asserts that the kernel ran the cross-partition step (the split path was taken).
fn assert_split(dev: &NeuronBackend) {
    let p = dev.last_profile().expect("a profile");
    let n = p
        .instruction_counts
        .get("partition_reduce")
        .copied()
        .unwrap_or(0);
    assert!(
        n > 0,
        "no cross-partition reduce: {:?}",
        p.instruction_counts
    );
    assert_eq!(p.races, 0);
}

/// Runs `kind` over `axis` (None: all) on the device and compares with the reference:
/// exact for indices, else within `rel` relative (NaN and ±∞ must match).
fn check(
    dev: &NeuronBackend,
    shape: &[usize],
    x: &[f32],
    kind: ReduceKind,
    axis: Option<usize>,
    rel: f64,
) -> Result<(), Error> {
    let t = Tensor::from_slice(dev, shape, x)?;
    let got = match axis {
        Some(a) => t.reduce(kind, a as isize, false)?,
        None => t.reduce_all(kind)?,
    };
    assert_split(dev);
    let got = got.to_f64_vec()?;
    let host = HostTensor::new(shape, x.iter().map(|&v| v as f64).collect());
    let want = reference::reduce(&host, kind, axis, false).data;
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= rel * w.abs().max(1e-30)
        };
        assert!(
            ok,
            "{kind:?} {shape:?} axis {axis:?} output {i}: got {g}, want {w}"
        );
    }
    Ok(())
}

#[test]
fn sum_of_4m_f32_is_within_1e6_of_f64() -> Result<(), Error> {
    let n = 1 << 22;
    // Mixed sign in [-0.75, 1.25): the sum is about n/4, not near zero.
    let x: Vec<f32> = data(n, 7, DType::F32).iter().map(|v| v + 0.25).collect();
    let want: f64 = x.iter().map(|&v| v as f64).sum();
    let dev = NeuronBackend::trn2();
    let got = Tensor::from_slice(&dev, &[n], &x)?
        .reduce_all(ReduceKind::Sum)?
        .to_f64_vec()?;
    assert_split(&dev);
    let err = (got[0] - want).abs() / want.abs();
    assert!(
        err < 1e-6,
        "sum {} vs f64 {want}: relative error {err}",
        got[0]
    );
    Ok(())
}

#[test]
fn argmax_argmin_first_index_across_partitions_then_nan() -> Result<(), Error> {
    let dev = NeuronBackend::trn2();
    let run = N / P;
    let mut x = data(N, 3, DType::F32);
    // Ties of the extreme in partitions 90 and 3 (not at a run's start) and in the tail:
    // the first, in partition 3, wins.
    for p in [90, 3] {
        x[p * run + 17] = 5.0;
        x[p * run + 600] = -5.0;
    }
    x[P * run + 5] = 5.0;
    x[P * run + 6] = -5.0;
    for kind in [ReduceKind::ArgMax, ReduceKind::ArgMin] {
        check(&dev, &[N], &x, kind, None, 0.0)?;
        let t = Tensor::from_slice(&dev, &[N], &x)?.reduce_all(kind)?;
        let want = if kind == ReduceKind::ArgMax { 17 } else { 600 };
        assert_eq!(t.to_f64_vec()?, vec![(3 * run + want) as f64]);
    }
    // The tail alone holds the extreme: its index is past every run.
    let mut y = data(N, 4, DType::F32);
    y[P * run + 30] = 9.0;
    check(&dev, &[N], &y, ReduceKind::ArgMax, None, 0.0)?;
    // A NaN in a late partition (and a later one in the tail) beats every value.
    x[120 * run + 999] = f32::NAN;
    x[P * run + 1] = f32::NAN;
    for kind in [ReduceKind::ArgMax, ReduceKind::ArgMin] {
        check(&dev, &[N], &x, kind, None, 0.0)?;
        let t = Tensor::from_slice(&dev, &[N], &x)?.reduce_all(kind)?;
        assert_eq!(t.to_f64_vec()?, vec![(120 * run + 999) as f64]);
    }
    // All equal: index 0.
    let z = vec![1.5f32; N];
    check(&dev, &[N], &z, ReduceKind::ArgMin, None, 0.0)?;
    Ok(())
}

#[test]
fn other_kinds_over_long_rows_match_the_reference() -> Result<(), Error> {
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::LogSumExp,
        ReduceKind::ArgMax,
        ReduceKind::ArgMin,
    ];
    let dev = NeuronBackend::trn2();
    // Two long rows (axis last), and two strided rows (axis first, inner = 2).
    let x: Vec<f32> = data(2 * N, 5, DType::F32)
        .iter()
        .map(|v| 3.0 * v + 0.5)
        .collect();
    for kind in kinds {
        let tol = if matches!(kind, ReduceKind::ArgMax | ReduceKind::ArgMin) {
            0.0
        } else {
            1e-6
        };
        check(&dev, &[2, N], &x, kind, Some(1), tol)?;
        check(&dev, &[N, 2], &x, kind, Some(0), tol)?;
    }
    Ok(())
}

#[test]
fn special_values_over_a_long_row() -> Result<(), Error> {
    let dev = NeuronBackend::trn2();
    let base = data(N, 6, DType::F32);
    let with = |i: usize, v: f32| {
        let mut x = base.clone();
        x[i] = v;
        x
    };
    let late = 127 * (N / P) + 3;
    for kind in [ReduceKind::Max, ReduceKind::Min, ReduceKind::LogSumExp] {
        // +∞ and −∞ in a late partition, and a NaN in the tail.
        check(&dev, &[N], &with(late, f32::INFINITY), kind, None, 1e-6)?;
        check(&dev, &[N], &with(late, f32::NEG_INFINITY), kind, None, 1e-6)?;
        check(&dev, &[N], &with(N - 1, f32::NAN), kind, None, 1e-6)?;
    }
    // A row of −∞: logsumexp is −∞, not NaN.
    let ninf = vec![f32::NEG_INFINITY; N];
    check(&dev, &[N], &ninf, ReduceKind::LogSumExp, None, 0.0)?;
    Ok(())
}

#[test]
fn trn1_partition_rules_hold_for_the_split() -> Result<(), Error> {
    let dev = NeuronBackend::trn1();
    // Offset so that the sum is not near zero.
    let mut x: Vec<f32> = data(N, 8, DType::F32).iter().map(|v| v + 0.5).collect();
    x[77 * (N / P) + 2] = 4.0;
    for kind in [ReduceKind::Sum, ReduceKind::LogSumExp, ReduceKind::ArgMax] {
        let tol = if kind == ReduceKind::ArgMax {
            0.0
        } else {
            1e-6
        };
        check(&dev, &[N], &x, kind, None, tol)?;
    }
    Ok(())
}
