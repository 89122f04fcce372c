//! Host-memory storage of the CPU backend and the conversions every kernel uses: reading
//! any float dtype as f32 (contiguous ranges and strided matrices), and writing f32
//! results back rounded once to the output dtype.
//!
//! Allocations are fallible (`try_reserve_exact`), so a request the allocator cannot
//! satisfy is `Error::OutOfMemory`, not an abort. Large buffers come from and return to
//! the caching pool of `pool.rs` (a dropped `CpuStorage` gives its buffer back).

// Offsets and extents come from validated layouts whose element ranges lie inside
// the storage (core checks them before dispatch).
#![allow(clippy::indexing_slicing)]

use crate::pool::{self, Pooled};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::iter::ParallelExtend;
use rayon::prelude::*;
use std::borrow::Cow;
use xkern_core::{DType, Error, HostData, HostSlice, Layout, Result};

/// A CPU tensor buffer: one typed vector.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// u32 elements.
    U32(Vec<u32>),
}

/// A fresh empty vector with room for `len` elements, or `OutOfMemory`. Large ones are
/// backed by transparent huge pages where the system offers them (see [`advise_huge`]).
pub(crate) fn reserve<T>(len: usize) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        device: "cpu".into(),
        bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    advise_huge(&v);
    Ok(v)
}

/// Buffers of at least this many bytes ask for huge pages.
const HUGE_MIN_BYTES: usize = 4 << 20;

/// Whether [`advise_huge`] asks for huge pages (read once from `XKERN_CPU_HUGE_PAGES`).
#[cfg(target_os = "linux")]
fn huge_pages_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| {
        let v = std::env::var("XKERN_CPU_HUGE_PAGES").unwrap_or_default();
        !["0", "off", "false", "no"]
            .iter()
            .any(|off| v.trim().eq_ignore_ascii_case(off))
    })
}

/// Asks Linux to back the not yet touched buffer of `v` (its whole capacity) with transparent
/// huge pages (`madvise(MADV_HUGEPAGE)`, the setting of most distributions, where only
/// regions that ask get them). Why: a kernel streaming a large tensor from memory takes a
/// TLB miss every 4 KiB page, and the page walks (their tables evicted too) cost a third
/// of the bandwidth: on the reference Zen 4 VM a 64 MiB row sum read from memory ran in
/// 2.8–3.6 ms on 4 KiB pages against 2.0 ms on 2 MiB pages (C probe, caches evicted
/// before each pass). A hint only: where it is refused, or on other systems, nothing
/// changes. `XKERN_CPU_HUGE_PAGES=0` (or `off`, `false`, `no`, in any case) turns it off,
/// for systems where the kernel's compaction of memory into huge pages would stall
/// allocations.
pub(crate) fn advise_huge<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    #[cfg(target_os = "linux")]
    if bytes >= HUGE_MIN_BYTES && huge_pages_wanted() {
        const PAGE: usize = 4096;
        let start = (v.as_ptr() as usize).next_multiple_of(PAGE);
        let end = (v.as_ptr() as usize + bytes) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies inside the vector's own allocation, page-aligned;
            // MADV_HUGEPAGE changes how its pages are backed, never their contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Appends `len` copies of `value` to the empty `v`. Large vectors are filled by every
/// thread of the pool, so the page faults of fresh memory and the stores to reused
/// memory are spread over the cores.
fn fill<T: Clone + Send + Sync>(v: &mut Vec<T>, len: usize, value: T) {
    if len.saturating_mul(std::mem::size_of::<T>()) >= PARALLEL_FILL_BYTES {
        v.par_extend(rayon::iter::repeat_n(value, len));
    } else {
        v.resize(len, value);
    }
}

/// An empty vector with room for `len` elements (from the buffer pool when one fits), or
/// `OutOfMemory`.
pub(crate) fn try_with_capacity<T: Pooled>(len: usize) -> Result<Vec<T>> {
    match pool::take(len) {
        Some(mut v) => {
            v.clear();
            Ok(v)
        }
        None => reserve(len),
    }
}

/// A vector of `len` copies of `value`, or `OutOfMemory`.
pub(crate) fn try_vec<T: Pooled + Clone + Send + Sync>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = try_with_capacity(len)?;
    fill(&mut v, len, value);
    Ok(v)
}

