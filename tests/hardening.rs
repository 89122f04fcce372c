//! Concurrency, determinism and allocation faults on every device of this build
//! (`Device::available()`: the CPU, wgpu on whatever adapter is present — lavapipe in CI —
//! and the simulated NeuronCore on trn1 and trn2).
//!
//! - Eight threads issue mixed ops (fused matmul, causal GQA attention, softmax, argmax,
//!   sum, bf16 cast) on one shared device; every result must equal, bit for bit, the same
//!   op run alone beforehand, whose values are checked against the f64 reference. The
//!   whole run has a deadline, so a deadlock fails instead of hanging CI.
//! - Results repeat bit for bit run to run on every device, and on the CPU for every
//!   thread count (the partitioning may not change a single bit).
//! - An allocation no device can satisfy is `Error::OutOfMemory` (never an abort), and
//!   the device keeps working afterwards.

use std::sync::mpsc;
use std::time::Duration;
use xkern::core::reference::{self, HostTensor};
use xkern::{Activation, AttentionOptions, DType, Device, Error, HostData, Tensor, Tolerance};

/// Every output of a workload as raw bits, labelled.
type Bits = Vec<(&'static str, Vec<u32>)>;

fn bits(t: &Tensor) -> Vec<u32> {
    match t.to_host().expect("download") {
        HostData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        HostData::F16(v) => v.iter().map(|x| u32::from(x.to_bits())).collect(),
        HostData::BF16(v) => v.iter().map(|x| u32::from(x.to_bits())).collect(),
        HostData::U32(v) => v,
    }
}

fn host(t: &Tensor) -> HostTensor {
    HostTensor::new(t.shape(), t.to_f64_vec().expect("download"))
}

/// Problem sizes of [`mixed`]: small enough for the simulated NeuronCore and lavapipe,
/// odd enough to leave ragged tiles everywhere.
struct Sizes {
    m: usize,
    k: usize,
    n: usize,
    s: usize,
    rows: usize,
    cols: usize,
}

const SMALL: Sizes = Sizes {
    m: 37,
    k: 29,
    n: 23,
    s: 13,
    rows: 7,
    cols: 50,
};

/// Large enough that the CPU splits every op across threads.
const LARGE: Sizes = Sizes {
    m: 301,
    k: 263,
    n: 199,
    s: 173,
    rows: 67,
    cols: 3001,
};

/// Runs the mixed workload from `seed`; with `check`, compares each result with the f64
/// reference.
fn mixed(dev: &Device, z: &Sizes, seed: u64, check: bool) -> Bits {
    let f32t = Tolerance::for_dtype(DType::F32);
    let a = Tensor::randn(dev, &[z.m, z.k], DType::F32, seed).unwrap();
    let b = Tensor::randn(dev, &[z.n, z.k], DType::F32, seed + 1)
        .unwrap()
        .t()
        .unwrap();
    let bias = Tensor::randn(dev, &[z.n], DType::F32, seed + 2).unwrap();
    let mm = a
        .matmul_fused(&b, Some(&bias), Some(Activation::Gelu))
        .unwrap();
    let q = Tensor::randn(dev, &[1, 4, z.s - 4, 16], DType::F32, seed + 3).unwrap();
    let k = Tensor::randn(dev, &[1, 2, z.s, 16], DType::F32, seed + 4).unwrap();
    let v = Tensor::randn(dev, &[1, 2, z.s, 8], DType::F32, seed + 5).unwrap();
    let opts = AttentionOptions {
        causal: true,
        scale: None,
    };
    let att = xkern::attention(&q, &k, &v, &opts).unwrap();
    let x = Tensor::randn(dev, &[z.rows, z.cols], DType::F32, seed + 6).unwrap();
    let sm = x.softmax(-1).unwrap();
    let am = x.argmax(-1, false).unwrap();
    let total = x.sum_all().unwrap();
    let cast = a.to_dtype(DType::BF16).unwrap();
    if check {
        let bias_h = host(&bias).data;
        let want = reference::matmul(&host(&a), &host(&b), Some(&bias_h), Some(Activation::Gelu));
        f32t.check(&host(&mm).data, &want.data).expect("matmul");
        let scale = 1.0 / 4.0;
        let want = reference::attention(&host(&q), &host(&k), &host(&v), true, scale);
        f32t.check(&host(&att).data, &want.data).expect("attention");
        let xh = host(&x);
        f32t.check(&host(&sm).data, &reference::softmax(&xh, 1).data)
            .expect("softmax");
        let want = reference::reduce(&xh, xkern::ReduceKind::ArgMax, Some(1), false);
        assert_eq!(host(&am).data, want.data, "argmax");
        let want = reference::reduce(&xh, xkern::ReduceKind::Sum, None, false);
        f32t.check(&host(&total).data, &want.data).expect("sum_all");
        let got = host(&cast).data;
        for (i, (&x, &y)) in host(&a).data.iter().zip(&got).enumerate() {
            let want = f64::from(xkern::half::bf16::from_f32(x as f32).to_f32());
            assert_eq!(y, want, "bf16 cast of element {i} ({x:e})");
        }
    }
    vec![
        ("matmul", bits(&mm)),
        ("attention", bits(&att)),
        ("softmax", bits(&sm)),
        ("argmax", bits(&am)),
        ("sum_all", bits(&total)),
        ("cast", bits(&cast)),
    ]
}

fn assert_same(what: &str, a: &Bits, b: &Bits) {
    for ((name, x), (_, y)) in a.iter().zip(b) {
        let diff = x.iter().zip(y).filter(|(p, q)| p != q).count();
        assert!(
            diff == 0 && x.len() == y.len(),
            "{what}: {name} differs in {diff} of {} elements",
            x.len()
        );
    }
}

/// Runs `f` on another thread and fails if it takes longer than `limit` (a deadlock).
fn with_deadline(limit: Duration, what: String, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().expect("worker"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: re-raise its panic here.
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: not finished after {limit:?} (deadlock?)")
        }
    }
}

