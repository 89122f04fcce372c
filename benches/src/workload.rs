//! Turns a case into something to time on a device: inputs, the op as a closure, its
//! FLOP and byte counts (for throughput and the roofline), a check of the output against
//! the f64 reference, and the peers to interleave with it.
//!
//! The reference check is exact where it is cheap (reductions: the whole output) and
//! sampled where the f64 reference would dominate the run (matmul: 256 output elements;
//! attention: 16 query rows, including the first and last; the attention block: all).

use crate::block::{AttentionBlock, BlockShape};
use crate::cases::{Case, Workload};
use crate::peers::{HostMatmul, Peer, matmul_peers};
use anyhow::Context;
use std::sync::Arc;
use xkern::core::reference::{self, HostTensor};
use xkern::{AttentionOptions, DType, Device, ReduceKind, Tensor, Tolerance};

/// A reduction or normalisation of a `reduce` case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReduceOp {
    /// An axis reduction.
    Reduce(ReduceKind),
    /// Softmax.
    Softmax,
    /// Log-softmax.
    LogSoftmax,
    /// RMS norm (last axis, no weight, eps 1e-6).
    RmsNorm,
}

impl ReduceOp {
    /// Parses a case's `kind`.
    pub fn parse(kind: &str) -> Option<ReduceOp> {
        match kind {
            "softmax" => Some(ReduceOp::Softmax),
            "log_softmax" => Some(ReduceOp::LogSoftmax),
            "rms_norm" => Some(ReduceOp::RmsNorm),
            k => ReduceKind::parse(k).map(ReduceOp::Reduce),
        }
    }
}

/// How the output compares with the reference.
#[derive(Clone, Debug)]
pub struct Accuracy {
    /// Relative Frobenius error of the compared elements.
    pub rel_err: f64,
    /// Whether the dtype's tolerance holds (special values included).
    pub ok: bool,
    /// Why not, when it does not.
    pub detail: Option<String>,
    /// What was compared (`all`, `256 sampled elements`, ...).
    pub compared: String,
}

type RunFn = Box<dyn FnMut() -> xkern::Result<Tensor>>;
type CheckFn = Box<dyn Fn(&Tensor) -> anyhow::Result<Accuracy>>;

/// A case ready to run on one device.
pub struct Prepared {
    /// Useful floating-point operations of one run.
    pub flops: f64,
    /// Minimum bytes one run must move to and from memory.
    pub bytes: f64,
    /// Whether throughput is quoted in GB/s (bandwidth-bound ops) rather than GFLOP/s.
    pub bandwidth_bound: bool,
    /// Whether the 16-bit peak applies (bf16/f16 matmul-like work).
    pub low_precision: bool,
    /// Runs the op once (and waits for it).
    pub run: RunFn,
    /// Checks an output of `run`.
    pub check: CheckFn,
    /// Peers to interleave with `run`.
    pub peers: Vec<Peer>,
}

/// An input for the reference; on a timing-only device (no data, never checked) an
/// empty stand-in, since its shape would not match the values it does not have.
fn host(t: &Tensor) -> anyhow::Result<HostTensor> {
    if timing_only(t.device()) {
        return Ok(HostTensor::new(&[0], Vec::new()));
    }
    Ok(HostTensor::new(t.shape(), inputs_f64(t)?))
}

/// Whether `dev` is a timing-only simulator (`neuron-sim:<gen>:timing`): its tensors hold
/// no data, so cases run for their simulated cost and are never checked.
pub fn timing_only(dev: &Device) -> bool {
    dev.name().ends_with(":timing")
}

/// An input's values for the reference; empty on a timing-only device, whose rows skip
/// the check (run_case never calls `check` there).
fn inputs_f64(t: &Tensor) -> anyhow::Result<Vec<f64>> {
    if timing_only(t.device()) {
        return Ok(Vec::new());
    }
    Ok(t.to_f64_vec()?)
}

fn accuracy(got: &[f64], want: &[f64], dtype: DType, compared: String) -> Accuracy {
    let verdict = Tolerance::for_dtype(dtype).check(got, want);
    Accuracy {
        rel_err: Tolerance::rel_frobenius(got, want),
        ok: verdict.is_ok(),
        detail: verdict.err(),
        compared,
    }
}

/// Deterministic sample positions `0..n` (up to `count`, first and last included).
fn sample(n: usize, count: usize) -> Vec<usize> {
    if n <= count {
        return (0..n).collect();
    }
    let mut idx: Vec<usize> = (0..count)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize)
        .collect();
    idx[0] = 0;
    idx[count - 1] = n - 1;
    idx
}

fn sync(dev: &Device, t: xkern::Result<Tensor>) -> xkern::Result<Tensor> {
    let t = t?;
    dev.synchronize()?;
    Ok(t)
}

