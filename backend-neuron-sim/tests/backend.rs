//! The backend beyond the shared suite: per-op profiles come from the simulated engines,
//! timing-only devices cost shapes but refuse to read data back, errors keep messages.
use xkern_core::{DType, Error, Tensor};
use xkern_neuron_sim::{Engine, Mode, NeuronBackend, NeuronConfig, SimError};

#[test]
fn matmul_profile_counts_tensor_engine_work() -> Result<(), Error> {
    let dev = NeuronBackend::trn2();
    assert!(dev.last_profile().is_none());
    let a = Tensor::randn(&dev, &[256, 384], DType::BF16, 1)?;
    let b = Tensor::randn(&dev, &[384, 1024], DType::BF16, 2)?;
    let c = a.matmul(&b)?;
    assert_eq!(c.shape(), &[256, 1024]);
    let p = dev.last_profile().expect("a profile after an op");
    // 2 m-tiles × 2 n-tiles × 3 k-tiles of matmuls, 2 × 3 on-chip transposes of A.
    assert_eq!(p.instruction_counts.get("matmul"), Some(&12));
    assert_eq!(p.instruction_counts.get("transpose"), Some(&6));
    assert_eq!(p.flops, 2.0 * 256.0 * 384.0 * 1024.0);
    assert!(p.latency_ns > 0.0 && p.mfu > 0.0 && p.mfu <= 1.0);
    assert!(p.engine(Engine::Tensor).busy_ns > 0.0);
    let svg = dev.last_svg_timeline(600).expect("an svg");
    assert!(svg.starts_with("<svg"));
    Ok(())
}

/// B stored `[N, K]` and read through `.t()` is loaded in rows and transposed on the
/// tensor engine: ragged n-groups (600 = 4·128 + 88), several N-blocks and, at K = 2200
/// in fp32, several K-blocks accumulated in SBUF.
#[test]
fn matmul_transposed_b_in_rows() -> Result<(), Error> {
    let dev = NeuronBackend::trn1();
    let (m, k, n) = (130, 2200, 600);
    let a = Tensor::randn(&dev, &[m, k], DType::F32, 3)?;
    let b = Tensor::randn(&dev, &[n, k], DType::F32, 4)?;
    let c = a.matmul(&b.t()?)?;
    let p = dev.last_profile().expect("a profile after an op");
    let (av, bv, cv) = (a.to_vec::<f32>()?, b.to_vec::<f32>()?, c.to_vec::<f32>()?);
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k)
                .map(|l| av[i * k + l] as f64 * bv[j * k + l] as f64)
                .sum();
            worst = worst.max((cv[i * n + j] as f64 - want).abs());
        }
    }
    assert!(worst < 1e-3, "max abs error {worst}");
    // Every B element is transposed on chip, once per (M-block, N-block): at least
    // 5 groups × 18 k-tiles per N-block pair.
    let transposes = p.instruction_counts.get("transpose").copied().unwrap_or(0);
    assert!(transposes >= 5 * 18, "{transposes} transposes");
    Ok(())
}