/// A vector of `len` elements for a kernel that overwrites every one of them: a pooled
/// buffer is used with whatever values it holds (saving a fill pass through memory);
/// a fresh one is filled with `value` (in parallel when large, spreading page faults).
/// Debug builds fill every such vector with [`Pooled::POISON`] instead, so that a kernel
/// that leaves an element unwritten fails its tests rather than returning stale values.
pub(crate) fn try_vec_overwrite<T: Pooled + Clone + Send + Sync>(
    len: usize,
    value: T,
) -> Result<Vec<T>> {
    if cfg!(debug_assertions) {
        let mut v = try_with_capacity(len)?;
        fill(&mut v, len, T::POISON);
        return Ok(v);
    }
    match pool::take::<T>(len) {
        Some(mut v) => {
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, value);
            }
            Ok(v)
        }
        None => {
            let mut v = reserve(len)?;
            fill(&mut v, len, value);
            Ok(v)
        }
    }
}

/// Vectors of at least this many bytes are filled in parallel.
const PARALLEL_FILL_BYTES: usize = 4 << 20;

/// Elements per task of a parallel dtype conversion.
const CONVERT_CHUNK: usize = 1 << 16;

/// Converts `src` into `dst` (same length) chunk by chunk on every thread.
fn par_convert<S: Sync, D: Send>(src: &[S], dst: &mut [D], f: impl Fn(&mut [D], &[S]) + Sync) {
    dst.par_chunks_mut(CONVERT_CHUNK)
        .zip(src.par_chunks(CONVERT_CHUNK))
        .for_each(|(d, s)| f(d, s));
}

/// `src` widened to f32, in a pooled buffer.
fn widen<T: Scalar>(src: &[T]) -> Result<Vec<f32>> {
    let mut out = try_vec(src.len(), 0.0f32)?;
    par_convert(src, &mut out, |d, s| T::widen_into(s, d));
    Ok(out)
}

/// A contiguous range of a storage as f32: borrowed for f32 storage, else a converted
/// copy that goes back to the buffer pool when dropped.
pub(crate) struct F32Input<'a>(Cow<'a, [f32]>);

impl F32Input<'_> {
    /// The values as an owned vector (copied when borrowed).
    pub(crate) fn into_vec(mut self) -> Vec<f32> {
        std::mem::replace(&mut self.0, Cow::Borrowed(&[])).into_owned()
    }
}

impl std::ops::Deref for F32Input<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl Drop for F32Input<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(v) = std::mem::replace(&mut self.0, Cow::Borrowed(&[])) {
            pool::give(v);
        }
    }
}

/// An element type a kernel can read as f32.
pub(crate) trait Scalar: bytemuck::Pod + Send + Sync {
    fn to_f32(self) -> f32;
    /// Widens `src` into `dst` (of the same length) element for element: a loop of
    /// [`Scalar::to_f32`] unless the type has faster (vectorised) conversion. Exact.
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len());
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// The elements themselves where they already are f32 (no copy needed to read them
    /// as f32), else `None`.
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        let _ = s;
        None
    }
    /// The bits of the value rounded to bf16 (its own bits for a bf16 element, so packing
    /// bf16 pairs is a shift and an or).
    fn bf16_bits(self) -> u16 {
        bf16::from_f32(self.to_f32()).to_bits()
    }
    /// The elements' bits where they are bf16 (pairs of them pack by moving bits), else
    /// `None`.
    fn as_bf16_bits(s: &[Self]) -> Option<&[u16]> {
        let _ = s;
        None
    }
}

