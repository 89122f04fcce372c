//! Results are bitwise identical across runs and thread counts (1, 2, 8).

use xkern_core::{AttentionOptions, DType, ReduceKind, Tensor, attention};
use xkern_cpu::CpuBackend;

/// Every op family on one device, as raw f64 bit patterns.
fn run_all(dev: &CpuBackend) -> Vec<Vec<u64>> {
    let bits = |t: Tensor<CpuBackend>| {
        t.to_f64_vec()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<u64>>()
    };
    let x = Tensor::randn(dev, &[37, 3000], DType::F32, 1).unwrap();
    let big = Tensor::randn(dev, &[300_001], DType::F32, 2).unwrap();
    let a = Tensor::randn(dev, &[2, 65, 129], DType::BF16, 3).unwrap();
    let b = Tensor::randn(dev, &[129, 33], DType::BF16, 4).unwrap();
    let q = Tensor::randn(dev, &[1, 4, 100, 32], DType::F32, 5).unwrap();
    let kv = Tensor::randn(dev, &[1, 2, 300, 32], DType::F32, 6).unwrap();
    let mut out = vec![
        bits(big.sum_all().unwrap()),
        bits(big.reduce_all(ReduceKind::LogSumExp).unwrap()),
        bits(x.t().unwrap().sum(0, false).unwrap()),
        bits(x.softmax(-1).unwrap()),
        bits(x.rms_norm(None, 1e-6).unwrap()),
        bits(a.matmul(&b).unwrap()),
        bits(
            attention(
                &q,
                &kv,
                &kv,
                &AttentionOptions {
                    causal: true,
                    scale: None,
                },
            )
            .unwrap(),
        ),
    ];
    // One product per GEMM loop nest (skinny rows, column tasks, row tasks, per depth
    // block, x · B over chunks of rows), whose task splits follow the thread count while
    // sums must not.
    for (m, k, n) in [
        (12, 500, 1300),
        (100, 300, 1300),
        (700, 300, 40),
        (200, 300, 200),
        (1, 1000, 300),
        (1, 20_000, 70),
        (1, 700, 4500),
    ] {
        let a = Tensor::randn(dev, &[m, k], DType::F32, 7).unwrap();
        let b = Tensor::randn(dev, &[k, n], DType::F32, 8).unwrap();
        out.push(bits(a.matmul(&b).unwrap()));
    }
    for kind in ReduceKind::ALL {
        out.push(bits(x.reduce(kind, 1, false).unwrap()));
        out.push(bits(x.reduce(kind, 0, false).unwrap()));
    }
    out
}

#[test]
fn bitwise_identical_for_1_2_and_8_threads() {
    let reference = run_all(&CpuBackend::with_threads(1).unwrap());
    for threads in [2, 8] {
        let dev = CpuBackend::with_threads(threads).unwrap();
        assert_eq!(run_all(&dev), reference, "{threads} threads");
        assert_eq!(run_all(&dev), reference, "{threads} threads, second run");
    }
}
