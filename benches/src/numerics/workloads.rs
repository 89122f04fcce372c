//! The numerics workloads: a fixed list of representative shapes per op, their inputs
//! (the same `Tensor::randn` values on every device), the f64 reference and the run on a
//! device.

use crate::workload::ReduceOp;
use xkern::core::conformance::permute_host;
use xkern::core::random;
use xkern::core::reference::{self, HostTensor};
use xkern::{Activation, AttentionOptions, DType, Device, ReduceKind, Tensor};

/// The op of a numerics case and its shape.
#[derive(Clone, Debug, PartialEq)]
pub enum NumericsOp {
    /// `[batch, m, k] @ [batch, k, n]`, B stored `[batch, n, k]` and read through `.t()`
    /// when `trans_b`; with `epilogue`, `act(· + bias[n])` fused.
    Matmul {
        /// Independent matrices.
        batch: usize,
        /// Rows of A.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of B.
        n: usize,
        /// B read through `.t()`.
        trans_b: bool,
        /// Bias plus this activation, fused.
        epilogue: Option<Activation>,
    },
    /// Attention, `q [batch, q_heads, q_seq, head_dim]`, `v [.., v_head_dim]`, scale 1/√D.
    Attention {
        /// Batch.
        batch: usize,
        /// Query heads.
        q_heads: usize,
        /// Key/value heads.
        kv_heads: usize,
        /// Query length.
        q_seq: usize,
        /// Key/value length.
        kv_seq: usize,
        /// Feature size of q and k.
        head_dim: usize,
        /// Feature size of v and the output.
        v_head_dim: usize,
        /// Bottom-right causal mask.
        causal: bool,
    },
    /// A reduction over `axis` (None: all axes) or a normalisation along it (rms_norm:
    /// the last axis, eps 1e-6, no weight).
    Reduce {
        /// Which one.
        op: ReduceOp,
        /// Input shape.
        shape: Vec<usize>,
        /// The axis.
        axis: Option<usize>,
    },
}

impl NumericsOp {
    /// The op's name (`matmul`, `attention`, `sum`, `softmax`...): the table's sections.
    pub fn name(&self) -> &'static str {
        match self {
            NumericsOp::Matmul { .. } => "matmul",
            NumericsOp::Attention { .. } => "attention",
            NumericsOp::Reduce { op, .. } => match op {
                ReduceOp::Reduce(kind) => kind.name(),
                ReduceOp::Softmax => "softmax",
                ReduceOp::LogSoftmax => "log_softmax",
                ReduceOp::RmsNorm => "rms_norm",
            },
        }
    }
}

/// One workload of the numerics run.
#[derive(Clone, Debug, PartialEq)]
pub struct NumericsCase {
    /// Unique name.
    pub id: String,
    /// What it computes.
    pub op: NumericsOp,
}

/// How large the suite's shapes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Moderate shapes (a few seconds per device, wgpu on lavapipe included): the CLI's.
    Moderate,
    /// Tiny shapes with the same structure, for tests.
    Tiny,
}

