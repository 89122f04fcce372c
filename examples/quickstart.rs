//! The quickstart: runs each op family on the device `XKERN_DEVICE` names (CPU when
//! unset), checks it against the f64 reference and prints time and throughput.
//!
//! `cargo run --release --example quickstart`

use std::time::Instant;
use xkern::core::reference::{self, HostTensor};
use xkern::{AttentionOptions, DType, Device, Tensor, Tolerance};

/// Median wall time of `reps` runs of `f`, in seconds (the first run warms up).
fn time(reps: usize, mut f: impl FnMut() -> xkern::Result<Tensor>) -> xkern::Result<(f64, Tensor)> {
    let mut out = f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        out = f()?;
        out.device().synchronize()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], out))
}

fn host(t: &Tensor) -> xkern::Result<HostTensor> {
    Ok(HostTensor::new(t.shape(), t.to_f64_vec()?))
}

fn report(
    what: &str,
    secs: f64,
    work: f64,
    unit: &str,
    got: &Tensor,
    want: &HostTensor,
) -> xkern::Result<()> {
    let ok = Tolerance::for_dtype(got.dtype()).check(&got.to_f64_vec()?, &want.data);
    let verdict = match ok {
        Ok(()) => "matches the f64 reference".to_string(),
        Err(e) => format!("MISMATCH: {e}"),
    };
    println!(
        "{what:<44} {:>9.3} ms {:>9.1} {unit}   {verdict}",
        secs * 1e3,
        work / secs / 1e9
    );
    Ok(())
}

fn main() -> xkern::Result<()> {
    let dev = Device::from_env()?;
    let info = dev.info();
    println!(
        "xkern quickstart on {} ({}), {} threads",
        info.backend,
        info.device,
        info.threads.unwrap_or(1)
    );

    let (m, k, n) = (512, 512, 512);
    let a = Tensor::randn(&dev, &[m, k], DType::F32, 1)?;
    let b = Tensor::randn(&dev, &[k, n], DType::F32, 2)?;
    let (s, c) = time(5, || a.matmul(&b))?;
    let want = reference::matmul(&host(&a)?, &host(&b)?, None, None);
    report(
        "matmul f32 512x512x512",
        s,
        2.0 * (m * k * n) as f64,
        "GFLOP/s",
        &c,
        &want,
    )?;

    let (a16, b16) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
    let (s, c) = time(5, || a16.matmul(&b16))?;
    let want = reference::matmul(&host(&a16)?, &host(&b16)?, None, None);
    report(
        "matmul bf16 512x512x512 (f32 accumulation)",
        s,
        2.0 * (m * k * n) as f64,
        "GFLOP/s",
        &c,
        &want,
    )?;

    let (h, sq, d) = (8, 512, 64);
    let q = Tensor::randn(&dev, &[1, h, sq, d], DType::F32, 3)?;
    let kk = Tensor::randn(&dev, &[1, h, sq, d], DType::F32, 4)?;
    let v = Tensor::randn(&dev, &[1, h, sq, d], DType::F32, 5)?;
    let opts = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let (s, o) = time(5, || xkern::attention(&q, &kk, &v, &opts))?;
    let want = reference::attention(
        &host(&q)?,
        &host(&kk)?,
        &host(&v)?,
        true,
        1.0 / (d as f64).sqrt(),
    );
    // Causal: about half of the 4·h·S²·D FLOPs are useful.
    report(
        "attention causal b1 h8 s512 d64",
        s,
        2.0 * (h * sq * sq * d) as f64,
        "GFLOP/s",
        &o,
        &want,
    )?;

    let x = Tensor::randn(&dev, &[4096, 4096], DType::F32, 6)?;
    let hx = host(&x)?;
    let bytes = (4096 * 4096 * 4) as f64;
    let (s, r) = time(5, || x.sum(-1, false))?;
    report(
        "row sum 4096x4096",
        s,
        bytes,
        "GB/s",
        &r,
        &reference::reduce(&hx, xkern::ReduceKind::Sum, Some(1), false),
    )?;
    let (s, r) = time(5, || x.softmax(-1))?;
    report(
        "softmax 4096x4096",
        s,
        2.0 * bytes,
        "GB/s",
        &r,
        &reference::softmax(&hx, 1),
    )?;
    Ok(())
}
