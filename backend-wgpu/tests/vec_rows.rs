//! The `vec4` paths of reductions and normalisations (contiguous rows whose length is a
//! multiple of 4) against the f64 reference, next to the scalar paths they replace:
//! single-pass and split rows (several `vec4` chunks, ties and a late NaN across chunk
//! and lane boundaries), and the register-cached normalisation at every cache size
//! (1 to 16 `vec4`s per invocation) plus the streaming fallback past 8192 elements.
//!
//! No adapter is a failure (CI installs lavapipe), never a skip.

use xkern_core::conformance::check;
use xkern_core::reference::{self, HostTensor};
use xkern_core::{Backend, DType, ReduceKind, Tensor};
use xkern_wgpu::WgpuBackend;

fn device() -> WgpuBackend {
    WgpuBackend::new().unwrap_or_else(|e| {
        panic!(
            "these tests need a wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1): {e}"
        )
    })
}

/// Rows of small integers (ties everywhere) with a distinct extreme late in row 1 and a
/// NaN late in row 2, as f32.
fn rows(n_rows: usize, len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n_rows * len)
        .map(|k| ((k * 7919) % 13) as f32 * 0.5 - 3.0)
        .collect();
    if n_rows > 1 && len > 3 {
        v[len + len - 2] = 9.0;
    }
    if n_rows > 2 && len > 3 {
        v[2 * len + len - 3] = f32::NAN;
    }
    v
}

fn dtypes(dev: &WgpuBackend) -> Vec<DType> {
    dev.info()
        .dtypes
        .into_iter()
        .filter(|d| d.is_float())
        .collect()
}

fn input(dev: &WgpuBackend, len: usize, dtype: DType) -> (Tensor<WgpuBackend>, HostTensor) {
    let data = rows(3, len);
    let t = Tensor::from_slice(dev, &[3, len], &data)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let host = HostTensor::new(&[3, len], t.to_f64_vec().unwrap());
    (t, host)
}