/// The fixed list of representative workloads: matmul (square-ish with odd sizes, a
/// batched transposed-B, a GEMV, a fused bias + GELU and bias + SiLU), attention (full,
/// causal GQA with Sq ≠ Skv, decode, Dv ≠ D), every reduction along an axis and over all
/// axes, softmax, log-softmax and RMS norm.
pub fn suite(size: Size) -> Vec<NumericsCase> {
    let s = |moderate: usize, tiny: usize| match size {
        Size::Moderate => moderate,
        Size::Tiny => tiny,
    };
    let mut cases = Vec::new();
    let mut add = |id: String, op: NumericsOp| cases.push(NumericsCase { id, op });
    let matmuls = [
        (1, s(127, 9), s(256, 17), s(129, 7), false, None),
        (s(4, 2), s(64, 5), s(96, 12), s(80, 6), true, None),
        (1, 1, s(1024, 33), s(257, 9), false, None),
        (
            1,
            s(96, 8),
            s(128, 16),
            s(64, 5),
            true,
            Some(Activation::Gelu),
        ),
        (
            1,
            s(96, 8),
            s(128, 16),
            s(64, 5),
            false,
            Some(Activation::Silu),
        ),
    ];
    for (batch, m, k, n, trans_b, epilogue) in matmuls {
        let b = if batch > 1 {
            format!("b{batch}_")
        } else {
            String::new()
        };
        let t = if trans_b { "_nt" } else { "" };
        let e = epilogue.map_or(String::new(), |a| format!("_bias_{}", a.name()));
        add(
            format!("mm_{b}{m}x{k}x{n}{t}{e}"),
            NumericsOp::Matmul {
                batch,
                m,
                k,
                n,
                trans_b,
                epilogue,
            },
        );
    }
    let attentions = [
        (1, 4, 4, s(128, 9), s(128, 9), s(64, 8), s(64, 8), false),
        (1, 8, 2, s(96, 5), s(160, 11), s(64, 8), s(64, 8), true),
        (2, 8, 2, 1, s(512, 23), s(64, 16), s(64, 16), true),
        (1, 2, 1, s(64, 7), s(64, 7), s(32, 4), s(48, 6), true),
    ];
    for (batch, hq, hkv, sq, skv, d, dv, causal) in attentions {
        let mask = if causal { "causal" } else { "full" };
        let dv_name = if dv != d {
            format!("_dv{dv}")
        } else {
            String::new()
        };
        add(
            format!("attn_b{batch}_h{hq}kv{hkv}_q{sq}_kv{skv}_d{d}{dv_name}_{mask}"),
            NumericsOp::Attention {
                batch,
                q_heads: hq,
                kv_heads: hkv,
                q_seq: sq,
                kv_seq: skv,
                head_dim: d,
                v_head_dim: dv,
                causal,
            },
        );
    }
    let rows = vec![s(64, 5), s(1031, 37)];
    let reductions = [
        (ReduceOp::Reduce(ReduceKind::Sum), rows.clone(), Some(1)),
        (ReduceOp::Reduce(ReduceKind::Sum), rows.clone(), Some(0)),
        (
            ReduceOp::Reduce(ReduceKind::Sum),
            vec![s(256, 6), s(257, 11)],
            None,
        ),
        (ReduceOp::Reduce(ReduceKind::Mean), rows.clone(), Some(1)),
        (ReduceOp::Reduce(ReduceKind::Max), rows.clone(), Some(1)),
        (ReduceOp::Reduce(ReduceKind::Min), rows.clone(), Some(0)),
        (ReduceOp::Reduce(ReduceKind::ArgMax), rows.clone(), Some(1)),
        (ReduceOp::Reduce(ReduceKind::ArgMin), rows.clone(), Some(0)),
        (
            ReduceOp::Reduce(ReduceKind::LogSumExp),
            rows.clone(),
            Some(1),
        ),
        (ReduceOp::Softmax, rows.clone(), Some(1)),
        (ReduceOp::LogSoftmax, rows.clone(), Some(1)),
        (ReduceOp::RmsNorm, vec![s(64, 5), s(1024, 32)], Some(1)),
    ];
    for (op, shape, axis) in reductions {
        let name = NumericsOp::Reduce {
            op,
            shape: vec![],
            axis: None,
        }
        .name();
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let ax = axis.map_or("all".to_string(), |a| format!("axis{a}"));
        add(
            format!("{name}_{}_{ax}", dims.join("x")),
            NumericsOp::Reduce { op, shape, axis },
        );
    }
    cases
}

/// A seed from the case id (FNV-1a), the same on every device.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The values `Tensor::randn(shape, dtype, seed)` holds, on the host.
fn host_randn(shape: &[usize], dtype: DType, seed: u64) -> HostTensor {
    let n = shape.iter().product();
    let data = random::normal_f32(seed, n)
        .into_iter()
        .map(|x| f64::from(dtype.round_f32(x)))
        .collect();
    HostTensor::new(shape, data)
}

