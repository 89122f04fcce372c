//! Rows longer than one unit of work (65,536 elements; 1,024 for 16-bit elements, which
//! are widened a unit at a time) are folded in fixed chunks and merged: every reduction
//! across chunk boundaries against the f64 reference, in every float dtype, including ties
//! in different chunks (the first index wins), a NaN in a later chunk, and extremes on the
//! boundaries.
use xkern_core::reference::{self, HostTensor};
use xkern_core::{DType, ReduceKind, Tensor, Tolerance};
use xkern_cpu::CpuBackend;

#[test]
fn reductions_across_row_chunks() {
    let dev = CpuBackend::new();
    let (rows, axis) = (3, 200_003);
    let mut x: Vec<f32> = (0..rows * axis)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 9) as f32 * 1e-6 - 4.0)
        .collect();
    // Row 0: the same maximum in chunks 0 and 2 (first wins) and at the start of a 16-bit
    // chunk, and the minimum on a boundary.
    x[10] = 100.0;
    x[2 * 65_536 + 7] = 100.0;
    x[5 * 1024] = 100.0;
    x[65_536] = -100.0;
    // Row 1: a NaN in chunk 2 (max/min/argmax/argmin/logsumexp/sum see it).
    x[axis + 2 * 65_536 + 1] = f32::NAN;
    // Row 2: extremes on the last element and the last chunk's first element.
    x[3 * axis - 1] = 50.0;
    x[2 * axis + 3 * 65_536] = -50.0;
    let t32 = Tensor::from_slice(&dev, &[rows, axis], &x).unwrap();
    for dtype in DType::FLOATS {
        let t = t32.to_dtype(dtype).unwrap();
        let host = HostTensor::new(&[rows, axis], t.to_f64_vec().unwrap());
        for kind in ReduceKind::ALL {
            let got = t.reduce(kind, 1, false).unwrap().to_f64_vec().unwrap();
            let want = reference::reduce(&host, kind, Some(1), false).data;
            match kind {
                ReduceKind::ArgMax | ReduceKind::ArgMin | ReduceKind::Max | ReduceKind::Min => {
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            g == w || (g.is_nan() && w.is_nan()),
                            "{dtype} {kind:?}: {got:?} vs {want:?}"
                        );
                    }
                }
                _ => {
                    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                        if w.is_nan() {
                            assert!(g.is_nan(), "{dtype} {kind:?} row {r}: {g}");
                        } else {
                            Tolerance::for_dtype(dtype)
                                .check(&[*g], &[*w])
                                .unwrap_or_else(|e| panic!("{dtype} {kind:?} row {r}: {e}"));
                        }
                    }
                }
            }
        }
        let am = t.argmax(1, false).unwrap().to_vec::<u32>().unwrap();
        assert_eq!(am[0], 10, "{dtype}: the first of equal maxima");
        assert_eq!(am[1], (2 * 65_536 + 1) as u32, "{dtype}: the NaN");
        assert_eq!(am[2], (axis - 1) as u32, "{dtype}");
        let am = t.argmin(1, false).unwrap().to_vec::<u32>().unwrap();
        assert_eq!(am[0], 65_536, "{dtype}");
        assert_eq!(am[2], (3 * 65_536) as u32, "{dtype}");
    }
}

/// Softmax and log-softmax outputs of 8M elements and more (32 MiB of f32, and at least
/// the last-level cache: on a CPU whose cache is larger, this size takes the cached path
/// and the test checks that one) are written with non-temporal stores (f32 on x86 with
/// AVX2 or AVX-512): the same bits as the rows computed one by one through the cache,
/// with rows that start mid-line (4,100 floats). The 16-bit dtypes, which go through
/// scratch rows, give their per-row bits too.
#[test]
fn streamed_softmax_outputs_match_the_cached_rows() {
    let dev = CpuBackend::new();
    let (rows, axis) = (2_047, 4_100);
    assert!(rows * axis >= 8 << 20, "large enough to stream");
    let x: Vec<f32> = (0..rows * axis)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 9) as f32 * 1e-5 - 40.0)
        .collect();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let tensor = |data: &[f32], shape: &[usize]| {
            Tensor::from_slice(&dev, shape, data)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let big = tensor(&x, &[rows, axis]);
        for log in [false, true] {
            let run = |t: &Tensor<CpuBackend>| {
                if log { t.log_softmax(1) } else { t.softmax(1) }
                    .unwrap()
                    .to_f64_vec()
                    .unwrap()
            };
            let all = run(&big);
            for r in [0, 1, 777, rows - 1] {
                let want = run(&tensor(&x[r * axis..(r + 1) * axis], &[1, axis]));
                let got = &all[r * axis..(r + 1) * axis];
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{dtype:?} log {log} row {r}"
                );
            }
        }
    }
}

/// Column sums, means, maxima and minima of 16-bit tensors read the rows in place,
/// widening four at a time: the same bits as the f32 path on the widened tensor, over
/// two axis chunks (2,048 rows each, the second ending in a ragged group of rows), two
/// column blocks (4,096 columns, the second ragged) and several outer blocks.
#[test]
fn sixteen_bit_column_reductions_match_the_widened_f32_ones() {
    let dev = CpuBackend::new();
    for dtype in [DType::F16, DType::BF16] {
        for (shape, axis) in [(vec![2051, 4099], 0), (vec![3, 5, 4101], 1)] {
            let t = Tensor::randn(&dev, &shape, dtype, 77).unwrap();
            let wide = t.to_dtype(DType::F32).unwrap();
            for kind in [
                ReduceKind::Sum,
                ReduceKind::Mean,
                ReduceKind::Max,
                ReduceKind::Min,
            ] {
                let got = t.reduce(kind, axis, false).unwrap().to_f64_vec().unwrap();
                let want = wide
                    .reduce(kind, axis, false)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
                    .to_f64_vec()
                    .unwrap();
                assert_eq!(got.len(), want.len());
                let differ = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| g.to_bits() != w.to_bits())
                    .count();
                assert_eq!(differ, 0, "{dtype} {kind:?} {shape:?} axis {axis}");
            }
        }
    }
}
