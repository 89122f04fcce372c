//! Casts and strided copies (`cast.wgsl`, `strided.wgsl`), and the final rounding of f32
//! results to 16-bit outputs that the compute kernels share.
//!
//! Both kernels move bits, not floats: conversions are integer code (see `common.wgsl`),
//! so results equal the host's round-to-nearest-even exactly, denormals included. 16-bit
//! outputs are written a word (two elements) per invocation, so writes never share a word.

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, Recording, Slot, assemble};
use xkern_core::{CastSpec, DType, Layout, Result};

const CAST_WGSL: &str = include_str!("cast.wgsl");
const STRIDED_WGSL: &str = include_str!("strided.wgsl");
const WG: usize = 256;

/// Cast-kernel codes of a source dtype (`FROM` in `cast.wgsl`).
fn from_code(from: DType, to: DType) -> u32 {
    match from {
        DType::F32 => 0,
        DType::U32 if to == DType::U32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::U32 => 3,
    }
}

/// Cast-kernel code of a destination dtype (`TO` in `cast.wgsl`).
fn to_code(to: DType) -> u32 {
    match to {
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::F32 | DType::U32 => 0,
    }
}

/// The WGSL of the cast from `from` to `to` (also used by the naga tests).
pub(crate) fn cast_source(from: DType, to: DType) -> String {
    assemble(
        CAST_WGSL,
        &[("src", Slot::Words), ("dst", Slot::OutWords)],
        &[
            ("FROM", from_code(from, to).to_string()),
            ("TO", to_code(to).to_string()),
        ],
    )
}

/// The WGSL of the strided copy of 32-bit (`wide`) or 16-bit elements.
pub(crate) fn strided_source(wide: bool) -> String {
    assemble(
        STRIDED_WGSL,
        &[
            ("src", Slot::Words),
            ("view_meta", Slot::Words),
            ("dst", Slot::OutWords),
        ],
        &[("WIDE", u32::from(wide).to_string())],
    )
}

/// Invocations of a kernel that writes `len` elements of `to`.
fn invocations(to: DType, len: usize) -> usize {
    if to.size_in_bytes() == 2 {
        len.div_ceil(2)
    } else {
        len
    }
}

impl WgpuBackend {
    /// Records the cast of `len` elements of `src` from element `offset`; returns the
    /// new storage.
    pub(crate) fn record_cast(
        &self,
        rec: &mut Recording<'_>,
        src: &WgpuStorage,
        from: DType,
        to: DType,
        offset: usize,
        len: usize,
    ) -> Result<WgpuStorage> {
        let dst = self.alloc_storage(to, len)?;
        let (fc, tc) = (from_code(from, to), to_code(to));
        let bindings = [("src", Slot::Words), ("dst", Slot::OutWords)];
        let kernel = self.kernel(&format!("cast/{fc}/{tc}"), &bindings, || {
            cast_source(from, to)
        })?;
        let groups = invocations(to, len).div_ceil(WG);
        let params = Params::default().u(offset)?.u(len)?;
        rec.dispatch(&kernel, &[src, &dst], groups, params)?;
        Ok(dst)
    }

    /// Rounds an f32 result to `dtype` (no-op for f32): the last step of every compute
    /// kernel with a 16-bit output.
    pub(crate) fn finish_f32(
        &self,
        rec: &mut Recording<'_>,
        out: WgpuStorage,
        dtype: DType,
        len: usize,
    ) -> Result<WgpuStorage> {
        if dtype == DType::F32 {
            return Ok(out);
        }
        let dst = self.record_cast(rec, &out, DType::F32, dtype, 0, len)?;
        rec.keep(&out);
        Ok(dst)
    }

    /// [`xkern_core::Backend::cast`].
    pub(crate) fn cast_impl(&self, spec: &CastSpec, src: &WgpuStorage) -> Result<WgpuStorage> {
        self.record(|rec| self.record_cast(rec, src, spec.from, spec.to, spec.offset, spec.len))
    }

    /// [`xkern_core::Backend::copy_strided`].
    pub(crate) fn copy_strided_impl(
        &self,
        src: &WgpuStorage,
        dtype: DType,
        layout: &Layout,
    ) -> Result<WgpuStorage> {
        let len = layout.numel();
        let mut meta: Vec<u32> = Vec::with_capacity(2 * layout.rank());
        for &d in layout.shape().iter().chain(layout.strides()) {
            meta.push(crate::pipelines::fit_u32(d)?);
        }
        let meta = self.upload_u32(&meta)?;
        let wide = dtype.size_in_bytes() == 4;
        let bindings = [
            ("src", Slot::Words),
            ("view_meta", Slot::Words),
            ("dst", Slot::OutWords),
        ];
        let kernel = self.kernel(&format!("strided/{}", u32::from(wide)), &bindings, || {
            strided_source(wide)
        })?;
        self.record(|rec| {
            let dst = self.alloc_storage(dtype, len)?;
            let groups = invocations(dtype, len).div_ceil(WG);
            let params = Params::default()
                .u(len)?
                .u(layout.rank())?
                .u(layout.offset())?;
            rec.dispatch(&kernel, &[src, &meta, &dst], groups, params)?;
            Ok(dst)
        })
    }
}