/// Builds the inputs of `case` on `dev` and everything needed to time and check it.
pub fn prepare(case: &Case, dev: &Device, peers_wanted: bool) -> anyhow::Result<Prepared> {
    let dtype = case.dtype()?;
    let seed = case
        .id
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let size = dtype.size_in_bytes() as f64;
    let low = dtype != DType::F32;
    match case.workload.clone() {
        Workload::Matmul {
            batch,
            m,
            k,
            n,
            trans_b,
            ..
        } => {
            let a = Tensor::randn(dev, &[batch, m, k], dtype, seed)?;
            let b_stored = Tensor::randn(
                dev,
                &if trans_b {
                    [batch, n, k]
                } else {
                    [batch, k, n]
                },
                dtype,
                seed ^ 1,
            )?;
            let b = if trans_b {
                b_stored.t()?
            } else {
                b_stored.clone()
            };
            let (ha, hb) = (Arc::new(inputs_f64(&a)?), Arc::new(inputs_f64(&b_stored)?));
            let peers = if peers_wanted && dtype == DType::F32 && dev.info().backend == "cpu" {
                let f32s = |v: &[f64]| Arc::new(v.iter().map(|&x| x as f32).collect::<Vec<f32>>());
                let p = HostMatmul {
                    a: f32s(&ha),
                    b: f32s(&hb),
                    batch,
                    m,
                    k,
                    n,
                    trans_b,
                };
                matmul_peers(Arc::new(p), dev.info().threads.unwrap_or(1))
            } else {
                Vec::new()
            };
            let d = dev.clone();
            let check: CheckFn = Box::new(move |out| {
                let got = out.to_f64_vec()?;
                let positions = sample(batch * m * n, 256);
                let want: Vec<f64> = positions
                    .iter()
                    .map(|&pos| {
                        let (bi, i, j) = (pos / (m * n), pos / n % m, pos % n);
                        (0..k)
                            .map(|p| {
                                let bv = if trans_b {
                                    hb[(bi * n + j) * k + p]
                                } else {
                                    hb[(bi * k + p) * n + j]
                                };
                                ha[(bi * m + i) * k + p] * bv
                            })
                            .sum()
                    })
                    .collect();
                let got: Vec<f64> = positions.iter().map(|&p| got[p]).collect();
                Ok(accuracy(
                    &got,
                    &want,
                    dtype,
                    format!("{} sampled elements", positions.len()),
                ))
            });
            Ok(Prepared {
                flops: 2.0 * (batch * m * n * k) as f64,
                bytes: size * (batch * (m * k + k * n + m * n)) as f64,
                bandwidth_bound: false,
                low_precision: low,
                run: Box::new(move || sync(&d, a.matmul(&b))),
                check,
                peers,
            })
        }
        Workload::Attention {
            batch,
            q_heads,
            kv_heads,
            q_seq,
            kv_seq,
            head_dim,
            causal,
            ..
        } => {
            let q = Tensor::randn(dev, &[batch, q_heads, q_seq, head_dim], dtype, seed)?;
            let k = Tensor::randn(dev, &[batch, kv_heads, kv_seq, head_dim], dtype, seed ^ 1)?;
            let v = Tensor::randn(dev, &[batch, kv_heads, kv_seq, head_dim], dtype, seed ^ 2)?;
            let (hq, hk, hv) = (host(&q)?, host(&k)?, host(&v)?);
            let opts = AttentionOptions {
                causal,
                scale: None,
            };
            let visible: usize = (0..q_seq)
                .map(|i| {
                    if causal {
                        (i + 1 + kv_seq).saturating_sub(q_seq).min(kv_seq)
                    } else {
                        kv_seq
                    }
                })
                .sum();
            let d = dev.clone();
            let check: CheckFn = Box::new(move |out| {
                let got = out.to_f64_vec()?;
                let rows = sample(batch * q_heads * q_seq, 16);
                let scale = 1.0 / (head_dim as f64).sqrt();
                let (mut g, mut w) = (Vec::new(), Vec::new());
                for &r in &rows {
                    let (b, h, i) = (r / (q_heads * q_seq), r / q_seq % q_heads, r % q_seq);
                    w.extend(reference::attention_row(
                        &hq, &hk, &hv, causal, scale, b, h, i,
                    ));
                    g.extend_from_slice(&got[r * head_dim..(r + 1) * head_dim]);
                }
                Ok(accuracy(
                    &g,
                    &w,
                    dtype,
                    format!("{} sampled rows", rows.len()),
                ))
            });
            Ok(Prepared {
                flops: 4.0 * (batch * q_heads * head_dim * visible) as f64,
                bytes: size
                    * (2 * batch * q_heads * q_seq * head_dim
                        + 2 * batch * kv_heads * kv_seq * head_dim) as f64,
                bandwidth_bound: false,
                low_precision: low,
                run: Box::new(move || sync(&d, xkern::attention(&q, &k, &v, &opts))),
                check,
                peers: Vec::new(),
            })
        }
        Workload::Reduce { kind, shape, axis } => {
            let op = ReduceOp::parse(&kind).with_context(|| format!("unknown reduction {kind}"))?;
            let x = Tensor::randn(dev, &shape, dtype, seed)?;
            let numel: usize = shape.iter().product();
            let out_numel = match (op, axis) {
                (ReduceOp::Reduce(_), Some(a)) => numel / shape[a].max(1),
                (ReduceOp::Reduce(_), None) => 1,
                _ => numel,
            };
            let out_size = match op {
                ReduceOp::Reduce(ReduceKind::ArgMax | ReduceKind::ArgMin) => 4.0,
                _ => size,
            };
            let last = shape.len().saturating_sub(1);
            if op == ReduceOp::RmsNorm && axis != Some(last) {
                anyhow::bail!("case {}: rms_norm normalises the last axis", case.id);
            }
            let ax = axis.unwrap_or(last);
            let hx = host(&x)?;
            let d = dev.clone();
            let check: CheckFn = Box::new(move |out| {
                let want = match op {
                    ReduceOp::Reduce(kind) => reference::reduce(&hx, kind, axis, false),
                    ReduceOp::Softmax => reference::softmax(&hx, ax),
                    ReduceOp::LogSoftmax => reference::log_softmax(&hx, ax),
                    ReduceOp::RmsNorm => reference::rms_norm(&hx, None, 1e-6_f32.into()),
                };
                Ok(accuracy(
                    &out.to_f64_vec()?,
                    &want.data,
                    out.dtype(),
                    "all elements".into(),
                ))
            });
            let run: RunFn = Box::new(move || {
                let ax = ax as isize;
                let r = match (op, axis) {
                    (ReduceOp::Reduce(kind), Some(_)) => x.reduce(kind, ax, false),
                    (ReduceOp::Reduce(kind), None) => x.reduce_all(kind),
                    (ReduceOp::Softmax, _) => x.softmax(ax),
                    (ReduceOp::LogSoftmax, _) => x.log_softmax(ax),
                    (ReduceOp::RmsNorm, _) => x.rms_norm(None, 1e-6),
                };
                sync(&d, r)
            });
            Ok(Prepared {
                flops: numel as f64,
                bytes: size * numel as f64 + out_size * out_numel as f64,
                bandwidth_bound: true,
                low_precision: low,
                run,
                check,
                peers: Vec::new(),
            })
        }
        Workload::AttentionBlock {
            batch,
            seq,
            hidden,
            q_heads,
            kv_heads,
            head_dim,
        } => {
            let shape = BlockShape {
                batch,
                seq,
                hidden,
                q_heads,
                kv_heads,
                head_dim,
            };
            let block = Arc::new(AttentionBlock::new(dev, shape, dtype, seed)?);
            let x = block.input(dev, dtype, seed ^ 9)?;
            let want = block.reference(&x, dtype)?;
            let (d, b) = (dev.clone(), Arc::clone(&block));
            let kv = kv_heads * head_dim;
            Ok(Prepared {
                flops: shape.flops(),
                bytes: size
                    * (2 * hidden * hidden + 2 * hidden * kv + 2 * batch * seq * hidden) as f64,
                bandwidth_bound: false,
                low_precision: low,
                run: Box::new(move || sync(&d, b.forward(&x))),
                check: Box::new(move |out| {
                    Ok(accuracy(
                        &out.to_f64_vec()?,
                        &want.data,
                        dtype,
                        "all elements".into(),
                    ))
                }),
                peers: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_cover_the_ends() {
        let s = sample(1000, 16);
        assert_eq!((s.len(), s[0], s[15]), (16, 0, 999));
        assert!(s.iter().all(|&i| i < 1000));
        assert_eq!(sample(5, 16), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn every_quick_case_runs_and_matches_the_reference() {
        let dev = Device::cpu();
        for case in crate::cases::suite("quick").unwrap() {
            let mut p = prepare(&case, &dev, false).unwrap();
            let out = (p.run)().unwrap();
            let acc = (p.check)(&out).unwrap();
            assert!(acc.ok, "{}: {:?}", case.id, acc.detail);
            assert!(p.flops > 0.0 && p.bytes > 0.0, "{}", case.id);
        }
    }

    #[test]
    fn a_wrong_result_is_flagged() {
        let dev = Device::cpu();
        let case = &crate::cases::suite("quick").unwrap()[0];
        let p = prepare(case, &dev, false).unwrap();
        let zeros = Tensor::zeros(&dev, &[1, 256, 256], DType::F32).unwrap();
        let acc = (p.check)(&zeros).unwrap();
        assert!(!acc.ok && acc.rel_err > 0.5);
    }
}