/// The reference output of `case` in `dtype` (inputs as `randn` makes them).
pub fn reference_output(case: &NumericsCase, dtype: DType) -> HostTensor {
    let seed = seed_of(&case.id);
    match &case.op {
        &NumericsOp::Matmul {
            batch,
            m,
            k,
            n,
            trans_b,
            epilogue,
        } => {
            let a = host_randn(&[batch, m, k], dtype, seed);
            let b = if trans_b {
                permute_host(&host_randn(&[batch, n, k], dtype, seed ^ 1), &[0, 2, 1])
            } else {
                host_randn(&[batch, k, n], dtype, seed ^ 1)
            };
            let bias = epilogue.map(|_| host_randn(&[n], dtype, seed ^ 2));
            reference::matmul(&a, &b, bias.as_ref().map(|h| h.data.as_slice()), epilogue)
        }
        &NumericsOp::Attention {
            batch,
            q_heads,
            kv_heads,
            q_seq,
            kv_seq,
            head_dim,
            v_head_dim,
            causal,
        } => {
            let q = host_randn(&[batch, q_heads, q_seq, head_dim], dtype, seed);
            let k = host_randn(&[batch, kv_heads, kv_seq, head_dim], dtype, seed ^ 1);
            let v = host_randn(&[batch, kv_heads, kv_seq, v_head_dim], dtype, seed ^ 2);
            reference::attention(&q, &k, &v, causal, 1.0 / (head_dim as f64).sqrt())
        }
        NumericsOp::Reduce { op, shape, axis } => {
            let x = host_randn(shape, dtype, seed);
            let last = shape.len().saturating_sub(1);
            match *op {
                ReduceOp::Reduce(kind) => reference::reduce(&x, kind, *axis, false),
                ReduceOp::Softmax => reference::softmax(&x, axis.unwrap_or(last)),
                ReduceOp::LogSoftmax => reference::log_softmax(&x, axis.unwrap_or(last)),
                ReduceOp::RmsNorm => reference::rms_norm(&x, None, f64::from(1e-6f32)),
            }
        }
    }
}

/// Runs `case` in `dtype` on `dev` and returns the output.
pub fn run_case(case: &NumericsCase, dtype: DType, dev: &Device) -> xkern::Result<Tensor> {
    let seed = seed_of(&case.id);
    match &case.op {
        &NumericsOp::Matmul {
            batch,
            m,
            k,
            n,
            trans_b,
            epilogue,
        } => {
            let a = Tensor::randn(dev, &[batch, m, k], dtype, seed)?;
            let b = if trans_b {
                Tensor::randn(dev, &[batch, n, k], dtype, seed ^ 1)?.t()?
            } else {
                Tensor::randn(dev, &[batch, k, n], dtype, seed ^ 1)?
            };
            match epilogue {
                None => a.matmul(&b),
                Some(act) => {
                    let bias = Tensor::randn(dev, &[n], dtype, seed ^ 2)?;
                    a.matmul_fused(&b, Some(&bias), Some(act))
                }
            }
        }
        &NumericsOp::Attention {
            batch,
            q_heads,
            kv_heads,
            q_seq,
            kv_seq,
            head_dim,
            v_head_dim,
            causal,
        } => {
            let q = Tensor::randn(dev, &[batch, q_heads, q_seq, head_dim], dtype, seed)?;
            let k = Tensor::randn(dev, &[batch, kv_heads, kv_seq, head_dim], dtype, seed ^ 1)?;
            let v = Tensor::randn(dev, &[batch, kv_heads, kv_seq, v_head_dim], dtype, seed ^ 2)?;
            let opts = AttentionOptions {
                causal,
                scale: None,
            };
            xkern::attention(&q, &k, &v, &opts)
        }
        NumericsOp::Reduce { op, shape, axis } => {
            let x = Tensor::randn(dev, shape, dtype, seed)?;
            let ax = axis.map_or(-1, |a| a as isize);
            match (*op, *axis) {
                (ReduceOp::Reduce(kind), Some(_)) => x.reduce(kind, ax, false),
                (ReduceOp::Reduce(kind), None) => x.reduce_all(kind),
                (ReduceOp::Softmax, _) => x.softmax(ax),
                (ReduceOp::LogSoftmax, _) => x.log_softmax(ax),
                (ReduceOp::RmsNorm, _) => x.rms_norm(None, 1e-6),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_ids_are_unique_and_every_op_is_covered() {
        for size in [Size::Tiny, Size::Moderate] {
            let cases = suite(size);
            let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), cases.len());
            let ops: Vec<&str> = cases.iter().map(|c| c.op.name()).collect();
            for op in [
                "matmul",
                "attention",
                "sum",
                "mean",
                "max",
                "min",
                "argmax",
                "argmin",
                "logsumexp",
                "softmax",
                "log_softmax",
                "rms_norm",
            ] {
                assert!(ops.contains(&op), "{op} missing from {size:?}");
            }
        }
    }
}
