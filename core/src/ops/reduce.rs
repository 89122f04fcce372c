//! Reductions over one axis or all axes, and the row normalisations built on them
//! (softmax, log-softmax, RMS norm).
//!
//! Every call is reduced to the canonical problem `[outer, axis_len, inner]` over a
//! contiguous input (core makes a strided input contiguous first), so one kernel family
//! serves every axis: reducing the last axis is `inner = 1`, the first is `outer = 1`,
//! all axes is `[1, numel, 1]`.
//!
//! Semantics (DESIGN.md): NaN propagates (max/min report NaN, argmax/argmin the index of
//! the first NaN); ties go to the first index; empty axis: sum 0, mean NaN, logsumexp −∞,
//! max/min/argmax/argmin an [`Error::EmptyReduction`]; logsumexp of a row whose max is
//! ±∞ is that max. Softmax and log-softmax use `exp(x − max)`; a row whose max is −∞ or
//! +∞ (or holds NaN) therefore gives NaN, as PyTorch does.

// Indices and slices are axes below the rank, normalised and checked by `axis_index`
// before use.
#![allow(clippy::indexing_slicing)]

use crate::layout::{checked_numel, resolve_axis};
use crate::tensor::{require_dtype, require_float, same_device};
use crate::{Backend, DType, Error, Result, Tensor};

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Σ x (0 for an empty axis).
    Sum,
    /// Σ x / n (NaN for an empty axis).
    Mean,
    /// Largest element, NaN if any element is NaN.
    Max,
    /// Smallest element, NaN if any element is NaN.
    Min,
    /// Index (U32) of the first largest element, or of the first NaN.
    ArgMax,
    /// Index (U32) of the first smallest element, or of the first NaN.
    ArgMin,
    /// `log Σ exp(x)`, computed stably (−∞ for an empty axis).
    LogSumExp,
}

impl ReduceKind {
    /// Every kind.
    pub const ALL: [ReduceKind; 7] = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::ArgMax,
        ReduceKind::ArgMin,
        ReduceKind::LogSumExp,
    ];

    /// The lower-case name (`sum`, `argmax`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "sum",
            ReduceKind::Mean => "mean",
            ReduceKind::Max => "max",
            ReduceKind::Min => "min",
            ReduceKind::ArgMax => "argmax",
            ReduceKind::ArgMin => "argmin",
            ReduceKind::LogSumExp => "logsumexp",
        }
    }

    /// Parses a name as printed by [`ReduceKind::name`].
    pub fn parse(name: &str) -> Option<ReduceKind> {
        ReduceKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The output dtype for an input of `dtype`.
    pub fn output_dtype(self, dtype: DType) -> DType {
        match self {
            ReduceKind::ArgMax | ReduceKind::ArgMin => DType::U32,
            _ => dtype,
        }
    }

    /// True for the kinds that have no answer over an empty axis.
    pub fn needs_nonempty(self) -> bool {
        matches!(
            self,
            ReduceKind::Max | ReduceKind::Min | ReduceKind::ArgMax | ReduceKind::ArgMin
        )
    }
}

/// A validated reduction of the contiguous `[outer, axis_len, inner]` input starting at
/// `offset` to a contiguous `[outer, inner]` output of `kind.output_dtype(dtype)`.
/// When `kind.needs_nonempty()`, `axis_len ≥ 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceSpec {
    /// Which reduction.
    pub kind: ReduceKind,
    /// Input dtype (a float).
    pub dtype: DType,
    /// Product of the axes before the reduced one.
    pub outer: usize,
    /// Length of the reduced axis.
    pub axis_len: usize,
    /// Product of the axes after the reduced one.
    pub inner: usize,
    /// First input element.
    pub offset: usize,
}

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// `exp(x − max) / Σ exp(x − max)`.
    Softmax,
    /// `x − max − log Σ exp(x − max)`.
    LogSoftmax,
    /// `x / sqrt(mean(x²) + eps) · weight`.
    RmsNorm {
        /// Added to the mean square (finite, ≥ 0).
        eps: f32,
    },
}

impl NormKind {
    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            NormKind::Softmax => "softmax",
            NormKind::LogSoftmax => "log_softmax",
            NormKind::RmsNorm { .. } => "rms_norm",
        }
    }
}

/// A validated normalisation along the axis of the contiguous `[outer, axis_len, inner]`
/// input starting at `offset`; output contiguous, same shape and dtype. `weight` (RMS
/// norm only, optional) has `axis_len` elements, read through the view.
#[derive(Clone, Debug, PartialEq)]
pub struct NormSpec {
    /// Which normalisation.
    pub kind: NormKind,
    /// Element type of input, weight and output (a float).
    pub dtype: DType,
    /// Product of the axes before the normalised one.
    pub outer: usize,
    /// Length of the normalised axis.
    pub axis_len: usize,
    /// Product of the axes after the normalised one.
    pub inner: usize,
    /// First input element.
    pub offset: usize,
    /// The weight vector, when given.
    pub weight: Option<crate::VectorView>,
}

