//! Scaled dot-product attention, `softmax(q·kᵀ·scale [+ causal mask]) · v`.
//!
//! Shapes `q [B, Hq, Sq, D]`, `k [B, Hkv, Skv, D]`, `v [B, Hkv, Skv, Dv]`, output
//! `[B, Hq, Sq, Dv]`. Query head `h` reads key/value head `h / (Hq / Hkv)` (GQA; MQA when
//! `Hkv = 1`). Causal masking is aligned bottom-right, the KV-cache convention: query `i`
//! sees keys `j ≤ i + Skv − Sq`. A query that sees no key gets zeros. Any layout of the
//! four axes is accepted (a `[B, S, H, D]` tensor permuted to `[B, H, S, D]` is read in
//! place).

// Indices are axis numbers of 4-D operands whose rank the validation checks first.
#![allow(clippy::indexing_slicing)]

use crate::tensor::{require_dtype, require_float, same_device};
use crate::{Backend, DType, Error, Result, Tensor};

/// Options of [`attention`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionOptions {
    /// Apply the bottom-right aligned causal mask.
    pub causal: bool,
    /// Multiplier of the scores; `None` means `1/√D`.
    pub scale: Option<f32>,
}

/// How to read a 4-D operand `[batch, heads, seq, dim]`: element `(b, h, s, d)` is at
/// `offset + b·strides[0] + h·strides[1] + s·strides[2] + d·strides[3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View4 {
    /// First element.
    pub offset: usize,
    /// Strides of batch, head, sequence and feature axes.
    pub strides: [usize; 4],
}

impl View4 {
    /// Offset of element `(b, h, s, 0)`.
    pub fn row(&self, b: usize, h: usize, s: usize) -> usize {
        self.offset + b * self.strides[0] + h * self.strides[1] + s * self.strides[2]
    }
}

/// A validated attention call. Semantics in the module documentation; the output is
/// contiguous `[batch, q_heads, q_seq, v_head_dim]`, in `dtype`, computed in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Element type of q, k, v and the output.
    pub dtype: DType,
    /// Batch size.
    pub batch: usize,
    /// Query heads (a positive multiple of `kv_heads`, or 0).
    pub q_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query positions.
    pub q_seq: usize,
    /// Key/value positions.
    pub kv_seq: usize,
    /// Feature size of q and k (≥ 1).
    pub head_dim: usize,
    /// Feature size of v and the output.
    pub v_head_dim: usize,
    /// Multiplier of `q·kᵀ` (finite).
    pub scale: f32,
    /// Bottom-right aligned causal mask.
    pub causal: bool,
    /// Queries.
    pub q: View4,
    /// Keys.
    pub k: View4,
    /// Values.
    pub v: View4,
}

impl AttentionSpec {
    /// The key/value head that query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        h / (self.q_heads / self.kv_heads)
    }

    /// How many keys query `i` sees: keys `0..visible_keys(i)`.
    pub fn visible_keys(&self, i: usize) -> usize {
        if self.causal {
            (i + 1 + self.kv_seq)
                .saturating_sub(self.q_seq)
                .min(self.kv_seq)
        } else {
            self.kv_seq
        }
    }

    /// The output shape.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.q_heads, self.q_seq, self.v_head_dim]
    }

    /// Validates q, k, v and options and builds the spec.
    pub fn new<B: Backend>(
        q: &Tensor<B>,
        k: &Tensor<B>,
        v: &Tensor<B>,
        opts: &AttentionOptions,
    ) -> Result<Self> {
        const OP: &str = "attention";
        same_device(OP, &[q, k, v])?;
        require_float(OP, q.dtype())?;
        require_dtype(OP, q.dtype(), k.dtype())?;
        require_dtype(OP, q.dtype(), v.dtype())?;
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            if t.rank() != 4 {
                return Err(Error::shapes(
                    OP,
                    t.shape(),
                    &[],
                    format!("{name} must have four axes [batch, heads, seq, head_dim]"),
                ));
            }
        }
        let (sq, sk, sv) = (q.shape(), k.shape(), v.shape());
        if sq[0] != sk[0] || sk[0] != sv[0] {
            return Err(Error::shapes(
                OP,
                sq,
                sk,
                format!("batch sizes differ (q {}, k {}, v {})", sq[0], sk[0], sv[0]),
            ));
        }
        if sq[3] != sk[3] {
            return Err(Error::shapes(OP, sq, sk, "q and k need the same head_dim"));
        }
        if sk[1] != sv[1] || sk[2] != sv[2] {
            return Err(Error::shapes(
                OP,
                sk,
                sv,
                "k and v need the same heads and sequence length",
            ));
        }
        let (q_heads, kv_heads) = (sq[1], sk[1]);
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            return Err(Error::InvalidHeads { q_heads, kv_heads });
        }
        let head_dim = sq[3];
        if head_dim == 0 {
            return Err(Error::shapes(OP, sq, sk, "head_dim must be at least 1"));
        }
        let scale = opts.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
        if !scale.is_finite() {
            return Err(Error::invalid(
                OP,
                format!("scale must be finite, got {scale}"),
            ));
        }
        crate::layout::checked_numel(&[sq[0], q_heads, sq[2], sv[3]])?;
        let view = |t: &Tensor<B>| {
            let s = t.strides();
            View4 {
                offset: t.layout().offset(),
                strides: [s[0], s[1], s[2], s[3]],
            }
        };
        Ok(AttentionSpec {
            dtype: q.dtype(),
            batch: sq[0],
            q_heads,
            kv_heads,
            q_seq: sq[2],
            kv_seq: sk[2],
            head_dim,
            v_head_dim: sv[3],
            scale,
            causal: opts.causal,
            q: view(q),
            k: view(k),
            v: view(v),
        })
    }
}

/// Fused scaled dot-product attention; see the module documentation for the semantics.
pub fn attention<B: Backend>(
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    opts: &AttentionOptions,
) -> Result<Tensor<B>> {
    let spec = AttentionSpec::new(q, k, v, opts)?;
    let storage = q
        .device
        .attention(&spec, &q.storage, &k.storage, &v.storage)?;
    Tensor::from_storage(&q.device, storage, &spec.output_shape(), spec.dtype)
}
