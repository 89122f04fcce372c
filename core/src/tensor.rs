//! [`Tensor`]: shared device storage plus a view ([`Layout`]) and a dtype.
//!
//! Tensors are immutable values: ops return new tensors, views (`t`, `permute`, a
//! contiguous `reshape`) share the storage. Every method validates its input here, in
//! core, before the backend sees it; the op methods live in `crate::ops`.

use crate::{Backend, DType, Element, Error, HostData, HostSlice, Layout, Result, random};
use std::fmt;
use std::sync::Arc;

/// An n-dimensional array on a device.
pub struct Tensor<B: Backend> {
    pub(crate) storage: Arc<B::Storage>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: B,
}

impl<B: Backend> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor {
            storage: Arc::clone(&self.storage),
            layout: self.layout.clone(),
            dtype: self.dtype,
            device: self.device.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("device", &self.device.name())
            .field("dtype", &self.dtype)
            .field("shape", &self.layout.shape())
            .field("strides", &self.layout.strides())
            .finish()
    }
}

/// Checks that all `tensors` live on one device.
pub(crate) fn same_device<B: Backend>(op: &'static str, tensors: &[&Tensor<B>]) -> Result<()> {
    if let Some((first, rest)) = tensors.split_first() {
        for t in rest {
            if !first.device.same_device(&t.device) {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: first.device.name(),
                    rhs: t.device.name(),
                });
            }
        }
    }
    Ok(())
}

/// Errors unless `dtype` is a float dtype.
pub(crate) fn require_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype,
            reason: "the op needs f32, f16 or bf16".into(),
        })
    }
}

/// Errors unless `got == expected`.
pub(crate) fn require_dtype(op: &'static str, expected: DType, got: DType) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, expected, got })
    }
}

impl<B: Backend> Tensor<B> {
    /// Wraps a fresh contiguous storage.
    pub(crate) fn from_storage(
        device: &B,
        storage: B::Storage,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        Ok(Tensor {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape)?,
            dtype,
            device: device.clone(),
        })
    }

    /// A view of the same storage with another layout.
    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        Tensor {
            storage: Arc::clone(&self.storage),
            layout,
            dtype: self.dtype,
            device: self.device.clone(),
        }
    }

    /// Copies `data` (row-major, `shape`'s element count) to a new tensor on `device`.
    pub fn from_slice<T: Element>(device: &B, shape: &[usize], data: &[T]) -> Result<Self> {
        Self::from_host(device, shape, T::host_slice(data))
    }

    /// Copies a host buffer (row-major, `shape`'s element count) to a new tensor.
    pub fn from_host(device: &B, shape: &[usize], data: HostSlice<'_>) -> Result<Self> {
        let n = crate::layout::checked_numel(shape)?;
        if data.len() != n {
            return Err(Error::invalid(
                "from_slice",
                format!(
                    "shape {shape:?} holds {n} elements but {} were given",
                    data.len()
                ),
            ));
        }
        let storage = device.upload(data)?;
        Self::from_storage(device, storage, shape, data.dtype())
    }

    /// A tensor of zeros.
    pub fn zeros(device: &B, shape: &[usize], dtype: DType) -> Result<Self> {
        let n = crate::layout::checked_numel(shape)?;
        let storage = device.zeros(dtype, n)?;
        Self::from_storage(device, storage, shape, dtype)
    }

    /// Standard normal samples, the same for a `seed` on every backend and platform,
    /// rounded to `dtype` (nearest even). U32 is an error.
    pub fn randn(device: &B, shape: &[usize], dtype: DType, seed: u64) -> Result<Self> {
        require_float("randn", dtype)?;
        let n = crate::layout::checked_numel(shape)?;
        let values = random::normal_f32(seed, n);
        let data = HostData::from_f32(dtype, &values).ok_or(Error::UnsupportedDType {
            op: "randn",
            dtype,
            reason: String::new(),
        })?;
        Self::from_host(device, shape, data.as_slice())
    }

    /// Sizes of the axes.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device holding the data.
    pub fn device(&self) -> &B {
        &self.device
    }

    /// The view: shape, strides and offset into the storage.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Strides of the axes, in elements.
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// True when the view is row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// The backend storage (for backend authors and tests).
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }

    /// The elements in row-major logical order, as a host buffer.
    pub fn to_host(&self) -> Result<HostData> {
        let t = self.contiguous()?;
        t.device
            .download(&t.storage, t.dtype, t.layout.offset(), t.numel())
    }

    /// The elements in row-major logical order. Errors if `T` is not the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::ElementType {
                actual: self.dtype,
                requested: T::DTYPE,
            });
        }
        T::from_host(self.to_host()?).ok_or(Error::ElementType {
            actual: self.dtype,
            requested: T::DTYPE,
        })
    }

    /// The elements as f64, exactly (every dtype embeds in f64).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.to_host()?.to_f64())
    }

    /// A contiguous tensor with the same elements (the same tensor if already contiguous).
    pub fn contiguous(&self) -> Result<Self> {
        if self.layout.is_contiguous() {
            return Ok(self.clone());
        }
        let storage = self
            .device
            .copy_strided(&self.storage, self.dtype, &self.layout)?;
        Self::from_storage(&self.device, storage, self.shape(), self.dtype)
    }

    /// The transpose of the last two axes, as a view (no copy).
    pub fn t(&self) -> Result<Self> {
        Ok(self.with_layout(self.layout.transpose_last2()?))
    }

    /// Reorders axes: axis `i` of the result is axis `perm[i]` of `self`. A view.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        Ok(self.with_layout(self.layout.permute(perm)?))
    }

    /// The same elements (row-major order) under another shape: a view when `self` is
    /// contiguous, else a copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        match self.layout.reshape(shape)? {
            Some(layout) => Ok(self.with_layout(layout)),
            None => {
                let c = self.contiguous()?;
                let layout = c
                    .layout
                    .reshape(shape)?
                    .ok_or_else(|| Error::invalid("reshape", "copy not contiguous"))?;
                Ok(c.with_layout(layout))
            }
        }
    }

    /// Converts to `dtype`: floats round to nearest even, U32 converts to the nearest
    /// float. Float to U32 is an error (there is no one right rounding).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        if dtype == DType::U32 {
            return Err(Error::UnsupportedDType {
                op: "to_dtype",
                dtype: self.dtype,
                reason: "conversion from floats to u32 is not defined; argmax/argmin give indices"
                    .into(),
            });
        }
        let src = self.contiguous()?;
        let spec = CastSpec {
            from: self.dtype,
            to: dtype,
            offset: src.layout.offset(),
            len: src.numel(),
        };
        let storage = self.device.cast(&spec, &src.storage)?;
        Self::from_storage(&self.device, storage, self.shape(), dtype)
    }
}

/// What a cast converts: `len` contiguous elements starting at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CastSpec {
    /// Source dtype.
    pub from: DType,
    /// Destination dtype (never U32 unless equal to `from`).
    pub to: DType,
    /// First element of the source.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}
