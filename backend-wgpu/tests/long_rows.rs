//! Reductions of long rows, which the wgpu backend splits across workgroups (partial
//! states, then a merge): accuracy of a 4M-element f32 sum, argmax/argmin ties and NaN
//! across workgroups, and every float reduction along long rows of `[2, N]` (axis 1) and
//! `[N, 2]` (axis 0) against the f64 reference.
//!
//! No adapter is a failure (CI installs lavapipe), never a skip.

use xkern_core::reference::{self, HostTensor};
use xkern_core::{DType, ReduceKind, Tensor, Tolerance};
use xkern_wgpu::WgpuBackend;

fn device() -> WgpuBackend {
    WgpuBackend::new().unwrap_or_else(|e| {
        panic!(
            "these tests need a wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1): {e}"
        )
    })
}

/// Deterministic uniform values in [-1, 1).
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn sum_of_4m_elements_is_accurate() {
    let dev = device();
    let n = 1 << 22;
    // Mixed signs, sum far from zero (≈ 0.7 n): mostly values just above 1 whose low
    // bits a long sequential f32 sum rounds away (one workgroup per row: 3e-5 error).
    let xs: Vec<f32> = uniform(n, 1)
        .iter()
        .enumerate()
        .map(|(k, &u)| {
            if k % 5 == 0 {
                -0.75 + u * 0.25
            } else {
                1.0 + (1 + k % 7) as f32 / 1024.0
            }
        })
        .collect();
    assert!(xs.iter().any(|&x| x < 0.0) && xs.iter().any(|&x| x > 0.0));
    let exact: f64 = xs.iter().map(|&x| f64::from(x)).sum();
    let t = Tensor::from_slice(&dev, &[n], &xs).unwrap();
    let got = f64::from(t.sum_all().unwrap().to_vec::<f32>().unwrap()[0]);
    let rel = (got - exact).abs() / exact.abs();
    assert!(rel <= 1e-6, "sum {got} vs {exact}: relative error {rel:e}");

    // The bench's case: N(0, 1), whose sum is near √n, within the f32 tolerance (seed 0
    // gave 1.1e-5 with one workgroup per row).
    let r = Tensor::randn(&dev, &[n], DType::F32, 0).unwrap();
    let vals = f64s(&r.to_vec::<f32>().unwrap());
    let exact: f64 = vals.iter().sum();
    let got = f64::from(r.sum_all().unwrap().to_vec::<f32>().unwrap()[0]);
    Tolerance::for_dtype(DType::F32)
        .check(&[got], &[exact])
        .unwrap_or_else(|e| panic!("randn sum {got} vs {exact}: {e}"));
}

#[test]
fn argmax_argmin_ties_and_late_nan_across_workgroups() {
    let dev = device();
    let n = 3 * 4096 + 1000;
    // Row 0: small integers (ties everywhere), the extremes tied in several chunks.
    let mut row0: Vec<f32> = (0..n).map(|k| (k % 7) as f32).collect();
    for k in [5000, 9000, 12_500] {
        row0[k] = 100.0;
    }
    for k in [4500, 8300, 13_000] {
        row0[k] = -100.0;
    }
    // Row 1: the same with a NaN placed late, which wins both.
    let mut row1 = row0.clone();
    row1[n - 5] = f32::NAN;
    let data: Vec<f32> = row0.iter().chain(&row1).copied().collect();
    let t = Tensor::from_slice(&dev, &[2, n], &data).unwrap();
    let am = t.argmax(1, false).unwrap().to_vec::<u32>().unwrap();
    let an = t.argmin(1, false).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(am, vec![5000, (n - 5) as u32]);
    assert_eq!(an, vec![4500, (n - 5) as u32]);

    // The same rows as columns of [N, 2], reduced along axis 0, against the reference.
    let cols: Vec<f32> = (0..n).flat_map(|k| [row0[k], row1[k]]).collect();
    let host = HostTensor::new(&[n, 2], f64s(&cols));
    let t = Tensor::from_slice(&dev, &[n, 2], &cols).unwrap();
    for (kind, want) in [
        (ReduceKind::ArgMax, [5000, n - 5]),
        (ReduceKind::ArgMin, [4500, n - 5]),
    ] {
        let got = t.reduce(kind, 0, false).unwrap().to_vec::<u32>().unwrap();
        let r = reference::reduce(&host, kind, Some(0), false);
        assert_eq!(r.data, vec![want[0] as f64, want[1] as f64], "{kind:?}");
        assert_eq!(got, vec![want[0] as u32, want[1] as u32], "{kind:?}");
    }
}

#[test]
fn long_rows_match_the_reference_along_either_axis() {
    let dev = device();
    let n = 50_001;
    let tol = Tolerance::for_dtype(DType::F32);
    // Row 0: offset uniform values; row 1: scaled values with a NaN late in the row
    // (max/min/mean propagate it) for the second pass; row 1 all −∞ for logsumexp.
    let base: Vec<f32> = uniform(2 * n, 3)
        .iter()
        .enumerate()
        .map(|(k, &u)| if k < n { u * 3.0 + 0.5 } else { u * 20.0 })
        .collect();
    let mut with_nan = base.clone();
    with_nan[n + n - 100] = f32::NAN;
    let mut with_ninf = base.clone();
    for v in &mut with_ninf[n..] {
        *v = f32::NEG_INFINITY;
    }
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::LogSumExp,
    ];
    for (label, rows) in [("finite", &base), ("nan", &with_nan), ("-inf", &with_ninf)] {
        // [2, N] along axis 1.
        let t = Tensor::from_slice(&dev, &[2, n], rows).unwrap();
        let host = HostTensor::new(&[2, n], f64s(rows));
        // [N, 2] along axis 0 (the transpose, laid out contiguously).
        let cols: Vec<f32> = (0..n).flat_map(|k| [rows[k], rows[n + k]]).collect();
        let tc = Tensor::from_slice(&dev, &[n, 2], &cols).unwrap();
        let hostc = HostTensor::new(&[n, 2], f64s(&cols));
        for kind in kinds {
            for (axis, t, host) in [(1, &t, &host), (0, &tc, &hostc)] {
                let got = f64s(
                    &t.reduce(kind, axis as isize, false)
                        .unwrap()
                        .to_vec::<f32>()
                        .unwrap(),
                );
                let want = reference::reduce(host, kind, Some(axis), false).data;
                tol.check(&got, &want).unwrap_or_else(|e| {
                    panic!("{label} {kind:?} axis {axis}: {got:?} vs {want:?}: {e}")
                });
            }
        }
    }
}