/// The f16 with bits `h` as f32, exactly, in integer and float operations that vectorise
/// (`half`'s `to_f32` checks the CPU and calls its F16C routine per element): a normal
/// number's exponent is rebased in the integer domain, a subnormal one is its integer
/// mantissa times 2⁻²⁴ (no f32 subnormal is formed), ±∞ stays ±∞, and NaN keeps its
/// payload and is made quiet, as F16C does.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let mag = h & 0x7fff;
    let normal = f32::from_bits((mag << 13) + ((127 - 15) << 23));
    let subnormal = mag as f32 * f32::from_bits((127 - 24) << 23);
    let quiet = u32::from(mag > 0x7c00) << 22;
    let special = f32::from_bits((mag << 13) | 0x7f80_0000 | quiet);
    let v = if mag < 0x400 {
        subnormal
    } else if mag >= 0x7c00 {
        special
    } else {
        normal
    };
    f32::from_bits(v.to_bits() | ((h & 0x8000) << 16))
}

impl Scalar for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
}
impl Scalar for f16 {
    /// Exact, branch-free (so loops of it vectorise), see [`f16_bits_to_f32`].
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_bits_to_f32(self.to_bits())
    }
    /// With F16C or AVX-512F where the CPU has them (see `simd::convert`): one
    /// instruction per 8 or 16 elements, fewer than the `to_f32` loop.
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        crate::simd::convert::widen_f16(src, dst);
    }
}
impl Scalar for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn bf16_bits(self) -> u16 {
        self.to_bits()
    }
    /// The bf16 bits moved to the top of an f32, a NaN made quiet (the same bits as
    /// `to_f32`), with the CPU's widest vectors (see `simd::convert::widen_bf16`).
    #[inline(always)]
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        crate::simd::convert::widen_bf16(src, dst);
    }
    fn as_bf16_bits(s: &[Self]) -> Option<&[u16]> {
        Some(s.reinterpret_cast())
    }
}
impl Scalar for u32 {
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// Copies `rows × cols` elements at `offset + r·row_stride + c·col_stride` into `dst`
/// (row-major), converted to f32 (a vectorised widening copy per contiguous row).
pub(crate) fn gather<T: Scalar>(
    src: &[T],
    offset: usize,
    row_stride: usize,
    col_stride: usize,
    cols: usize,
    dst: &mut [f32],
) {
    if cols == 0 {
        return;
    }
    for (r, row) in dst.chunks_exact_mut(cols).enumerate() {
        let base = offset + r * row_stride;
        if col_stride == 1 {
            T::widen_into(&src[base..base + cols], row);
        } else {
            for (c, d) in row.iter_mut().enumerate() {
                *d = src[base + c * col_stride].to_f32();
            }
        }
    }
}

/// A dropped tensor's buffer goes back to the pool (see `pool.rs`) when it is large.
impl Drop for CpuStorage {
    fn drop(&mut self) {
        match self {
            CpuStorage::F32(v) => pool::give(std::mem::take(v)),
            CpuStorage::F16(v) => pool::give(std::mem::take(v)),
            CpuStorage::BF16(v) => pool::give(std::mem::take(v)),
            CpuStorage::U32(v) => pool::give(std::mem::take(v)),
        }
    }
}

impl CpuStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn upload(data: HostSlice<'_>) -> Result<CpuStorage> {
        fn copy<T: Copy + Pooled>(s: &[T]) -> Result<Vec<T>> {
            let mut v = try_with_capacity(s.len())?;
            v.extend_from_slice(s);
            Ok(v)
        }
        Ok(match data {
            HostSlice::F32(s) => CpuStorage::F32(copy(s)?),
            HostSlice::F16(s) => CpuStorage::F16(copy(s)?),
            HostSlice::BF16(s) => CpuStorage::BF16(copy(s)?),
            HostSlice::U32(s) => CpuStorage::U32(copy(s)?),
        })
    }