#[test]
fn timing_only_costs_but_refuses_reads() -> Result<(), Error> {
    let dev = NeuronBackend::new(NeuronConfig::trn2(), Mode::TimingOnly);
    let a = Tensor::zeros(&dev, &[2048, 2048], DType::BF16)?;
    let c = a.matmul(&a)?;
    let p = dev.last_profile().expect("a profile");
    assert_eq!(p.flops, 2.0 * 2048f64.powi(3));
    assert!(p.mfu > 0.5, "2048³ bf16 MFU {}", p.mfu);
    match c.to_vec::<half::bf16>() {
        Err(Error::Backend { message, .. }) => assert!(message.contains("timing-only")),
        other => panic!("expected a timing-only read error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn sim_errors_keep_their_message() {
    let e = SimError::Unsupported {
        instr: "matmul",
        detail: "because".into(),
    };
    let msg = e.to_string();
    let core: Error = e.into();
    assert!(core.to_string().contains(&msg), "{core}");
    let oom: Error = SimError::OutOfMemory {
        memory: "SBUF",
        requested: 1 << 20,
        available: 10,
        capacity: 20,
    }
    .into();
    assert!(
        matches!(oom, Error::OutOfMemory { bytes: 1048576, .. }),
        "{oom}"
    );
}

#[test]
fn parse_options() {
    assert_eq!(
        NeuronBackend::parse_options("").map(|d| d.mode()),
        Some(Mode::Functional)
    );
    let t = NeuronBackend::parse_options("trn1:timing").expect("valid");
    assert_eq!(t.mode(), Mode::TimingOnly);
    assert!(t.config().name.contains("trn1"));
    assert!(NeuronBackend::parse_options("trn3").is_none());
    assert!(NeuronBackend::parse_options("trn2:fast").is_none());
}

#[test]
fn simulated_hbm_capacity_is_enforced_and_released() {
    // A timing-only trn2 core: no host memory behind its tensors, the same 12 GiB of HBM.
    let dev = NeuronBackend::new(NeuronConfig::trn2(), Mode::TimingOnly);
    let cap = dev.config().hbm_capacity_bytes;
    assert_eq!(cap, 12 << 30);
    let big = Tensor::zeros(&dev, &[5 << 30], DType::BF16).unwrap(); // 10 GiB
    assert_eq!(dev.hbm_used_bytes(), 10 << 30);
    // 4 GiB more does not fit, as a tensor or as an op's output.
    match Tensor::zeros(&dev, &[1 << 30], DType::F32) {
        Err(Error::OutOfMemory { bytes, device }) => {
            assert_eq!(bytes, 4 << 30);
            assert!(device.contains("simulated HBM"), "{device}");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    let a = Tensor::zeros(&dev, &[32768, 1], DType::F32).unwrap();
    let b = Tensor::zeros(&dev, &[1, 32768], DType::F32).unwrap();
    assert!(matches!(a.matmul(&b), Err(Error::OutOfMemory { .. })));
    // Dropping the big tensor gives its bytes back.
    drop(big);
    assert_eq!(dev.hbm_used_bytes(), 2 * 32768 * 4);
    let c = a.matmul(&b).unwrap();
    assert_eq!(dev.hbm_used_bytes(), 2 * 32768 * 4 + (4 << 30));
    drop((a, b, c));
    assert_eq!(dev.hbm_used_bytes(), 0);
}

/// Reductions over a non-last axis load contiguous `[128 axis positions, ≤ 4096 inner]`
/// blocks and reduce across partitions on GpSimd: two outer rows, a ragged last axis
/// block (300 = 2·128 + 44) and two column chunks (4200 = 4096 + 104), with NaN and ±∞
/// in a few columns; no transposing DMA, so the DMA engines are not the bottleneck.
#[test]
fn column_reductions_in_row_blocks() -> Result<(), Error> {
    use xkern_core::ReduceKind;
    use xkern_core::reference::{self, HostTensor};
    let dev = NeuronBackend::trn2();
    let shape = [2, 300, 4200];
    let len: usize = shape.iter().product();
    let mut x: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0)
        .collect();
    x[4200 * 17 + 5] = f32::NAN;
    x[4200 * 290 + 4100] = f32::INFINITY;
    x[4200 * 3 + 4100] = f32::NEG_INFINITY;
    let t = Tensor::from_slice(&dev, &shape, &x)?;
    let host = HostTensor::new(&shape, x.iter().map(|&v| v as f64).collect());
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
    ] {
        let got = t.reduce(kind, 1, false)?.to_f64_vec()?;
        let p = dev.last_profile().expect("a profile");
        assert!(p.instruction_counts.contains_key("partition_reduce"));
        assert_eq!(p.races, 0);
        let want = reference::reduce(&host, kind, Some(1), false).data;
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                g == w
            } else {
                (g - w).abs() <= 1e-5 * w.abs().max(1.0)
            };
            assert!(ok, "{kind:?} column {i}: got {g}, want {w}");
        }
    }
    Ok(())
}

/// The logical values of `t` (any view) for the f64 reference.
fn host(t: &Tensor<NeuronBackend>) -> Result<xkern_core::reference::HostTensor, Error> {
    Ok(xkern_core::reference::HostTensor::new(
        t.shape(),
        t.to_f64_vec()?,
    ))
}

