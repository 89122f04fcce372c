//! The column kernel of reductions over a non-contiguous axis (inner > 1): every kind on
//! every float dtype against the f64 reference, for inner sizes that give each column
//! width (2 … 32 columns per workgroup, ragged last block), axis lengths around the
//! chunk (one workgroup per column block, then several chunks merged by phase 2), ties
//! everywhere, a distinct extreme and a NaN late in some columns (across lanes and
//! chunks), and an offset view.
//!
//! No adapter is a failure (CI installs lavapipe), never a skip.

use xkern_core::conformance::check;
use xkern_core::reference::{self, HostTensor};
use xkern_core::{Backend, DType, ReduceKind, ReduceSpec, Tensor};
use xkern_wgpu::WgpuBackend;

fn device() -> WgpuBackend {
    WgpuBackend::new().unwrap_or_else(|e| {
        panic!(
            "these tests need a wgpu adapter (apt-get install mesa-vulkan-drivers libvulkan1): {e}"
        )
    })
}

/// `[outer, axis, inner]` of small multiples of 0.5 (ties in every column), with a
/// distinct maximum late in column 1 of outer 0, a minimum early in the last column of
/// the last outer index, and a NaN late in column 2 of outer 0.
fn data(outer: usize, axis: usize, inner: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..outer * axis * inner)
        .map(|k| ((k * 7919) % 13) as f32 * 0.5 - 3.0)
        .collect();
    let at = |o: usize, a: usize, i: usize| (o * axis + a) * inner + i;
    if inner > 1 && axis > 3 {
        v[at(0, axis - 2, 1)] = 9.0;
        v[at(outer - 1, 1, inner - 1)] = -9.0;
    }
    if inner > 2 && axis > 3 {
        v[at(0, axis - 3, 2)] = f32::NAN;
    }
    v
}

#[test]
fn column_reductions_match_the_reference() {
    let dev = device();
    let dtypes: Vec<DType> = dev
        .info()
        .dtypes
        .into_iter()
        .filter(|d| d.is_float())
        .collect();
    // (outer, axis, inner): inner 2, 3, 8, 17, 32, 33 and 100 give 2, 4, 8, 32 and
    // 32 columns per workgroup (ragged blocks for 3, 17, 33, 100); the axis crosses
    // the chunk of each width (64 · 128 / cx positions: 4096 at 2 columns, 1024 at 8,
    // 256 at 32), so both the single pass and the split run, with a ragged last chunk.
    let shapes = [
        (1, 5, 2),
        (3, 4097, 2),
        (2, 1, 3),
        (2, 700, 3),
        (1, 1024, 8),
        (2, 1025, 8),
        (3, 7, 17),
        (2, 256, 32),
        (1, 257, 32),
        (2, 1000, 33),
        (1, 2600, 100),
    ];
    let mut failures = Vec::new();
    for dtype in &dtypes {
        for &(outer, axis, inner) in &shapes {
            let t = Tensor::from_slice(&dev, &[outer, axis, inner], &data(outer, axis, inner))
                .unwrap()
                .to_dtype(*dtype)
                .unwrap();
            let host = HostTensor::new(&[outer, axis, inner], t.to_f64_vec().unwrap());
            for kind in ReduceKind::ALL {
                let got = t.reduce(kind, 1, false).unwrap();
                let want = reference::reduce(&host, kind, Some(1), false);
                if let Err(e) = check(&got, &want, kind.output_dtype(*dtype)) {
                    failures.push(format!(
                        "{dtype} [{outer}, {axis}, {inner}] {kind:?}: {}",
                        e.0
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn column_reductions_at_an_offset_and_with_infinities() {
    // The second half of a buffer (offset axis · inner, as a view would give) reduced
    // over its axis through the backend directly, with +∞ in one column and a column of
    // −∞ only (logsumexp −∞, argmax index 0); 3000 positions: a split over 12 chunks.
    let dev = device();
    let (axis, inner) = (3000, 40);
    let mut v = data(2, axis, inner);
    let half = axis * inner;
    v[half + 17 * inner + 5] = f32::INFINITY;
    for a in 0..axis {
        v[half + a * inner + 6] = f32::NEG_INFINITY;
    }
    let whole = Tensor::from_slice(&dev, &[2, axis, inner], &v).unwrap();
    let host = HostTensor::new(
        &[axis, inner],
        v[half..].iter().map(|&x| f64::from(x)).collect(),
    );
    for kind in ReduceKind::ALL {
        let spec = ReduceSpec {
            kind,
            dtype: DType::F32,
            outer: 1,
            axis_len: axis,
            inner,
            offset: half,
        };
        let out = dev.reduce(&spec, whole.storage()).unwrap();
        let dtype = kind.output_dtype(DType::F32);
        let got = dev.download(&out, dtype, 0, inner).unwrap().to_f64();
        let want = reference::reduce(&host, kind, Some(0), false);
        xkern_core::Tolerance::for_dtype(dtype)
            .check(&got, &want.data)
            .unwrap_or_else(|e| panic!("offset {kind:?}: {e}"));
    }
}