#[test]
fn eight_threads_mixed_ops_on_every_device() {
    let devices = Device::available();
    assert!(!devices.is_empty());
    for dev in devices {
        let name = dev.name();
        with_deadline(Duration::from_secs(600), name.clone(), move || {
            // One serial run per thread's seed, checked against the reference.
            let seeds: Vec<u64> = (0..8).map(|t| 1000 + 10 * t).collect();
            let serial: Vec<Bits> = seeds
                .iter()
                .map(|&s| mixed(&dev, &SMALL, s, true))
                .collect();
            std::thread::scope(|scope| {
                for (t, (&seed, want)) in seeds.iter().zip(&serial).enumerate() {
                    let dev = dev.clone();
                    let name = &name;
                    scope.spawn(move || {
                        for round in 0..3 {
                            let got = mixed(&dev, &SMALL, seed, false);
                            assert_same(&format!("{name} thread {t} round {round}"), want, &got);
                        }
                    });
                }
            });
        });
    }
}

#[test]
fn results_repeat_bit_for_bit_on_every_device() {
    for dev in Device::available() {
        let first = mixed(&dev, &SMALL, 7, true);
        let again = mixed(&dev, &SMALL, 7, false);
        assert_same(&format!("{} run to run", dev.name()), &first, &again);
    }
}

#[cfg(feature = "cpu")]
#[test]
fn cpu_results_do_not_depend_on_the_thread_count() {
    let base = mixed(&Device::parse("cpu:1").unwrap(), &LARGE, 99, true);
    for name in ["cpu:2", "cpu:3", "cpu:8", "cpu"] {
        let dev = Device::parse(name).unwrap();
        assert_same(name, &base, &mixed(&dev, &LARGE, 99, false));
    }
}

#[test]
fn impossible_allocations_are_out_of_memory_and_the_device_survives() {
    // 2^40 f32 elements: 4 TiB, beyond this machine, any GPU and a NeuronCore's HBM.
    let huge = 1usize << 40;
    for dev in Device::available() {
        let name = dev.name();
        for dtype in [DType::F32, DType::BF16] {
            match Tensor::zeros(&dev, &[huge], dtype) {
                Err(Error::OutOfMemory { bytes, .. }) => {
                    assert!(bytes >= huge as u64, "{name}: reported {bytes} bytes")
                }
                other => panic!("{name} {dtype}: expected OutOfMemory, got {other:?}"),
            }
        }
        // An op whose *output* cannot be allocated: [2^20, 1] @ [1, 2^20] is 4 TiB.
        let a = Tensor::zeros(&dev, &[1 << 20, 1], DType::F32).unwrap();
        let b = Tensor::zeros(&dev, &[1, 1 << 20], DType::F32).unwrap();
        match a.matmul(&b) {
            Err(Error::OutOfMemory { .. }) => {}
            other => panic!("{name}: expected OutOfMemory for the matmul output, got {other:?}"),
        }
        drop((a, b));
        // The device still computes.
        let x = Tensor::from_slice(&dev, &[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let y = x.matmul(&x).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, vec![7.0, 10.0, 15.0, 22.0], "{name} after OutOfMemory");
    }
}
