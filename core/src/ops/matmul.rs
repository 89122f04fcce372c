//! Matrix multiply: `[..., M, K] @ [..., K, N] -> [..., M, N]` with broadcast batch axes,
//! either operand a strided view (e.g. from `.t()`), and an optional fused epilogue
//! `activation(acc + bias[N])`.
//!
//! Validation resolves broadcasting into per-operand batch strides (0 on broadcast axes),
//! so a backend walks `spec.batch()` matrices and reads each operand through
//! [`MatrixView`] without ever materialising a broadcast or a transpose.

// Indices and slices are axes of operands whose rank (≥ 2) the validation checks first.
#![allow(clippy::indexing_slicing)]

use crate::layout::{broadcast_shapes, broadcast_strides, checked_numel};
use crate::tensor::{require_dtype, require_float, same_device};
use crate::{Backend, DType, Error, Result, Tensor};

/// The activation of the fused epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(x, 0)` (NaN stays NaN).
    Relu,
    /// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, the exact form (PyTorch's default), not the tanh
    /// approximation.
    Gelu,
    /// `x · σ(x) = x / (1 + e^-x)`.
    Silu,
}

impl Activation {
    /// Every activation.
    pub const ALL: [Activation; 3] = [Activation::Relu, Activation::Gelu, Activation::Silu];

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
        }
    }

    /// The activation in f32, as backends compute it.
    pub fn apply_f32(self, x: f32) -> f32 {
        match self {
            // `x.max(0)` would turn NaN into 0; keep NaN.
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            // erfc, not 1 + erf: the latter cancels for x < 0 (relative error ~1e-1 at
            // x = −5, a flush to −0 below −5.5) where GELU is small but not zero.
            Activation::Gelu => 0.5 * x * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    /// The activation in f64, as the reference computes it.
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            // Φ(x) = erfc(−x/√2)/2: the same function as (1 + erf(x/√2))/2 without its
            // cancellation, which flushed the reference to −0 below x ≈ −8.3 (and cost
            // digits from x ≈ −3) where the exact value is tiny but not zero.
            Activation::Gelu => 0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// How to read one operand of a batched matmul: element `(batch b, row r, col c)` is at
/// `offset + Σ batch_index[d]·batch_strides[d] + r·row_stride + c·col_stride`, where
/// `batch_index` is `b` unravelled over [`MatmulSpec::batch_shape`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixView {
    /// First element.
    pub offset: usize,
    /// Stride between rows.
    pub row_stride: usize,
    /// Stride between columns (1 for row-major; not 1 for a transposed view).
    pub col_stride: usize,
    /// One stride per axis of [`MatmulSpec::batch_shape`]; 0 on broadcast axes.
    pub batch_strides: Vec<usize>,
}

/// A strided vector (the bias): element `j` at `offset + j·stride`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorView {
    /// First element.
    pub offset: usize,
    /// Stride between elements.
    pub stride: usize,
}

/// A validated matmul.
///
/// Semantics: `out[b, i, j] = act(Σ_k a[b, i, k] · b[b, k, j] + bias[j])`, accumulated in
/// at least f32, rounded once to `dtype`. `k == 0` gives `act(bias)` (zeros without bias).
/// Output: contiguous `[batch, m, n]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulSpec {
    /// Element type of a, b, bias and the output (never U32).
    pub dtype: DType,
    /// The broadcast batch axes of the output.
    pub batch_shape: Vec<usize>,
    /// Rows of a and of the output.
    pub m: usize,
    /// Columns of a, rows of b.
    pub k: usize,
    /// Columns of b and of the output.
    pub n: usize,
    /// The left operand.
    pub a: MatrixView,
    /// The right operand.
    pub b: MatrixView,
    /// Optional bias of length `n`.
    pub bias: Option<VectorView>,
    /// Optional activation, applied after the bias.
    pub activation: Option<Activation>,
}

impl MatmulSpec {
    /// Number of matrices (product of `batch_shape`).
    pub fn batch(&self) -> usize {
        self.batch_shape.iter().product()
    }