/// `(outer, axis_len, inner)` of `shape` around `axis`.
fn canonical(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

impl<B: Backend> Tensor<B> {
    /// Reduces `axis` (negative counts from the end) with `kind`; `keepdim` keeps it as
    /// an axis of length 1.
    pub fn reduce(&self, kind: ReduceKind, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        let op = kind.name();
        let ax = resolve_axis(op, axis, self.rank())?;
        let mut out_shape = self.shape().to_vec();
        if keepdim {
            out_shape[ax] = 1;
        } else {
            out_shape.remove(ax);
        }
        self.reduce_canonical(kind, Some(ax), &out_shape)
    }

    /// Reduces every axis with `kind` to a tensor of shape `[]` (argmax/argmin give the
    /// row-major flat index).
    pub fn reduce_all(&self, kind: ReduceKind) -> Result<Tensor<B>> {
        self.reduce_canonical(kind, None, &[])
    }

    fn reduce_canonical(
        &self,
        kind: ReduceKind,
        axis: Option<usize>,
        out_shape: &[usize],
    ) -> Result<Tensor<B>> {
        let op = kind.name();
        require_float(op, self.dtype)?;
        let (outer, axis_len, inner) = match axis {
            Some(ax) => canonical(self.shape(), ax),
            None => (1, self.numel(), 1),
        };
        if kind.needs_nonempty() && axis_len == 0 {
            return Err(Error::EmptyReduction {
                op,
                axis,
                shape: self.shape().to_vec(),
            });
        }
        if matches!(kind, ReduceKind::ArgMax | ReduceKind::ArgMin) && axis_len > 1 << 32 {
            return Err(Error::invalid(
                op,
                format!("{axis_len} positions do not fit u32 indices"),
            ));
        }
        checked_numel(out_shape)?;
        let x = self.contiguous()?;
        let spec = ReduceSpec {
            kind,
            dtype: self.dtype,
            outer,
            axis_len,
            inner,
            offset: x.layout.offset(),
        };
        let storage = self.device.reduce(&spec, &x.storage)?;
        Tensor::from_storage(
            &self.device,
            storage,
            out_shape,
            kind.output_dtype(self.dtype),
        )
    }

    /// Sum over `axis`.
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::Sum, axis, keepdim)
    }

    /// Mean over `axis`.
    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::Mean, axis, keepdim)
    }

    /// Maximum over `axis` (NaN if the row holds NaN).
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::Max, axis, keepdim)
    }

    /// Minimum over `axis` (NaN if the row holds NaN).
    pub fn min(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::Min, axis, keepdim)
    }

    /// Index (U32) of the first maximum over `axis` (or of the first NaN).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::ArgMax, axis, keepdim)
    }

    /// Index (U32) of the first minimum over `axis` (or of the first NaN).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::ArgMin, axis, keepdim)
    }

    /// `log Σ exp(x)` over `axis`, computed stably.
    pub fn logsumexp(&self, axis: isize, keepdim: bool) -> Result<Tensor<B>> {
        self.reduce(ReduceKind::LogSumExp, axis, keepdim)
    }

    /// Sum of every element, shape `[]`.
    pub fn sum_all(&self) -> Result<Tensor<B>> {
        self.reduce_all(ReduceKind::Sum)
    }

    /// Mean of every element, shape `[]`.
    pub fn mean_all(&self) -> Result<Tensor<B>> {
        self.reduce_all(ReduceKind::Mean)
    }

    /// Maximum of every element, shape `[]`.
    pub fn max_all(&self) -> Result<Tensor<B>> {
        self.reduce_all(ReduceKind::Max)
    }

    /// Minimum of every element, shape `[]`.
    pub fn min_all(&self) -> Result<Tensor<B>> {
        self.reduce_all(ReduceKind::Min)
    }

    fn normalize(
        &self,
        kind: NormKind,
        axis: isize,
        weight: Option<&Tensor<B>>,
    ) -> Result<Tensor<B>> {
        let op = kind.name();
        let ax = resolve_axis(op, axis, self.rank())?;
        require_float(op, self.dtype)?;
        let (outer, axis_len, inner) = canonical(self.shape(), ax);
        let weight_view = match weight {
            None => None,
            Some(w) => {
                same_device(op, &[self, w])?;
                require_dtype(op, self.dtype, w.dtype)?;
                if w.shape() != [axis_len] {
                    return Err(Error::shapes(
                        op,
                        self.shape(),
                        w.shape(),
                        format!("weight must have shape [{axis_len}]"),
                    ));
                }
                Some(crate::VectorView {
                    offset: w.layout.offset(),
                    stride: w.strides()[0],
                })
            }
        };
        let x = self.contiguous()?;
        let spec = NormSpec {
            kind,
            dtype: self.dtype,
            outer,
            axis_len,
            inner,
            offset: x.layout.offset(),
            weight: weight_view,
        };
        let storage = self
            .device
            .normalize(&spec, &x.storage, weight.map(|w| &*w.storage))?;
        Tensor::from_storage(&self.device, storage, self.shape(), self.dtype)
    }

    /// Softmax along `axis`.
    pub fn softmax(&self, axis: isize) -> Result<Tensor<B>> {
        self.normalize(NormKind::Softmax, axis, None)
    }

    /// Log-softmax along `axis`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor<B>> {
        self.normalize(NormKind::LogSoftmax, axis, None)
    }

    /// RMS norm over the last axis: `x / sqrt(mean(x²) + eps) · weight`; `weight` has the
    /// last axis's length; `eps` must be finite and non-negative.
    pub fn rms_norm(&self, weight: Option<&Tensor<B>>, eps: f32) -> Result<Tensor<B>> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::invalid(
                "rms_norm",
                format!("eps must be finite and non-negative, got {eps}"),
            ));
        }
        self.normalize(NormKind::RmsNorm { eps }, -1, weight)
    }
}