#[test]
fn reductions_on_vec4_rows_match_the_reference() {
    let dev = device();
    // 4 … 8192: single pass (vec4 for multiples of 4, scalar for 8190); 8196 and 32776:
    // split into 1 and 3 vec4 chunks of 16384; 32774: split, scalar.
    let lens = [4, 12, 516, 8190, 8192, 8196, 32_774, 32_776];
    let mut failures = Vec::new();
    for dtype in dtypes(&dev) {
        for len in lens {
            let (t, host) = input(&dev, len, dtype);
            for kind in ReduceKind::ALL {
                let got = t.reduce(kind, 1, false).unwrap();
                let want = reference::reduce(&host, kind, Some(1), false);
                let out_dtype = kind.output_dtype(dtype);
                if let Err(e) = check(&got, &want, out_dtype) {
                    failures.push(format!("{dtype} len {len} {kind:?}: {}", e.0));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn normalisations_on_vec4_rows_match_the_reference() {
    let dev = device();
    // Register caches of 1, 2, 4, 8, 16 vec4s per invocation (up to 512, 1024, 2048,
    // 4096, 8192 elements), ragged last vec4 rounds (516, 4100), the streaming path for
    // lengths not a multiple of 4 (6, 4098), and past 8192 the three-phase softmax
    // (logsumexp split over workgroups, then elementwise) with RMS norm streaming (8196,
    // 40_001).
    let lens = [
        4, 8, 6, 512, 516, 1024, 2048, 4096, 4098, 4100, 8192, 8196, 40_001,
    ];
    let mut failures = Vec::new();
    for dtype in dtypes(&dev) {
        for len in lens {
            let (t, host) = input(&dev, len, dtype);
            let weight: Vec<f32> = (0..len).map(|k| 0.5 + (k % 5) as f32 * 0.25).collect();
            let w = Tensor::from_slice(&dev, &[len], &weight)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let wh = w.to_f64_vec().unwrap();
            let cases = [
                (
                    "softmax",
                    t.softmax(1).unwrap(),
                    reference::softmax(&host, 1),
                ),
                (
                    "log_softmax",
                    t.log_softmax(1).unwrap(),
                    reference::log_softmax(&host, 1),
                ),
                (
                    "rms_norm",
                    t.rms_norm(None, 1e-5).unwrap(),
                    reference::rms_norm(&host, None, f64::from(1e-5f32)),
                ),
                (
                    "rms_norm weighted",
                    t.rms_norm(Some(&w), 1e-5).unwrap(),
                    reference::rms_norm(&host, Some(&wh), f64::from(1e-5f32)),
                ),
            ];
            for (name, got, want) in cases {
                if let Err(e) = check(&got, &want, dtype) {
                    failures.push(format!("{dtype} len {len} {name}: {}", e.0));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn long_row_softmax_keeps_the_contract() {
    // Rows past the register cache take the three-phase softmax: a row with +∞, one with
    // a NaN and one of all −∞ are NaN throughout (as the reference), finite rows match;
    // rows along a non-last axis ([N, 3], axis 0) too.
    let dev = device();
    let n = 70_001;
    let mut data: Vec<f32> = (0..4 * n)
        .map(|k| ((k * 7919) % 101) as f32 * 0.1 - 5.0)
        .collect();
    data[n + 12_345] = f32::INFINITY;
    data[2 * n + 69_000] = f32::NAN;
    for v in &mut data[3 * n..] {
        *v = f32::NEG_INFINITY;
    }
    let t = Tensor::from_slice(&dev, &[4, n], &data).unwrap();
    let host = HostTensor::new(&[4, n], t.to_f64_vec().unwrap());
    for (name, got, want) in [
        (
            "softmax",
            t.softmax(1).unwrap(),
            reference::softmax(&host, 1),
        ),
        (
            "log_softmax",
            t.log_softmax(1).unwrap(),
            reference::log_softmax(&host, 1),
        ),
    ] {
        let got = got.to_f64_vec().unwrap();
        for row in 1..4 {
            let r = &got[row * n..(row + 1) * n];
            assert!(
                r.iter().all(|v| v.is_nan()),
                "{name} row {row} is not all NaN"
            );
            assert!(want.data[row * n..(row + 1) * n].iter().all(|v| v.is_nan()));
        }
        let g0 = HostTensor::new(&[1, n], got[..n].to_vec());
        let w0 = HostTensor::new(&[1, n], want.data[..n].to_vec());
        xkern_core::Tolerance::for_dtype(DType::F32)
            .check(&g0.data, &w0.data)
            .unwrap_or_else(|e| panic!("{name} row 0: {e}"));
    }
    let cols: Vec<f32> = (0..3 * 9000)
        .map(|k| ((k * 31) % 97) as f32 * 0.05)
        .collect();
    let c = Tensor::from_slice(&dev, &[9000, 3], &cols).unwrap();
    let hc = HostTensor::new(&[9000, 3], c.to_f64_vec().unwrap());
    check(
        &c.softmax(0).unwrap(),
        &reference::softmax(&hc, 0),
        DType::F32,
    )
    .unwrap_or_else(|e| panic!("column softmax: {}", e.0));
}

#[test]
fn large_reductions_take_the_big_chunks() {
    // At least 2^24 elements: 65536-element vec4 chunks (several per row, the last one
    // ragged), four accumulators per invocation; sums within the f32 tolerance, the
    // extreme and its first index exact (ties across chunks).
    let dev = device();
    let n = (1 << 23) + 12;
    let data: Vec<f32> = (0..2 * n)
        .map(|k| ((k * 7919) % 1009) as f32 * 0.01 - 5.0)
        .collect();
    let t = Tensor::from_slice(&dev, &[2, n], &data).unwrap();
    let host = HostTensor::new(&[2, n], data.iter().map(|&v| f64::from(v)).collect());
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Max,
        ReduceKind::ArgMax,
        ReduceKind::LogSumExp,
    ] {
        let got = t.reduce(kind, 1, false).unwrap();
        let want = reference::reduce(&host, kind, Some(1), false);
        check(&got, &want, kind.output_dtype(DType::F32))
            .unwrap_or_else(|e| panic!("{kind:?}: {}", e.0));
    }
}
