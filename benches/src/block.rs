//! A Llama-style attention block written once against xkern's API, so the same code runs
//! on every backend: RMS norm, q/k/v projections, causal grouped-query attention over
//! `[B, S, H, D]` projections read as `[B, H, S, D]` views (no copy), and the output
//! projection with its bias fused into the matmul.

use xkern::core::reference::{self, HostTensor};
use xkern::{AttentionOptions, DType, Device, Result, Tensor};

/// Shape of the block.
#[derive(Clone, Copy, Debug)]
pub struct BlockShape {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Model width (= q_heads × head_dim).
    pub hidden: usize,
    /// Query heads.
    pub q_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl BlockShape {
    /// Useful floating-point operations of one forward pass (causal attention counts
    /// only visible pairs).
    pub fn flops(&self) -> f64 {
        let rows = (self.batch * self.seq) as f64;
        let h = self.hidden as f64;
        let kv = (self.kv_heads * self.head_dim) as f64;
        let pairs = (self.seq * (self.seq + 1) / 2) as f64;
        2.0 * rows * h * (h + 2.0 * kv)
            + 4.0 * (self.batch * self.q_heads * self.head_dim) as f64 * pairs
            + 2.0 * rows * h * h
    }
}

/// The block's weights on one device.
pub struct AttentionBlock {
    shape: BlockShape,
    norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    bo: Tensor,
}

impl AttentionBlock {
    /// Random weights (the same values on every backend for a seed), scaled by
    /// 1/√hidden so activations stay of order one.
    pub fn new(dev: &Device, shape: BlockShape, dtype: DType, seed: u64) -> Result<Self> {
        let (h, kv) = (shape.hidden, shape.kv_heads * shape.head_dim);
        let scale = 1.0 / (h as f32).sqrt();
        let weight = |rows: usize, cols: usize, s: u64| -> Result<Tensor> {
            let w: Vec<f32> = xkern::core::random::normal_f32(seed ^ s, rows * cols)
                .iter()
                .map(|x| x * scale)
                .collect();
            Tensor::from_slice(dev, &[rows, cols], &w)?.to_dtype(dtype)
        };
        let ones = vec![1.0f32; h];
        Ok(AttentionBlock {
            shape,
            norm: Tensor::from_slice(dev, &[h], &ones)?.to_dtype(dtype)?,
            wq: weight(h, h, 1)?,
            wk: weight(h, kv, 2)?,
            wv: weight(h, kv, 3)?,
            wo: weight(h, h, 4)?,
            bo: Tensor::randn(dev, &[h], dtype, seed ^ 5)?,
        })
    }

    /// A random input `[batch · seq, hidden]`.
    pub fn input(&self, dev: &Device, dtype: DType, seed: u64) -> Result<Tensor> {
        Tensor::randn(
            dev,
            &[self.shape.batch * self.shape.seq, self.shape.hidden],
            dtype,
            seed,
        )
    }

    /// One forward pass: `[batch · seq, hidden] -> [batch · seq, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.shape;
        let heads = |t: Tensor, n: usize| {
            t.reshape(&[s.batch, s.seq, n, s.head_dim])?
                .permute(&[0, 2, 1, 3])
        };
        let h = x.rms_norm(Some(&self.norm), 1e-6)?;
        let q = heads(h.matmul(&self.wq)?, s.q_heads)?;
        let k = heads(h.matmul(&self.wk)?, s.kv_heads)?;
        let v = heads(h.matmul(&self.wv)?, s.kv_heads)?;
        let o = xkern::attention(
            &q,
            &k,
            &v,
            &AttentionOptions {
                causal: true,
                ..Default::default()
            },
        )?;
        let o = o
            .permute(&[0, 2, 1, 3])?
            .reshape(&[s.batch * s.seq, s.hidden])?;
        o.matmul_fused(&self.wo, Some(&self.bo), None)
    }

    /// The same forward pass in f64 on the host, rounding every op's output to `dtype`
    /// as the device does, so only accumulation order separates the two.
    pub fn reference(&self, x: &Tensor, dtype: DType) -> Result<HostTensor> {
        let s = self.shape;
        let host =
            |t: &Tensor| -> Result<HostTensor> { Ok(HostTensor::new(t.shape(), t.to_f64_vec()?)) };
        let round = |mut t: HostTensor| {
            t.data
                .iter_mut()
                .for_each(|v| *v = f64::from(dtype.round_f32(*v as f32)));
            t
        };
        let heads = |t: HostTensor, n: usize| {
            let mut out = vec![0.0; t.data.len()];
            for b in 0..s.batch {
                for i in 0..s.seq {
                    for hh in 0..n {
                        let src = ((b * s.seq + i) * n + hh) * s.head_dim;
                        let dst = ((b * n + hh) * s.seq + i) * s.head_dim;
                        out[dst..dst + s.head_dim].copy_from_slice(&t.data[src..src + s.head_dim]);
                    }
                }
            }
            HostTensor::new(&[s.batch, n, s.seq, s.head_dim], out)
        };
        let norm = host(&self.norm)?;
        let h = round(reference::rms_norm(
            &host(x)?,
            Some(&norm.data),
            1e-6_f32.into(),
        ));
        let q = heads(
            round(reference::matmul(&h, &host(&self.wq)?, None, None)),
            s.q_heads,
        );
        let k = heads(
            round(reference::matmul(&h, &host(&self.wk)?, None, None)),
            s.kv_heads,
        );
        let v = heads(
            round(reference::matmul(&h, &host(&self.wv)?, None, None)),
            s.kv_heads,
        );
        let o = round(reference::attention(
            &q,
            &k,
            &v,
            true,
            1.0 / (s.head_dim as f64).sqrt(),
        ));
        // [B, H, S, D] back to [B·S, hidden].
        let mut flat = vec![0.0; o.data.len()];
        for b in 0..s.batch {
            for hh in 0..s.q_heads {
                for i in 0..s.seq {
                    let src = ((b * s.q_heads + hh) * s.seq + i) * s.head_dim;
                    let dst = ((b * s.seq + i) * s.q_heads + hh) * s.head_dim;
                    flat[dst..dst + s.head_dim].copy_from_slice(&o.data[src..src + s.head_dim]);
                }
            }
        }
        let o = HostTensor::new(&[s.batch * s.seq, s.hidden], flat);
        let bias = host(&self.bo)?;
        Ok(reference::matmul(
            &o,
            &host(&self.wo)?,
            Some(&bias.data),
            None,
        ))
    }
}