#[test]
fn row_kernels_pipelined_across_groups() -> Result<(), Error> {
    // Rows on partitions in several groups of 128 (the last one partial), with one chunk
    // per row (loads issued a group ahead, three buffer sets) and with several chunks
    // (loads one chunk ahead across group boundaries), in f32 and bf16 (kept 16-bit in
    // SBUF), on both generations, against the f64 reference; no races.
    use xkern_core::ReduceKind;
    use xkern_core::conformance::check;
    use xkern_core::reference;
    for dev in [NeuronBackend::trn1(), NeuronBackend::trn2()] {
        for (rows, n) in [(300, 1000), (130, 9000)] {
            for dtype in [DType::F32, DType::BF16] {
                let x: Vec<f32> = (0..rows * n)
                    .map(|i| ((i * 7919) % 1013) as f32 / 101.0 - 5.0)
                    .collect();
                let t = Tensor::from_slice(&dev, &[rows, n], &x)?.to_dtype(dtype)?;
                let host = host(&t)?;
                let w = Tensor::from_slice(
                    &dev,
                    &[n],
                    &(0..n).map(|i| 0.5 + (i % 3) as f32).collect::<Vec<_>>(),
                )?
                .to_dtype(dtype)?;
                let wh = w.to_f64_vec()?;
                let label = format!("{} {rows}x{n} {dtype}", dev.config().name);
                // Each op's simulated program must be free of races.
                let nr = |t: Tensor<NeuronBackend>| -> Result<Tensor<NeuronBackend>, Error> {
                    assert_eq!(dev.last_profile().map(|p| p.races), Some(0), "{label}");
                    Ok(t)
                };
                let mut results = vec![
                    (
                        "softmax",
                        nr(t.softmax(1)?)?,
                        reference::softmax(&host, 1),
                        dtype,
                    ),
                    (
                        "log_softmax",
                        nr(t.log_softmax(1)?)?,
                        reference::log_softmax(&host, 1),
                        dtype,
                    ),
                    (
                        "rms_norm",
                        nr(t.rms_norm(Some(&w), 1e-5)?)?,
                        reference::rms_norm(&host, Some(&wh), f64::from(1e-5f32)),
                        dtype,
                    ),
                ];
                for kind in [ReduceKind::Sum, ReduceKind::ArgMax, ReduceKind::LogSumExp] {
                    results.push((
                        kind.name(),
                        nr(t.reduce(kind, 1, false)?)?,
                        reference::reduce(&host, kind, Some(1), false),
                        kind.output_dtype(dtype),
                    ));
                }
                for (name, got, want, dt) in results {
                    check(&got, &want, dt).map_err(|e| Error::Backend {
                        backend: "test",
                        message: format!("{label} {name}: {}", e.0),
                    })?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn matmul_with_resident_a_over_several_k_blocks() -> Result<(), Error> {
    // K spans several K-blocks (bf16: 16 k-tiles each, f32: fewer), so Aᵀ of each
    // M-block stays resident and every output tile accumulates over all of K in PSUM:
    // ragged m, n and k tiles, a batch, A row-major and transposed, B row-major and
    // stored [N, K], bias + GELU epilogue; against the f64 reference.
    use xkern_core::Activation;
    use xkern_core::conformance::check;
    use xkern_core::reference;
    let dev = NeuronBackend::trn2();
    for dtype in [DType::BF16, DType::F32] {
        let (m, k, n) = (130, 2 * 16 * 128 + 77, 520);
        for (batch, ta, tb) in [(2, false, false), (1, true, true)] {
            let a = if ta {
                Tensor::randn(&dev, &[batch, k, m], dtype, 11)?.permute(&[0, 2, 1])?
            } else {
                Tensor::randn(&dev, &[batch, m, k], dtype, 11)?
            };
            let b = if tb {
                Tensor::randn(&dev, &[batch, n, k], dtype, 12)?.permute(&[0, 2, 1])?
            } else {
                Tensor::randn(&dev, &[batch, k, n], dtype, 12)?
            };
            let bias = Tensor::randn(&dev, &[n], dtype, 13)?;
            let got = a.matmul_fused(&b, Some(&bias), Some(Activation::Gelu))?;
            let want = reference::matmul(
                &host(&a)?,
                &host(&b)?,
                Some(&bias.to_f64_vec()?),
                Some(Activation::Gelu),
            );
            check(&got, &want, dtype).map_err(|e| Error::Backend {
                backend: "test",
                message: format!("{dtype} ta={ta} tb={tb}: {}", e.0),
            })?;
            assert_eq!(dev.last_profile().map(|p| p.races), Some(0));
        }
    }
    Ok(())
}

#[test]
fn decode_stacks_the_heads_of_a_group() -> Result<(), Error> {
    // One query: the query heads of each GQA group form one tile (a head per
    // partition). Groups of 4 and 1 (MHA), causal or not, q as a permuted view (head
    // stride ≠ row stride), keys past one block; against the f64 reference.
    use xkern_core::conformance::check;
    use xkern_core::reference;
    use xkern_core::{AttentionOptions, attention};
    let dev = NeuronBackend::trn2();
    for (hq, hkv) in [(8, 2), (3, 3)] {
        for causal in [false, true] {
            for dtype in [DType::F32, DType::BF16] {
                let (b, skv, d) = (2, 700, 64);
                // q stored [B, Sq, Hq, D] and viewed [B, Hq, Sq, D].
                let q = Tensor::randn(&dev, &[b, 1, hq, d], dtype, 1)?.permute(&[0, 2, 1, 3])?;
                let k = Tensor::randn(&dev, &[b, hkv, skv, d], dtype, 2)?;
                let v = Tensor::randn(&dev, &[b, hkv, skv, d], dtype, 3)?;
                let opts = AttentionOptions {
                    causal,
                    ..Default::default()
                };
                let got = attention(&q, &k, &v, &opts)?;
                let want = reference::attention(
                    &host(&q)?,
                    &host(&k)?,
                    &host(&v)?,
                    causal,
                    1.0 / (d as f64).sqrt(),
                );
                check(&got, &want, dtype).map_err(|e| Error::Backend {
                    backend: "test",
                    message: format!("hq {hq} hkv {hkv} causal {causal} {dtype}: {}", e.0),
                })?;
                assert_eq!(dev.last_profile().map(|p| p.races), Some(0));
            }
        }
    }
    Ok(())
}
