//! Casts and strided copies (`cast.wgsl`, `strided.wgsl`), and the final rounding of f32
//! results to 16-bit outputs that the compute kernels share.
//!
//! Both kernels move bits, not floats: conversions are integer code (see `common.wgsl`),
//! so results equal the host's round-to-nearest-even exactly, denormals included. 16-bit
//! outputs are written a word (two elements) per invocation, so writes never share a word.
//!
//! Casts of tensors larger than one storage binding (128 MiB on lavapipe, often 2 GiB
//! or 4 GiB on GPUs) run in chunks: each dispatch binds an aligned byte range of the
//! source and of the destination ([`cast_chunks`]). A strided copy reads anywhere in its
//! source, so a source beyond the binding limit is a clear `Err` there.

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Bound, Params, Recording, Slot, assemble};
use xkern_core::{CastSpec, DType, Error, Layout, Result};

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

/// One dispatch of a chunked cast: the byte ranges it binds and the elements it converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CastChunk {
    /// Source binding: byte offset (aligned) and size.
    pub(crate) src_offset: u64,
    pub(crate) src_bytes: u64,
    /// First element to convert, counted from the source binding's start.
    pub(crate) first: usize,
    /// Destination binding: byte offset (aligned) and size.
    pub(crate) dst_offset: u64,
    pub(crate) dst_bytes: u64,
    /// Elements converted (written from the destination binding's start).
    pub(crate) len: usize,
}

/// Splits the cast of `len` elements from element `offset` of a `src_total`-byte source
/// into dispatches whose bindings fit `limit` bytes and start at multiples of `align`.
/// `None` when even one alignment block does not fit (no adapter is like that).
pub(crate) fn cast_chunks(
    offset: usize,
    len: usize,
    src_size: usize,
    dst_size: usize,
    src_total: u64,
    limit: u64,
    align: u64,
) -> Option<Vec<CastChunk>> {
    let align = align.max(4);
    // Elements per chunk: a multiple of `align` (so destination offsets stay aligned for
    // 2- and 4-byte elements and stay even for packed 16-bit words), with room for the
    // source's unaligned start.
    let widest = src_size.max(dst_size) as u64;
    let per = (limit.checked_sub(align)? / widest) / align * align;
    if per == 0 {
        return None;
    }
    let per = usize::try_from(per).ok()?;
    let words = |bytes: u64| bytes.div_ceil(4) * 4;
    let mut chunks = Vec::new();
    let mut c0 = 0;
    while c0 < len {
        let n = per.min(len - c0);
        let byte = ((offset + c0) * src_size) as u64;
        let src_offset = byte / align * align;
        let first = ((byte - src_offset) / src_size as u64) as usize;
        let src_bytes = words(((first + n) * src_size) as u64).min(src_total - src_offset);
        chunks.push(CastChunk {
            src_offset,
            src_bytes,
            first,
            dst_offset: (c0 * dst_size) as u64,
            dst_bytes: words((n * dst_size) as u64),
            len: n,
        });
        c0 += n;
    }
    Some(chunks)
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
        let limits = &self.gpu().limits;
        let limit = limits.max_storage_buffer_binding_size;
        if src.bytes <= limit && dst.bytes <= limit {
            let groups = invocations(to, len).div_ceil(WG);
            let params = Params::default().u(offset)?.u(len)?;
            rec.dispatch(&kernel, &[src, &dst], groups, params)?;
            return Ok(dst);
        }
        let chunks = cast_chunks(
            offset,
            len,
            from.size_in_bytes(),
            to.size_in_bytes(),
            src.bytes,
            limit,
            u64::from(limits.min_storage_buffer_offset_alignment),
        )
        .ok_or_else(|| Error::Backend {
            backend: "wgpu",
            message: format!("a storage binding limit of {limit} bytes is too small to cast"),
        })?;
        for c in chunks {
            let groups = invocations(to, c.len).div_ceil(WG);
            let params = Params::default().u(c.first)?.u(c.len)?;
            let bound = [
                Bound {
                    storage: src,
                    offset: c.src_offset,
                    bytes: c.src_bytes,
                },
                Bound {
                    storage: &dst,
                    offset: c.dst_offset,
                    bytes: c.dst_bytes,
                },
            ];
            rec.dispatch_ranges(&kernel, &bound, groups, params)?;
        }
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

#[cfg(test)]
mod tests {
    use super::cast_chunks;

    /// Every element is converted exactly once, in order; every binding is aligned, in
    /// bounds and within the limit; 16-bit destinations start on whole words.
    #[test]
    fn cast_chunks_cover_exactly_within_limits() {
        let align = 256u64;
        for (src_size, dst_size) in [(4, 4), (4, 2), (2, 4), (2, 2)] {
            for limit in [2048u64, 4096, 1 << 20] {
                for offset in [0usize, 1, 3, 127, 128, 1000] {
                    for len in [0usize, 1, 2, 255, 256, 257, 5000, 70_001] {
                        let src_total = (((offset + len) * src_size) as u64).div_ceil(4) * 4;
                        let chunks =
                            cast_chunks(offset, len, src_size, dst_size, src_total, limit, align)
                                .expect("plan");
                        let mut next = 0usize;
                        for c in &chunks {
                            assert_eq!(c.src_offset % align, 0);
                            assert_eq!(c.dst_offset % align, 0);
                            assert!(c.src_bytes <= limit && c.dst_bytes <= limit);
                            assert!(c.src_offset + c.src_bytes <= src_total);
                            assert_eq!(c.src_bytes % 4, 0);
                            assert_eq!(c.dst_bytes % 4, 0);
                            let first_abs = c.src_offset as usize / src_size + c.first;
                            assert_eq!(first_abs, offset + next, "source order");
                            assert_eq!(c.dst_offset as usize, next * dst_size, "dest order");
                            assert!((c.first + c.len) * src_size <= c.src_bytes as usize);
                            assert!(c.len * dst_size <= c.dst_bytes as usize);
                            next += c.len;
                        }
                        assert_eq!(next, len);
                        if len > 0 && limit < ((len * src_size.max(dst_size)) as u64) {
                            assert!(chunks.len() > 1);
                        }
                    }
                }
            }
        }
        assert!(cast_chunks(0, 10, 4, 4, 40, 256, 256).is_none());
    }
}