    pub(crate) fn zeros(dtype: DType, len: usize) -> Result<CpuStorage> {
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(try_vec(len, 0.0)?),
            DType::F16 => CpuStorage::F16(try_vec(len, f16::ZERO)?),
            DType::BF16 => CpuStorage::BF16(try_vec(len, bf16::ZERO)?),
            DType::U32 => CpuStorage::U32(try_vec(len, 0)?),
        })
    }

    /// Checks that `offset..offset + len` lies inside the buffer.
    pub(crate) fn range(&self, offset: usize, len: usize) -> Result<std::ops::Range<usize>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(offset..end),
            _ => Err(Error::Backend {
                backend: "cpu",
                message: format!(
                    "range {offset}+{len} outside a storage of {} elements",
                    self.len()
                ),
            }),
        }
    }

    pub(crate) fn download(&self, offset: usize, len: usize) -> Result<HostData> {
        let r = self.range(offset, len)?;
        Ok(match self {
            CpuStorage::F32(v) => HostData::F32(v[r].to_vec()),
            CpuStorage::F16(v) => HostData::F16(v[r].to_vec()),
            CpuStorage::BF16(v) => HostData::BF16(v[r].to_vec()),
            CpuStorage::U32(v) => HostData::U32(v[r].to_vec()),
        })
    }

    /// `len` contiguous elements from `offset` as f32: borrowed for f32 storage,
    /// converted (see `Scalar::widen_into`) otherwise.
    pub(crate) fn f32_range(&self, offset: usize, len: usize) -> Result<F32Input<'_>> {
        let r = self.range(offset, len)?;
        Ok(F32Input(match self {
            CpuStorage::F32(v) => Cow::Borrowed(&v[r]),
            CpuStorage::F16(v) => Cow::Owned(widen(&v[r])?),
            CpuStorage::BF16(v) => Cow::Owned(widen(&v[r])?),
            CpuStorage::U32(v) => Cow::Owned(widen(&v[r])?),
        }))
    }

    /// Reads a strided `rows × cols` matrix into `dst` (row-major f32). The caller (a
    /// validated spec) guarantees the view lies inside the storage.
    pub(crate) fn gather_f32(
        &self,
        offset: usize,
        row_stride: usize,
        col_stride: usize,
        cols: usize,
        dst: &mut [f32],
    ) {
        match self {
            CpuStorage::F32(v) => gather(v, offset, row_stride, col_stride, cols, dst),
            CpuStorage::F16(v) => gather(v, offset, row_stride, col_stride, cols, dst),
            CpuStorage::BF16(v) => gather(v, offset, row_stride, col_stride, cols, dst),
            CpuStorage::U32(v) => gather(v, offset, row_stride, col_stride, cols, dst),
        }
    }

    /// Rounds f32 results once to `dtype` (nearest even). U32 output is never produced
    /// from floats; it is rejected.
    pub(crate) fn from_f32(dtype: DType, values: Vec<f32>) -> Result<CpuStorage> {
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(values),
            DType::F16 => {
                let mut out = try_vec(values.len(), f16::ZERO)?;
                par_convert(&values, &mut out, |d, s| {
                    crate::simd::convert::narrow_f16(s, d)
                });
                pool::give(values);
                CpuStorage::F16(out)
            }
            DType::BF16 => {
                let mut out = try_vec(values.len(), bf16::ZERO)?;
                par_convert(&values, &mut out, |d, s| {
                    crate::reduce::rows::narrow_bf16(s, d)
                });
                pool::give(values);
                CpuStorage::BF16(out)
            }
            DType::U32 => {
                return Err(Error::Backend {
                    backend: "cpu",
                    message: "f32 results cannot be stored as u32".into(),
                });
            }
        })
    }

    /// Gathers a strided view into a new contiguous storage.
    pub(crate) fn copy_strided(&self, layout: &Layout) -> Result<CpuStorage> {
        if layout.storage_span() > self.len() {
            return Err(Error::Backend {
                backend: "cpu",
                message: "strided view outside its storage".into(),
            });
        }
        fn pick<T: Copy + Pooled>(v: &[T], layout: &Layout) -> Result<Vec<T>> {
            let mut out = try_with_capacity(layout.numel())?;
            out.extend(layout.offsets().map(|o| v[o]));
            Ok(out)
        }
        Ok(match self {
            CpuStorage::F32(v) => CpuStorage::F32(pick(v, layout)?),
            CpuStorage::F16(v) => CpuStorage::F16(pick(v, layout)?),
            CpuStorage::BF16(v) => CpuStorage::BF16(pick(v, layout)?),
            CpuStorage::U32(v) => CpuStorage::U32(pick(v, layout)?),
        })
    }
}
