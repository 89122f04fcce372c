//! Criterion benches: matmul, attention and reductions per enabled backend × dtype at a few
//! representative sizes. Each iteration waits for the device (`synchronize`) inside the
//! timed region. `cargo bench -p xkern-bench -- --quick` for a short run.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xkern::{AttentionOptions, DType, Device, Tensor};

fn wait(t: xkern::Result<Tensor>) -> Tensor {
    let t = t.expect("op failed");
    t.device().synchronize().expect("device failed");
    t
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    for dev in Device::available() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for n in [128usize, 512] {
                let a = Tensor::randn(&dev, &[n, n], dtype, 1).expect("input");
                let b = Tensor::randn(&dev, &[n, n], dtype, 2).expect("input");
                g.throughput(Throughput::Elements((2 * n * n * n) as u64));
                g.bench_function(
                    BenchmarkId::new(format!("{}/{dtype}", dev.name()), n),
                    |bench| bench.iter(|| wait(a.matmul(&b))),
                );
            }
        }
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    for dev in Device::available() {
        for dtype in [DType::F32, DType::BF16] {
            for causal in [false, true] {
                let (h, s, d) = (4, 256, 64);
                let q = Tensor::randn(&dev, &[1, h, s, d], dtype, 1).expect("input");
                let k = Tensor::randn(&dev, &[1, h, s, d], dtype, 2).expect("input");
                let v = Tensor::randn(&dev, &[1, h, s, d], dtype, 3).expect("input");
                let opts = AttentionOptions {
                    causal,
                    ..Default::default()
                };
                let name = if causal { "causal" } else { "full" };
                g.bench_function(
                    BenchmarkId::new(
                        format!("{}/{dtype}", dev.name()),
                        format!("h4s256d64/{name}"),
                    ),
                    |bench| bench.iter(|| wait(xkern::attention(&q, &k, &v, &opts))),
                );
            }
        }
    }
    g.finish();
}

fn reductions(c: &mut Criterion) {
    let mut g = c.benchmark_group("reduce");
    for dev in Device::available() {
        for dtype in [DType::F32, DType::BF16] {
            let x = Tensor::randn(&dev, &[1024, 1024], dtype, 1).expect("input");
            g.throughput(Throughput::Bytes(
                (1024 * 1024 * dtype.size_in_bytes()) as u64,
            ));
            let id = |op: &str| {
                BenchmarkId::new(format!("{}/{dtype}", dev.name()), format!("{op}/1024x1024"))
            };
            g.bench_function(id("sum_all"), |b| b.iter(|| wait(x.sum_all())));
            g.bench_function(id("row_max"), |b| b.iter(|| wait(x.max(-1, false))));
            g.bench_function(id("col_sum"), |b| b.iter(|| wait(x.sum(0, false))));
            g.bench_function(id("softmax"), |b| b.iter(|| wait(x.softmax(-1))));
            g.bench_function(id("rms_norm"), |b| b.iter(|| wait(x.rms_norm(None, 1e-6))));
        }
    }
    g.finish();
}

criterion_group!(benches, matmul, attention, reductions);
criterion_main!(benches);
