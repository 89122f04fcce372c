//! Axis reductions and row normalisations (`reduce.wgsl`, `normalize.wgsl`).
//!
//! Algorithm: one 128-invocation workgroup per output row of the canonical
//! `[outer, axis, inner]` problem; invocations fold strided slices of the axis, then a
//! workgroup tree combines them (the spec's NaN, tie and empty-axis rules are in the
//! WGSL). The grid is `outer · inner` groups, folded past the per-dimension limit.
//! Subgroup operations are not used yet: the tree works on every adapter.

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, Slot, assemble};
use xkern_core::{DType, NormKind, NormSpec, ReduceKind, ReduceSpec, Result};

const REDUCE_WGSL: &str = include_str!("reduce.wgsl");
const NORMALIZE_WGSL: &str = include_str!("normalize.wgsl");

fn kind_code(kind: ReduceKind) -> u32 {
    match kind {
        ReduceKind::Sum => 0,
        ReduceKind::Mean => 1,
        ReduceKind::Max => 2,
        ReduceKind::Min => 3,
        ReduceKind::ArgMax => 4,
        ReduceKind::ArgMin => 5,
        ReduceKind::LogSumExp => 6,
    }
}

fn norm_code(kind: NormKind) -> u32 {
    match kind {
        NormKind::Softmax => 0,
        NormKind::LogSoftmax => 1,
        NormKind::RmsNorm { .. } => 2,
    }
}

fn reduce_bindings(dtype: DType) -> [(&'static str, Slot); 2] {
    [("x", Slot::Input(dtype)), ("out", Slot::OutWords)]
}

fn norm_bindings(dtype: DType) -> [(&'static str, Slot); 3] {
    [
        ("x", Slot::Input(dtype)),
        ("w", Slot::Input(dtype)),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of one reduction (also used by the naga tests).
pub(crate) fn reduce_source(dtype: DType, kind: ReduceKind) -> String {
    assemble(
        REDUCE_WGSL,
        &reduce_bindings(dtype),
        &[("KIND", kind_code(kind).to_string())],
    )
}

/// The WGSL of one normalisation (also used by the naga tests).
pub(crate) fn normalize_source(dtype: DType, kind: NormKind, weight: bool) -> String {
    assemble(
        NORMALIZE_WGSL,
        &norm_bindings(dtype),
        &[
            ("KIND", norm_code(kind).to_string()),
            ("WEIGHT", u32::from(weight).to_string()),
        ],
    )
}

impl WgpuBackend {
    /// [`xkern_core::Backend::reduce`].
    pub(crate) fn reduce_impl(&self, spec: &ReduceSpec, x: &WgpuStorage) -> Result<WgpuStorage> {
        self.check_dtype(spec.kind.name(), spec.dtype)?;
        let rows = spec.outer * spec.inner;
        let key = format!("reduce/{}/{}", spec.dtype, kind_code(spec.kind));
        let kernel = self.kernel(&key, &reduce_bindings(spec.dtype), || {
            reduce_source(spec.dtype, spec.kind)
        })?;
        let out_dtype = spec.kind.output_dtype(spec.dtype);
        self.record(|rec| {
            // Float results are written as f32 bits, indices as u32.
            let wide = if out_dtype == DType::U32 {
                DType::U32
            } else {
                DType::F32
            };
            let out = self.alloc_storage(wide, rows)?;
            let params = Params::default()
                .u(spec.axis_len)?
                .u(spec.inner.max(1))?
                .u(spec.offset)?;
            rec.dispatch(&kernel, &[x, &out], rows, params)?;
            if out_dtype == DType::U32 {
                Ok(out)
            } else {
                self.finish_f32(rec, out, out_dtype, rows)
            }
        })
    }

    /// [`xkern_core::Backend::normalize`].
    pub(crate) fn normalize_impl(
        &self,
        spec: &NormSpec,
        x: &WgpuStorage,
        weight: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.check_dtype(spec.kind.name(), spec.dtype)?;
        let rows = spec.outer * spec.inner;
        let len = rows * spec.axis_len;
        let has_w = weight.is_some();
        let key = format!(
            "normalize/{}/{}/{}",
            spec.dtype,
            norm_code(spec.kind),
            u32::from(has_w)
        );
        let kernel = self.kernel(&key, &norm_bindings(spec.dtype), || {
            normalize_source(spec.dtype, spec.kind, has_w)
        })?;
        let eps = match spec.kind {
            NormKind::RmsNorm { eps } => eps,
            _ => 0.0,
        };
        let (w_off, w_stride) = spec
            .weight
            .as_ref()
            .map_or((0, 0), |v| (v.offset, v.stride));
        self.record(|rec| {
            let out = self.alloc_storage(DType::F32, len)?;
            let groups = if len == 0 { 0 } else { rows };
            let params = Params::default()
                .u(spec.axis_len)?
                .u(spec.inner.max(1))?
                .u(spec.offset)?
                .f(eps)
                .u(w_off)?
                .u(w_stride)?;
            rec.dispatch(&kernel, &[x, weight.unwrap_or(x), &out], groups, params)?;
            self.finish_f32(rec, out, spec.dtype, len)
        })
    }
}