    /// The output shape: `batch_shape + [m, n]`.
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = self.batch_shape.clone();
        s.extend([self.m, self.n]);
        s
    }

    fn batch_offset(&self, view: &MatrixView, mut b: usize) -> usize {
        let mut off = view.offset;
        for (&d, &s) in self.batch_shape.iter().zip(&view.batch_strides).rev() {
            off += (b % d) * s;
            b /= d;
        }
        off
    }

    /// Offset of the first element of matrix `b` of the left operand.
    pub fn a_offset(&self, batch_index: usize) -> usize {
        self.batch_offset(&self.a, batch_index)
    }

    /// Offset of the first element of matrix `b` of the right operand.
    pub fn b_offset(&self, batch_index: usize) -> usize {
        self.batch_offset(&self.b, batch_index)
    }

    /// Validates `a @ b` (+ bias, activation) and builds the spec.
    pub fn new<B: Backend>(
        a: &Tensor<B>,
        b: &Tensor<B>,
        bias: Option<&Tensor<B>>,
        activation: Option<Activation>,
    ) -> Result<MatmulSpec> {
        const OP: &str = "matmul";
        let mut all = vec![a, b];
        all.extend(bias);
        same_device(OP, &all)?;
        require_float(OP, a.dtype())?;
        require_dtype(OP, a.dtype(), b.dtype())?;
        if let Some(bias) = bias {
            require_dtype(OP, a.dtype(), bias.dtype())?;
        }
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 {
            return Err(Error::shapes(
                OP,
                sa,
                sb,
                "both operands need at least two axes ([..., M, K] and [..., K, N])",
            ));
        }
        let (ra, rb) = (sa.len(), sb.len());
        let (m, k, k2, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 2], sb[rb - 1]);
        if k != k2 {
            return Err(Error::shapes(
                OP,
                sa,
                sb,
                format!("inner dimensions differ (K = {k} vs {k2})"),
            ));
        }
        let batch_shape = broadcast_shapes(OP, &sa[..ra - 2], &sb[..rb - 2])?;
        let mut out_shape = batch_shape.clone();
        out_shape.extend([m, n]);
        checked_numel(&out_shape)?;
        let view = |t: &Tensor<B>| {
            let (s, st) = (t.shape(), t.strides());
            let r = s.len();
            MatrixView {
                offset: t.layout().offset(),
                row_stride: st[r - 2],
                col_stride: st[r - 1],
                batch_strides: broadcast_strides(&s[..r - 2], &st[..r - 2], &batch_shape),
            }
        };
        let bias = match bias {
            None => None,
            Some(t) => {
                if t.shape() != [n] {
                    return Err(Error::shapes(
                        OP,
                        t.shape(),
                        &[n],
                        format!("bias must have shape [N] = [{n}]"),
                    ));
                }
                Some(VectorView {
                    offset: t.layout().offset(),
                    stride: t.strides()[0],
                })
            }
        };
        Ok(MatmulSpec {
            dtype: a.dtype(),
            m,
            k,
            n,
            a: view(a),
            b: view(b),
            bias,
            activation,
            batch_shape,
        })
    }
}

impl<B: Backend> Tensor<B> {
    /// Matrix product `[..., M, K] @ [..., K, N] -> [..., M, N]`, batch axes broadcast;
    /// either operand may be a transposed or permuted view.
    pub fn matmul(&self, rhs: &Tensor<B>) -> Result<Tensor<B>> {
        self.matmul_fused(rhs, None, None)
    }

    /// Matrix product with a fused epilogue: `activation(self @ rhs + bias)`, where `bias`
    /// has shape `[N]` and the activation is applied after the bias.
    pub fn matmul_fused(
        &self,
        rhs: &Tensor<B>,
        bias: Option<&Tensor<B>>,
        activation: Option<Activation>,
    ) -> Result<Tensor<B>> {
        let spec = MatmulSpec::new(self, rhs, bias, activation)?;
        let storage = self.device.matmul(
            &spec,
            &self.storage,
            &rhs.storage,
            bias.map(|t| &*t.storage),
        )?;
        Tensor::from_storage(&self.device, storage, &spec.output_shape(), spec.dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::Activation;

    /// The reference GELU is accurate in the far negative tail: values from an
    /// independent erfc (Python's `math.erfc`), `x/2 · erfc(−x/√2)`.
    #[test]
    fn reference_gelu_is_accurate_in_the_tail() {
        for (x, want) in [
            (-10.0, -7.619853024160593e-23),
            (-8.5, -8.057604598872852e-17),
            (-5.75, -2.565749160993427e-8),
            (-1.0, -0.15865525393145707),
            (3.0, 2.99595030590511),
        ] {
            let got = Activation::Gelu.apply_f64(x);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs(),
                "gelu({x}) = {got:e}, expected {want:e}"
            );
        }
    }
}
