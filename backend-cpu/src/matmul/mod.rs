//! CPU matmul: a BLIS-style packed GEMM written once over a per-ISA micro-kernel.
//!
//! Loop nest (Goto & van de Geijn, "Anatomy of high-performance matrix multiplication",
//! TOMS 2008; Van Zee & van de Geijn, "BLIS", TOMS 2015), for each matrix of the batch:
//!
//! ```text
//! for pc in 0..K step KC:                       K split so packed panels stay in cache
//!     pack B[pc.., :]  -> KC × N in NR-wide column panels   (shared by all threads)
//!     pack A[:, pc..]  -> M × KC in MR-tall row panels      (shared by all threads)
//!     parallel over tasks (MC rows × NCB columns of C):
//!         for ir in MR panels of the task:      A micro-panel (MR × KC) stays in L1
//!             for jr in NR panels of the task:  B block (KC × NCB) stays in L2
//!                 micro-kernel: C[ir, jr] (=|+=) A_panel · B_panel
//!                 after the last pc: bias and activation on the tile, still in L1
//! ```
//!
//! Products wide enough for column tasks of at least two micro-tiles, about four per
//! thread (A no larger than 128 MiB packed), run the same kernels with the parallel loop
//! over columns instead
//! ([`gemm_split`]): A is packed whole once, and each task packs its own B blocks, so
//! there is no shared B and no barrier per depth block; narrower ones with enough rows
//! split C's rows the same way, with B packed whole.
//!
//! Packing reads each operand through its strides (transposed views, permuted batches and
//! broadcast batch axes need no copy) and converts f16/bf16 to f32, so the kernels only
//! ever see f32 panels. Block sizes: KC = 256 keeps the B block `KC × NCB = 256 × 512`
//! floats (512 KiB) in Zen 4's 1 MiB L2 and the A micro-panel (12 × 256 floats, 12 KiB)
//! in its 32 KiB L1; MC = 192 rows per task gives ≥ 4 tasks per thread on the reference
//! shapes. Small batched problems run one matrix per task instead (parallel over the
//! batch), and matrix-vector products (M = 1 or N = 1) take a streaming path at memory
//! bandwidth.
//!
//! On AVX-512, products with f32 operands whose rows are contiguous skip packing where it
//! does not pay ([`direct`]: up to 1024³ multiply-adds, any size with at most 512 columns,
//! and batches of small matrices), and 2 ≤ M ≤ 16 rows stream B in place ([`skinny`], for
//! every float dtype: 16-bit B is widened 16 rows at a time, so bf16 products of that
//! shape run on f32 FMAs, not the bf16 pair kernel). The direct path sums in the packed
//! GEMM's order (same bits); the skinny and GEMV paths sum in their own fixed orders (the
//! skinny path in 16-deep blocks; GEMV in 32 lanes for dot products, and for `x · B` row
//! by row within fixed chunks of rows whose partial sums are added in a fixed tree), so a
//! product's last bits can depend on which path its shape takes, never on the thread
//! count or the memory available.

// Kernel code: slices of packed panels and of C are sized from the validated spec and
// the blocking; loop bounds never exceed them.
#![allow(clippy::indexing_slicing)]

mod direct;
mod gemv;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kernel_avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kernel_avx512_bf16;
pub(crate) mod kernel_generic;
mod skinny;

use crate::simd::Isa;
use crate::storage::{CpuStorage, Scalar, try_vec, try_vec_overwrite};
use rayon::prelude::*;
use xkern_core::{MatmulSpec, Result};

/// `gather(w, src, rs, kc, out)`: packs a `w`-lane panel of f32 lanes `rs` apart, each
/// `kc` contiguous depths, as `out[s·w + i] = src[i·rs + s]`; `false` (nothing written)
/// for a width it does not handle.
///
/// # Safety
/// Lane `i < w` has `kc` readable floats at `src + i·rs`, `out` `w·kc` writable ones, and
/// the CPU has the kernel's instruction set.
pub(crate) type Gather = unsafe fn(usize, *const f32, usize, usize, *mut f32) -> bool;

/// `pair_rows(n, r0, r1, out)`: `out[j] = r0[j] | r1[j] << 16` for `j < n ≤ 32`, the bf16
/// bits of two consecutive depths of `n` contiguous lanes paired into 32-bit slots (see
/// [`pair`]).
///
/// # Safety
/// `r0` and `r1` have `n` readable elements, `out` `n` writable slots, `n ≤ 32`, and the
/// CPU has the kernel's instruction set.
pub(crate) type PairRows = unsafe fn(usize, *const u16, *const u16, *mut f32);

/// A kernel's vectorised packing routines (each `None`: the generic code).
#[derive(Clone, Copy, Default)]
pub(crate) struct PackSimd {
    /// Panels whose lanes are contiguous along the depth (f32 lanes, or bf16 lanes read as
    /// 32-bit pairs).
    pub gather: Option<Gather>,
    /// bf16 pair slots from two rows of contiguous lanes.
    pub pairs: Option<PairRows>,
}

/// A register-tiled micro-kernel: `C[MR × NR] (=|+=) Σ_p A[:, p] · B[p, :]`.
pub(crate) trait MicroKernel {
    /// Rows of the C tile (A values broadcast per k-step).
    const MR: usize;
    /// Columns of the C tile (B vectors loaded per k-step).
    const NR: usize;
    /// Depth elements per packed step: 1 for f32 panels, 2 for panels whose 32-bit slots
    /// each hold a pair of bf16 values (consecutive k), as `vdpbf16ps` consumes them.
    const KU: usize = 1;
    /// The kernel's own packing routines, where it has them (see [`PackSimd`]).
    const PACK: PackSimd = PackSimd {
        gather: None,
        pairs: None,
    };
    /// K-steps per [`Walk::step`] in [`MicroKernel::run`] with `FETCH`: more where a step
    /// is short, so that the walk's few scalar operations stay hidden behind its FMAs.
    const STEPS_PER_FETCH: usize = 1;

    /// Runs `kc` packed steps. `a` is a packed A micro-panel (`a[p·MR + i]`), `b` a packed
    /// B micro-panel (`b[p·NR + j]`), `c` the top-left of an `MR × NR` tile with row stride
    /// `ldc`; `accumulate` adds to C instead of overwriting it. With `FETCH`, the kernel
    /// also fetches `walk`'s lines into L2 for the work after the call, a [`Walk::step`]
    /// every [`MicroKernel::STEPS_PER_FETCH`] k-steps (a kernel that does not walk, the
    /// portable one, leaves them to the packing's own prefetches); without, `walk` is
    /// ignored ([`Walk::NONE`] by convention).
    ///
    /// # Safety
    /// `a` and `b` point to `kc·MR` and `kc·NR` readable 32-bit slots, `c` to a writable
    /// `MR × NR` tile (rows `ldc` apart) that no other thread touches, and the CPU has the
    /// kernel's instruction set.
    unsafe fn run<const FETCH: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        walk: Walk,
    );

    /// As [`MicroKernel::run`] for the first `rows < MR` rows of the tile only (`c` then
    /// points to `rows` writable rows; `a` is still a whole MR-tall panel); `false`, with
    /// nothing done, where the kernel has no such variant (the caller then runs the whole
    /// tile on a scratch tile and copies the rows out).
    ///
    /// # Safety
    /// As [`MicroKernel::run`], with `rows` rows of C.
    unsafe fn run_rows(
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) -> bool {
        let _ = (rows, kc, a, b, c, ldc, accumulate);
        false
    }
}

/// Cache blocking: depth of a packed panel, rows and columns of C per parallel task.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    kc: usize,
    mc: usize,
    ncb: usize,
}

/// The block sizes (see the module doc), or those of `XKERN_GEMM_BLOCKING=kc,mc,ncb` for
/// tuning experiments (mc rounded to a multiple of 12, ncb to a multiple of 32).
fn blocking() -> Blocking {
    static B: std::sync::OnceLock<Blocking> = std::sync::OnceLock::new();
    *B.get_or_init(|| {
        let default = Blocking {
            kc: 256,
            mc: 192,
            ncb: 512,
        };
        let Ok(v) = std::env::var("XKERN_GEMM_BLOCKING") else {
            return default;
        };
        let f: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match f[..] {
            [kc, mc, ncb] if kc > 0 && mc > 0 && ncb > 0 => Blocking {
                kc,
                mc: mc.div_ceil(12) * 12,
                ncb: ncb.div_ceil(32) * 32,
            },
            _ => default,
        }
    })
}
/// Below this many multiply-adds per matrix, batched problems run one matrix per task.
const SMALL: usize = 1 << 21;
/// Up to this many multiply-adds per matrix (1024³), or for any size with at most
/// [`DIRECT_NARROW`] columns, row-major f32 products skip packing on AVX-512 (`direct`).
/// Interleaved against the packed GEMM on Zen 4 (medians): 256³ 0.36 → 0.19 ms, 512³
/// 1.6 → 1.43 ms, 1024³ 12.0–12.6 → 11.5–12.0 ms, 4096×4096×128 30.2 → 21.5–22.9 ms;
/// beyond 1024³ packing wins (4096³ 787–826 against 845–915 ms).
const DIRECT_MAX: usize = 1 << 30;
/// See [`DIRECT_MAX`]: with few columns each element of A is used few times, and packing
/// A (all of it, in short runs) does not pay.
const DIRECT_NARROW: usize = 512;

/// One operand matrix of one batch entry: `x[offset + r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T: Scalar> View<'a, T> {
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[self.offset + r * self.rs + c * self.cs].to_f32()
    }

    /// Whether `rows ≥ 1` rows of `cols` contiguous elements (`rs` apart, from `offset`)
    /// lie inside the data, so that raw-pointer code may read them: the last one read is
    /// `offset + (rows − 1)·rs + cols − 1`, computed without overflow.
    fn rows_fit(&self, rows: usize, cols: usize) -> bool {
        rows.checked_sub(1)
            .and_then(|last| last.checked_mul(self.rs))
            .and_then(|x| x.checked_add(self.offset))
            .and_then(|x| x.checked_add(cols))
            .is_some_and(|end| end <= self.data.len())
    }

    /// The elements at rows `r0..r0+rows` × columns `c0..c0+cols` as an [`Ahead`] block:
    /// runs along whichever axis is contiguous; nothing where neither is.
    fn ahead(&self, (r0, rows): (usize, usize), (c0, cols): (usize, usize)) -> Ahead<'a> {
        let size = std::mem::size_of::<T>();
        let (seg, segs, stride) = match (self.rs, self.cs) {
            (_, 1) => (cols, rows, self.rs),
            (1, _) => (rows, cols, self.cs),
            _ => return Ahead::default(),
        };
        let start = self.offset + r0 * self.rs + c0 * self.cs;
        match self.data.get(start..) {
            Some(rest) if seg > 0 && segs > 0 => Ahead {
                bytes: bytemuck::cast_slice(rest),
                seg: seg * size,
                segs,
                stride: stride * size,
            },
            _ => Ahead::default(),
        }
    }
}

/// The lane masks of a tile `16·V` floats wide cut to its first `cols` columns: vector `v`
/// has lanes `16·v..` up to `cols` (0 for a vector wholly past them).
#[cfg(target_arch = "x86_64")]
fn lane_masks<const V: usize>(cols: usize) -> [u16; V] {
    let mut mask = [0u16; V];
    for (v, m) in mask.iter_mut().enumerate() {
        let lanes = cols.saturating_sub(16 * v).min(16);
        *m = ((1u32 << lanes) - 1) as u16;
    }
    mask
}

/// Runs `f(entry, c)` on each `len`-float matrix of the batch in `out`, in order, until
/// one declines (`Ok(false)`, its C left to the next path, which writes every entry):
/// `Ok(true)` when every entry took the path.
fn each_entry(
    out: &mut [f32],
    len: usize,
    mut f: impl FnMut(usize, &mut [f32]) -> Result<bool>,
) -> Result<bool> {
    for (bi, c) in out.chunks_exact_mut(len).enumerate() {
        if !f(bi, c)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Panels packed together by one task: a 2 KiB run of a row-major B row for 32-wide panels.
const GROUP: usize = 16;

/// Packs a `kc`-deep block of an operand into `w`-wide panels of `ku`-element slots:
/// slot `s`, lane `i` of panel `q` holds the elements at panel index `x = q·w + i` and
/// depths `p0 + ku·s + u` (`u < ku`), zero past `extent` or `kc`. `v.at(x, p)` addresses
/// the operand by panel index and depth: A as it is, B through its transposed view. With
/// `ku = 2` each slot holds two bf16 values (see [`pair`]).
#[allow(clippy::too_many_arguments)]
fn pack<T: Scalar>(
    v: View<'_, T>,
    extent: usize,
    p0: usize,
    kc: usize,
    w: usize,
    ku: usize,
    dst: &mut [f32],
    parallel: bool,
    simd: PackSimd,
) {
    let steps = kc.div_ceil(ku);
    let get = |x: usize, k: usize| if k < kc { v.at(x, p0 + k) } else { 0.0 };
    let panel_len = w * steps;
    let pack_panel = |q: usize, out: &mut [f32]| {
        let x0 = q * w;
        let valid = w.min(extent.saturating_sub(x0));
        if v.cs == 1 && ku == 1 && valid == w {
            if let (Some(g), Some(data)) = (simd.gather, T::as_f32(v.data)) {
                let start = v.offset + x0 * v.rs + p0;
                let lanes = View { offset: start, ..v };
                if lanes.rows_fit(w, kc)
                    // SAFETY: lane i's kc floats lie inside `data` (checked first), the
                    // panel holds w·kc floats (ku = 1), and the kernel's ISA was detected
                    // when it was chosen.
                    && unsafe { g(w, data[start..].as_ptr(), v.rs, kc, out.as_mut_ptr()) }
                {
                    return;
                }
            }
            let done = match w {
                12 => gather_lanes::<T, 12>(v, x0, p0, kc, out),
                6 => gather_lanes::<T, 6>(v, x0, p0, kc, out),
                4 => gather_lanes::<T, 4>(v, x0, p0, kc, out),
                32 => gather_lanes::<T, 32>(v, x0, p0, kc, out),
                16 => gather_lanes::<T, 16>(v, x0, p0, kc, out),
                _ => false,
            };
            if done {
                return;
            }
        }
        if v.cs == 1
            && ku == 2
            && valid == w
            && kc.is_multiple_of(2)
            && v.rs.is_multiple_of(2)
            && let (Some(g), Some(bits)) = (simd.gather, T::as_bf16_bits(v.data))
        {
            // bf16 lanes contiguous along the depth: each pair of depths is one 32-bit
            // element of the lane, so the panel is the 32-bit gather of `kc / 2` elements
            // of lanes `rs / 2` elements apart.
            let start = v.offset + x0 * v.rs + p0;
            let lanes = View { offset: start, ..v };
            if lanes.rows_fit(w, kc)
                // SAFETY: lane i's kc bf16 (kc / 2 pairs) lie inside the slice (checked
                // first); the gather reads them with unaligned loads as 32-bit patterns and
                // writes w·kc/2 slots, the panel's size for ku = 2; its ISA was detected.
                && unsafe {
                    g(
                        w,
                        bits[start..].as_ptr().cast::<f32>(),
                        v.rs / 2,
                        kc / 2,
                        out.as_mut_ptr(),
                    )
                }
            {
                return;
            }
        }
        if v.cs == 1 {
            // Each lane is contiguous along the depth (A row-major, B transposed): read it
            // as one slice and scatter it down its column of the (L1-resident) panel.
            for i in 0..w {
                if i >= valid {
                    for s in 0..steps {
                        out[s * w + i] = 0.0;
                    }
                    continue;
                }
                let start = v.offset + (x0 + i) * v.rs + p0;
                let lane = &v.data[start..start + kc];
                if ku == 1 {
                    // Done below, a block of depths at a time for all lanes together.
                    continue;
                } else {
                    let mut pairs = lane.chunks_exact(2);
                    for (s, pr) in (&mut pairs).enumerate() {
                        out[s * w + i] = pair(pr[0], pr[1]);
                    }
                    if let [last] = pairs.remainder() {
                        out[(kc / 2) * w + i] = f32::from_bits(u32::from(last.bf16_bits()));
                    }
                }
            }
            if ku == 1 {
                // Transpose 16-deep blocks (a cache line of f32 per lane) through a small
                // tile: contiguous reads per lane, then contiguous slot writes (a strided
                // store per element measured as slow as the matmul itself at
                // 4096×4096×128).
                const D: usize = 16;
                let mut tile = [[0.0f32; D]; 32];
                let lanes = valid.min(32);
                let blocks = if w <= 32 { kc / D } else { 0 };
                for sb in 0..blocks {
                    for (i, row) in tile.iter_mut().enumerate().take(lanes) {
                        let start = v.offset + (x0 + i) * v.rs + p0 + sb * D;
                        // Each lane is its own stream, rows apart: fetch 4 lines ahead.
                        crate::simd::prefetch(v.data.as_ptr().wrapping_add(start + 4 * D));
                        T::widen_into(&v.data[start..start + D], row);
                    }
                    for t in 0..D {
                        let slot = &mut out[(sb * D + t) * w..(sb * D + t + 1) * w];
                        for (i, o) in slot[..lanes].iter_mut().enumerate() {
                            *o = tile[i][t];
                        }
                    }
                }
                for s in blocks * D..kc {
                    for i in 0..valid {
                        out[s * w + i] = v.data[v.offset + (x0 + i) * v.rs + p0 + s].to_f32();
                    }
                }
            }
            return;
        }
        // Otherwise walk each lane along the depth.
        for i in 0..w {
            for s in 0..steps {
                out[s * w + i] = match (i < valid, ku) {
                    (false, _) => 0.0,
                    (true, 1) => get(x0 + i, s),
                    (true, _) => pair(get(x0 + i, 2 * s), get(x0 + i, 2 * s + 1)),
                };
            }
        }
    };
    // Packs panels `g·GROUP ..` into `out` (whole panels, the last group maybe fewer).
    let pack_group = |(g, out): (usize, &mut [f32])| {
        let q0 = g * GROUP;
        let panels = out.len() / panel_len;
        if v.rs == 1 {
            // Panel lanes are contiguous in memory (B row-major, A transposed): walk the
            // group's rows in order, each a run of up to GROUP·w contiguous elements
            // copied into the group's panels (walking one panel's rows at a time read
            // 128-byte pieces rows apart and stalled on every load). With `ku = 2` a slot
            // pairs the same lane of two consecutive rows.
            let x0 = q0 * w;
            let valid = (panels * w).min(extent.saturating_sub(x0));
            let row = |d: usize| {
                let start = v.offset + (p0 + d) * v.cs + x0;
                &v.data[start..start + valid]
            };
            for s in 0..steps {
                let d = s * ku;
                // The rows two slots ahead, a line at a time, into L2: the runs are short
                // (2 KiB for a 512-column block) and rows apart, and with prefetches into
                // L1 the copy ran at 4–5 GB/s per thread (timed per pack call at
                // 128×4096×11008), its misses queued behind the prefetches that filled
                // L1's miss buffers; into L2 it runs at 6–7 GB/s. (The distance, 1 to 16
                // slots, made no clear difference either way, so it stayed at two.)
                for ahead in d + 2 * ku..(d + 3 * ku).min(kc) {
                    let start = v.offset + (p0 + ahead) * v.cs + x0;
                    crate::simd::prefetch_run_l2(v.data.as_ptr().wrapping_add(start), valid);
                }
                let r0 = row(d);
                let r1 = (ku == 2 && d + 1 < kc).then(|| row(d + 1));
                for (qi, out) in out.chunks_exact_mut(panel_len).enumerate() {
                    let slot = &mut out[s * w..(s + 1) * w];
                    let lo = (qi * w).min(valid);
                    let n = (valid - lo).min(w);
                    let src0 = &r0[lo..lo + n];
                    match (ku, r1) {
                        (1, _) => T::widen_into(src0, &mut slot[..n]),
                        (_, Some(r1)) => {
                            let src1 = &r1[lo..lo + n];
                            match (simd.pairs, T::as_bf16_bits(src0), T::as_bf16_bits(src1)) {
                                (Some(f), Some(b0), Some(b1)) if n <= 32 => {
                                    // SAFETY: both rows and the slot hold n ≤ 32 elements;
                                    // the kernel's ISA was detected when it was chosen.
                                    unsafe { f(n, b0.as_ptr(), b1.as_ptr(), slot.as_mut_ptr()) }
                                }
                                _ => {
                                    for ((o, a), b) in slot[..n].iter_mut().zip(src0).zip(src1) {
                                        *o = pair(*a, *b);
                                    }
                                }
                            }
                        }
                        (_, None) => {
                            for (o, a) in slot[..n].iter_mut().zip(src0) {
                                *o = f32::from_bits(u32::from(a.bf16_bits()));
                            }
                        }
                    }
                    slot[n..].fill(0.0);
                }
            }
            return;
        }
        for (qi, out) in out.chunks_exact_mut(panel_len).enumerate() {
            pack_panel(q0 + qi, out);
        }
    };
    if parallel {
        dst.par_chunks_mut(panel_len * GROUP)
            .enumerate()
            .for_each(pack_group);
    } else {
        dst.chunks_mut(panel_len * GROUP)
            .enumerate()
            .for_each(pack_group);
    }
}

/// Packs a full `W`-lane panel whose lanes are each contiguous along the depth (A
/// row-major, B transposed): slot `s` gathers element `s` of every lane, so each lane is
/// read in order and each slot written whole. With `W` known the gather unrolls into
/// plain loads and stores; the generic transposition (a runtime lane count, a compare
/// per element) cost as much as the micro-kernel on small matrices (batch 32 of
/// 128×64×128: 19% of the samples in packing). `false` when the lanes do not fit `v`.
#[inline(always)]
fn gather_lanes<T: Scalar, const W: usize>(
    v: View<'_, T>,
    x0: usize,
    p0: usize,
    kc: usize,
    out: &mut [f32],
) -> bool {
    let mut lanes: [&[T]; W] = [&[]; W];
    for (i, lane) in lanes.iter_mut().enumerate() {
        let start = v.offset + (x0 + i) * v.rs + p0;
        match v.data.get(start..start + kc) {
            Some(l) => *lane = l,
            None => return false,
        }
    }
    let ahead = 64 / std::mem::size_of::<T>();
    if T::as_f32(v.data).is_none() {
        // Each lane widened a block of depths at a time (one vectorised conversion per
        // lane and block), then transposed from the block into the slots.
        const DK: usize = 128;
        let mut block = [[0.0f32; DK]; W];
        for s0 in (0..kc).step_by(DK) {
            let depth = DK.min(kc - s0);
            for (row, lane) in block.iter_mut().zip(&lanes) {
                crate::simd::prefetch_run_l2(lane.as_ptr().wrapping_add(s0 + DK), DK);
                T::widen_into(&lane[s0..s0 + depth], &mut row[..depth]);
            }
            for (t, slot) in out[s0 * W..].chunks_exact_mut(W).take(depth).enumerate() {
                for (o, row) in slot.iter_mut().zip(&block) {
                    *o = row[t];
                }
            }
        }
        return true;
    }
    for (s, slot) in out.chunks_exact_mut(W).take(kc).enumerate() {
        if s % ahead == 0 {
            // Each lane is its own stream, rows apart: fetch its line 4 ahead.
            for lane in &lanes {
                crate::simd::prefetch(lane.as_ptr().wrapping_add(s + 4 * ahead));
            }
        }
        for (o, lane) in slot.iter_mut().zip(&lanes) {
            *o = lane[s].to_f32();
        }
    }
    true
}

/// Packs rows `0..m` × depths `p0..p0+kc` of A into MR-tall panels of `ku`-element slots:
/// `dst[panel·MR·steps + s·MR + i] = A[panel·MR + i, p0 + s]` for `ku = 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_a<T: Scalar>(
    a: View<'_, T>,
    m: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    ku: usize,
    dst: &mut [f32],
    parallel: bool,
    simd: PackSimd,
) {
    pack(a, m, p0, kc, mr, ku, dst, parallel, simd);
}

/// Packs depths `p0..p0+kc` × columns `0..n` of B into NR-wide panels of `ku`-element
/// slots: `dst[panel·NR·steps + s·NR + j] = B[p0 + s, panel·NR + j]` for `ku = 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_b<T: Scalar>(
    b: View<'_, T>,
    n: usize,
    p0: usize,
    kc: usize,
    nr: usize,
    ku: usize,
    dst: &mut [f32],
    parallel: bool,
    simd: PackSimd,
) {
    let bt = View {
        data: b.data,
        offset: b.offset,
        rs: b.cs,
        cs: b.rs,
    };
    pack(bt, n, p0, kc, nr, ku, dst, parallel, simd);
}

/// Two bf16 values in one 32-bit slot (the lower half holds the even k), reinterpreted as
/// f32 so pair panels share the f32 panels' buffers. Exact for bf16 sources, the only ones
/// the pair kernel is used for.
#[inline(always)]
fn pair<T: Scalar>(lo: T, hi: T) -> f32 {
    f32::from_bits(u32::from(lo.bf16_bits()) | (u32::from(hi.bf16_bits()) << 16))
}

/// A packing buffer whose start is 64-byte aligned, so every vector load of a packed panel
/// stays within one cache line (a heap `Vec<f32>` is only 16-byte aligned; measured: the
/// misaligned panels cost ~10% at 2048³).
#[derive(Default)]
pub(crate) struct PackBuf {
    data: Vec<f32>,
}

impl PackBuf {
    /// A 64-byte-aligned slice of `len` floats, growing the buffer if needed.
    pub(crate) fn get(&mut self, len: usize) -> Result<&mut [f32]> {
        const ALIGN: usize = 64 / std::mem::size_of::<f32>();
        if self.data.len() < len + ALIGN {
            self.data = try_vec(len + ALIGN, 0.0f32)?;
        }
        let skip = self.data.as_ptr().align_offset(64).min(ALIGN);
        Ok(&mut self.data[skip..skip + len])
    }

    /// Frees the buffer if it holds more than `floats` floats.
    fn release_above(&mut self, floats: usize) {
        if self.data.len() > floats {
            self.data = Vec::new();
        }
    }
}

thread_local! {
    /// Packing buffers of the calling thread, kept between calls: allocating and zeroing
    /// them per call cost ~10% at 512³.
    static PACK_BUFS: std::cell::RefCell<(PackBuf, PackBuf)> = std::cell::RefCell::default();
}

thread_local! {
    /// A packing buffer for work inside one parallel task (the column tasks' B blocks),
    /// kept between calls; separate from [`PACK_BUFS`], which the calling thread holds
    /// while its tasks run.
    static TASK_BUF: std::cell::RefCell<PackBuf> = std::cell::RefCell::default();
}

/// Runs `f` with this thread's task buffer (a fresh one if it is in use).
pub(crate) fn with_task_buf<R>(f: impl FnOnce(&mut PackBuf) -> R) -> R {
    TASK_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut PackBuf::default()),
    })
}

/// Runs `f` with this thread's packing buffers (fresh ones if they are already in use
/// further up the stack, which a nested call could do).
fn with_pack_bufs<R>(f: impl FnOnce(&mut PackBuf, &mut PackBuf) -> R) -> R {
    PACK_BUFS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            f(a, b)
        }
        Err(_) => f(&mut PackBuf::default(), &mut PackBuf::default()),
    })
}

/// The fused epilogue, applied to a finished row segment of C.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    activation: Option<xkern_core::Activation>,
}

impl Epilogue<'_> {
    fn apply(&self, row: &mut [f32], j0: usize) {
        if let Some(bias) = self.bias {
            for (x, &b) in row.iter_mut().zip(&bias[j0..]) {
                *x += b;
            }
        }
        if let Some(act) = self.activation {
            for x in row.iter_mut() {
                *x = act.apply_f32(*x);
            }
        }
    }
}

/// A raw pointer to C that tasks share; each task writes a disjoint set of tiles.
#[derive(Clone, Copy)]
pub(crate) struct CPtr(pub *mut f32);
// SAFETY: tasks write disjoint tiles of C (see `macro_tile`), and C outlives the parallel
// region that uses the pointer.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

/// Packed operands of one depth block: A in MR-tall panels `a_stride` floats apart, B in
/// NR-wide panels `b_stride` floats apart (normally `MR·kc` and `NR·kc`; larger when a
/// shorter depth is read from panels packed deeper), both `kc` deep.
#[derive(Clone, Copy)]
pub(crate) struct Packed<'a> {
    pub a: &'a [f32],
    pub a_stride: usize,
    pub b: &'a [f32],
    pub b_stride: usize,
    pub kc: usize,
    /// Memory the tile fetches into L2 while it runs, for the work after it.
    pub next: Ahead<'a>,
}

/// A strided block of memory fetched into L2 a slice per micro-kernel call while a
/// macro-tile runs: `segs` runs of `seg` bytes, `stride` bytes apart, in `bytes`. A task
/// of [`gemm_split`] names the source of its next depth block's panel here, so that
/// packing it copies from L2 instead of waiting on memory: at 128×4096×11008, packing a
/// 256 × 512 block of B from rows 44 KiB apart ran at 6–7 GB/s per thread, a sixth of the
/// product's time, while the memory sat idle during the kernels. Fetched during the
/// kernels ([`Walk`]), 4 interleaved rounds of 40 products: 69.0–72.5 → 62.4–66.1 ms
/// (medians), packing's samples 13.9% → 6.7%.
#[derive(Clone, Copy, Default)]
pub(crate) struct Ahead<'a> {
    bytes: &'a [u8],
    seg: usize,
    segs: usize,
    stride: usize,
}

impl Ahead<'_> {
    /// Cache lines a run can touch: its length's, plus one where it starts mid-line.
    fn lines_per_seg(&self) -> usize {
        self.seg.div_ceil(64) + 1
    }

    /// How many lines the block's [`Ahead::walk`]s can take.
    fn lines(&self) -> usize {
        if self.seg == 0 {
            0
        } else {
            self.segs * self.lines_per_seg()
        }
    }

    /// Lines `from..from + count` of the block (those that exist, and no more than
    /// `steps`), as a [`Walk`] of `steps` steps.
    fn walk(&self, from: usize, count: usize, steps: usize) -> Walk {
        let per = self.lines_per_seg();
        let count = count.min(steps).min(self.lines().saturating_sub(from));
        if count == 0 || steps == 0 {
            return Walk::NONE;
        }
        let (s, l) = (from / per, from % per);
        Walk {
            run: self.bytes.as_ptr().wrapping_add(s * self.stride),
            off: l * 64,
            last: self.seg - 1,
            wrap: per * 64,
            stride: self.stride,
            acc: 0,
            count,
            steps,
        }
    }
}

/// One micro-kernel call's share of an [`Ahead`] block: `count` consecutive lines of it,
/// which the kernel fetches one step at a time ([`Walk::step`] per k-step: step `p` is at
/// line `⌊p·count / steps⌋`, an integer error term deciding when to move on, so `steps`
/// steps visit exactly lines `0..count`), so the fetches never queue up behind each
/// other. A burst of about 50 prefetches before each call (128×4096×11008) stalled the
/// core, waiting for free miss buffers, about as long as the fetches saved.
#[derive(Clone, Copy)]
pub(crate) struct Walk {
    /// Start of the current run (an address for hints only: never dereferenced).
    run: *const u8,
    /// Byte offset of the current line in the run.
    off: usize,
    /// The run's last byte offset (a line offset past it is clamped there).
    last: usize,
    /// Byte offset at which the walk moves on to the next run.
    wrap: usize,
    stride: usize,
    /// The error term: `p·count mod steps` after step `p`.
    acc: usize,
    /// The lines walked, over `steps` steps (`count ≤ steps`; 0: nothing to fetch).
    count: usize,
    steps: usize,
}

impl Walk {
    /// Nothing to fetch.
    pub(crate) const NONE: Walk = Walk {
        run: std::ptr::null(),
        off: 0,
        last: 0,
        wrap: 64,
        stride: 0,
        acc: 0,
        count: 0,
        steps: 1,
    };

    /// Whether the walk fetches nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The current line's address (a prefetch hint), then moves on to the next line
    /// where the error term says so (branch-free: a compare and two selects).
    #[inline(always)]
    pub(crate) fn step(&mut self) -> *const u8 {
        let at = self.run.wrapping_add(self.off.min(self.last));
        self.acc += self.count;
        let on = usize::from(self.acc >= self.steps);
        self.acc -= on * self.steps;
        self.off += on * 64;
        if self.off >= self.wrap {
            self.off -= self.wrap;
            self.run = self.run.wrapping_add(self.stride);
        }
        at
    }
}

/// Runs the micro-kernels over rows `i0..i1` × columns `j0..j1` of C (row stride `ldc`);
/// panel `i / MR` of `p.a` holds rows `i..i+MR`, panel `j / NR` of `p.b` columns `j..j+NR`.
/// `last` applies the epilogue to each finished tile.
///
/// # Safety
/// `c` must point to a matrix with at least `i1` rows of `ldc ≥ j1` floats that no other
/// thread touches in `i0..i1 × j0..j1` during the call.
pub(crate) unsafe fn macro_tile<K: MicroKernel>(
    (i0, i1, j0, j1): (usize, usize, usize, usize),
    p: Packed<'_>,
    c: CPtr,
    ldc: usize,
    accumulate: bool,
    last: Option<Epilogue<'_>>,
) {
    let (mr, nr, kc) = (K::MR, K::NR, p.kc);
    let mut edge = [0.0f32; 12 * 32];
    debug_assert!(mr * nr <= edge.len());
    // Each strip's A panel is used by all its kernel calls, but arrives from L3 for the
    // first: timed per call (TSC), the first call of a strip took 1.4–1.6× the others at
    // 2048³, 4096³ and 128×4096×11008. So the next strip's panel is fetched into L2 a
    // slice (a cache line = 16 floats each) per call of this strip, which brought the
    // ratio to 1.1–1.35. Strips of fewer than four calls (attention's tiles) are left as
    // they were: fetched in one burst, the panel made no measurable difference there.
    let calls = (j1 - j0).div_ceil(nr);
    let ahead = if calls >= 4 {
        (mr * kc).div_ceil(16).div_ceil(calls)
    } else {
        0
    };
    // The next block's lines, spread evenly over the tile's calls.
    let per_call = p
        .next
        .lines()
        .div_ceil(((i1 - i0).div_ceil(mr) * calls).max(1));
    let mut next_line = 0;
    let steps = kc.div_ceil(K::STEPS_PER_FETCH);
    for ir in (i0..i1).step_by(mr) {
        let a = &p.a[ir / mr * p.a_stride..][..mr * kc];
        let rows = mr.min(i1 - ir);
        // (None after the tile's last strip: the panel beyond belongs to another task.)
        let next_a = if ir + mr < i1 {
            p.a.get((ir / mr + 1) * p.a_stride..).unwrap_or(&[])
        } else {
            &[]
        };
        let next_a = &next_a[..next_a.len().min(mr * kc)];
        for (call, jr) in (j0..j1).step_by(nr).enumerate() {
            for line in call * ahead..(call + 1) * ahead {
                crate::simd::prefetch_l2_at(next_a, line * 16);
            }
            // This call's share of the next block, walked by the kernel: up to one line a
            // walk step. Lines beyond that, and those of ragged calls, are not fetched
            // here (the packing's own prefetches take them): fetched in a burst, they
            // would stall the core as long as they save.
            let walk = p.next.walk(next_line, per_call, steps);
            next_line += per_call;
            let b = &p.b[jr / nr * p.b_stride..][..nr * kc];
            let cols = nr.min(j1 - jr);
            // SAFETY: (ir, jr) lies inside C by the caller's contract.
            let tile = unsafe { c.0.add(ir * ldc + jr) };
            if rows == mr && cols == nr {
                // SAFETY: panels hold kc·MR and kc·NR floats; the full tile is inside C and
                // ours alone; the kernel's ISA was detected when it was chosen.
                unsafe {
                    if walk.is_empty() {
                        K::run::<false>(kc, a.as_ptr(), b.as_ptr(), tile, ldc, accumulate, walk)
                    } else {
                        K::run::<true>(kc, a.as_ptr(), b.as_ptr(), tile, ldc, accumulate, walk)
                    }
                };
            } else if cols == nr
                // SAFETY: as above, for the tile's `rows` rows, all inside C.
                && unsafe { K::run_rows(rows, kc, a.as_ptr(), b.as_ptr(), tile, ldc, accumulate) }
            {
                // A ragged last strip of rows, computed in place by a shorter kernel.
            } else {
                // Ragged edge: run the kernel on a scratch tile and copy the valid part.
                for i in 0..rows {
                    for j in 0..cols {
                        // SAFETY: (ir + i, jr + j) is inside C.
                        edge[i * nr + j] = if accumulate {
                            // SAFETY: (ir + i, jr + j) is inside C, as above.
                            unsafe { *tile.add(i * ldc + j) }
                        } else {
                            0.0
                        };
                    }
                }
                // SAFETY: scratch holds MR × NR floats with row stride NR.
                unsafe {
                    K::run::<false>(
                        kc,
                        a.as_ptr(),
                        b.as_ptr(),
                        edge.as_mut_ptr(),
                        nr,
                        accumulate,
                        Walk::NONE,
                    )
                };
                for i in 0..rows {
                    for j in 0..cols {
                        // SAFETY: (ir + i, jr + j) is inside C.
                        unsafe { *tile.add(i * ldc + j) = edge[i * nr + j] };
                    }
                }
            }
            if let Some(epi) = last {
                for i in 0..rows {
                    // SAFETY: the row segment lies inside this task's tile of C.
                    let row = unsafe { std::slice::from_raw_parts_mut(tile.add(i * ldc), cols) };
                    epi.apply(row, jr);
                }
            }
        }
    }
}

/// Splits C into rectangular tasks `(i0, i1, j0, j1)`: no larger than `mc × ncb` (the
/// cache blocks), aligned to whole micro-tiles, and — when the matrix allows — at least
/// eight per thread, so that rayon's work stealing evens out the load (a 512 × 512 matrix
/// as three 192-row tasks on two threads idled a third of the time).
fn partition(
    m: usize,
    n: usize,
    mr: usize,
    nr: usize,
    b: Blocking,
    threads: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let (tiles_m, tiles_n) = (m.div_ceil(mr), n.div_ceil(nr));
    let (mut mb, mut nb) = (m.div_ceil(b.mc), n.div_ceil(b.ncb));
    let want = 8 * threads;
    while mb * nb < want {
        if tiles_m / mb >= 2 {
            mb += 1;
        } else if tiles_n / nb >= 2 {
            nb += 1;
        } else {
            break;
        }
    }
    let (rows, cols) = (tiles_m.div_ceil(mb) * mr, tiles_n.div_ceil(nb) * nr);
    (0..m)
        .step_by(rows)
        .flat_map(|i| {
            (0..n)
                .step_by(cols)
                .map(move |j| (i, (i + rows).min(m), j, (j + cols).min(n)))
        })
        .collect()
}

/// `C = epilogue(A · B)` for one matrix; `c` is `m × n` row-major. `parallel` spreads the
/// packing and the tiles over the current rayon pool.
#[allow(clippy::too_many_arguments)]
fn gemm<K: MicroKernel, T: Scalar>(
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
    parallel: bool,
    a_pack: &mut PackBuf,
    b_pack: &mut PackBuf,
) -> Result<()> {
    let (mr, nr) = (K::MR, K::NR);
    let Blocking {
        kc: kc_max,
        mc,
        ncb,
    } = blocking();
    // KC counts depths: pair kernels (KU = 2) take twice as many in the same panel bytes,
    // halving the C tile's loads and stores per multiply-add.
    let kc_max = kc_max * K::KU;
    if k == 0 {
        c.fill(0.0);
        for row in c.chunks_exact_mut(n) {
            epi.apply(row, 0);
        }
        return Ok(());
    }
    let a_len = m.div_ceil(mr) * mr * kc_max.min(k).div_ceil(K::KU);
    let b_len = n.div_ceil(nr) * nr * kc_max.min(k).div_ceil(K::KU);
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let tasks = partition(
        m,
        n,
        mr,
        nr,
        Blocking {
            kc: kc_max,
            mc,
            ncb,
        },
        threads,
    );
    if parallel {
        let mut split = |s, block, buf: &mut PackBuf| {
            gemm_split::<K, T>(s, a, b, &mut *c, (m, k, n), epi, (kc_max, block), buf)
        };
        if split(Split::Columns, ncb, a_pack)? || split(Split::Rows, mc, b_pack)? {
            return Ok(());
        }
    }
    let (a_pack, b_pack) = (a_pack.get(a_len)?, b_pack.get(b_len)?);
    let cp = CPtr(c.as_mut_ptr());
    for p0 in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - p0);
        let steps = kc.div_ceil(K::KU);
        let (ap, bp) = (
            &mut a_pack[..m.div_ceil(mr) * mr * steps],
            &mut b_pack[..n.div_ceil(nr) * nr * steps],
        );
        pack_a(a, m, p0, kc, mr, K::KU, ap, parallel, K::PACK);
        pack_b(b, n, p0, kc, nr, K::KU, bp, parallel, K::PACK);
        let last = (p0 + kc == k).then_some(epi);
        let (ap, bp) = (&*ap, &*bp);
        let packed = Packed {
            a: ap,
            a_stride: mr * steps,
            b: bp,
            b_stride: nr * steps,
            kc: steps,
            next: Ahead::default(),
        };
        // SAFETY: C is m × n with row stride n, and the tasks cover disjoint blocks of it.
        let run = |t: &(usize, usize, usize, usize)| unsafe {
            macro_tile::<K>(*t, packed, cp, n, p0 > 0, last)
        };
        if parallel {
            tasks.par_iter().for_each(run);
        } else {
            tasks.iter().for_each(run);
        }
    }
    Ok(())
}

/// Extent of the whole operand (A's rows for column tasks) up to which [`gemm_split`]'s
/// tasks fetch the source of their next depth block while the kernels run ([`Ahead`]).
/// Each packed element is then used by that many rows, so packing's share of the time
/// falls with it: a block packs at 6–7 GB/s per thread from memory, against 2·rows FLOPs
/// per element at 119 GFLOP/s per thread (Zen 4), about 37 / rows for f32, 29% at 128
/// rows and under 5% beyond this. Above it the walk would only add its per-step cost.
const FETCH_NEXT_MAX: usize = 768;

/// Packed floats up to which [`gemm_split`] packs a whole operand at once (128 MiB).
const SPLIT_MAX_WHOLE: usize = 32 << 20;

/// Which dimension of C [`gemm_split`]'s tasks divide.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Split {
    /// Column tasks: A packed whole, each task packs its own B blocks.
    Columns,
    /// Row tasks: B packed whole, each task packs its own A blocks.
    Rows,
}

/// The loop nest with the parallel loop over blocks of C's columns (BLIS's `jc` loop) or,
/// for narrow products, of its rows: one operand is packed whole once, in one parallel
/// pass; then each task owns `width` columns (rows) of C and, for every depth block, packs
/// its own block of the other operand into a buffer that stays in its L2, and runs its
/// tiles against it. No block is shared, so there is no barrier per depth block, and a
/// task's packing (memory-bound) overlaps the other threads' kernels. The per-depth-block
/// nest it replaces packed all of B and all of A for each depth block, each in its own
/// parallel pass, then ran the tiles: three barriers per block, and the packed B (`KC ×
/// N`) written to and read back from L3 or memory (at 128×4096×11008, 11 MiB per block).
/// `Ok(false)` where it does not apply: tasks (about four per thread) narrower than two
/// micro-tiles, the whole operand larger than [`SPLIT_MAX_WHOLE`] packed, or no memory
/// for it.
#[allow(clippy::too_many_arguments)]
fn gemm_split<K: MicroKernel, T: Scalar>(
    split: Split,
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: Epilogue<'_>,
    (kc_max, block): (usize, usize),
    whole_pack: &mut PackBuf,
) -> Result<bool> {
    let (mr, nr) = (K::MR, K::NR);
    // The divided extent, its micro-tile, and the whole operand's extent and micro-tile.
    let (extent, tile, whole_extent, whole_tile) = match split {
        Split::Columns => (n, nr, m, mr),
        Split::Rows => (m, mr, n, nr),
    };
    let threads = rayon::current_num_threads().max(1);
    let width = extent
        .div_ceil(4 * threads)
        .next_multiple_of(tile)
        .min(block.next_multiple_of(tile));
    let whole_len = whole_extent.div_ceil(whole_tile) * whole_tile;
    // (first depth, depth, offset in the whole packed operand) of every depth block.
    let mut blocks = Vec::new();
    let mut total = 0;
    for p0 in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - p0);
        blocks.push((p0, kc, total));
        total += whole_len * kc.div_ceil(K::KU);
    }
    if width < 2 * tile || total > SPLIT_MAX_WHOLE {
        return Ok(false);
    }
    // Short of memory for the whole operand, the per-depth-block nest (which needs far
    // less) runs instead.
    let Ok(wp) = whole_pack.get(total) else {
        return Ok(false);
    };
    let mut parts = Vec::with_capacity(blocks.len());
    let mut rest = &mut wp[..];
    for &(p0, kc, _) in &blocks {
        let (part, tail) = rest.split_at_mut(whole_len * kc.div_ceil(K::KU));
        parts.push((p0, kc, part));
        rest = tail;
    }
    // In parallel over depth blocks, and within each where there are fewer blocks than
    // threads.
    let inner = parts.len() < threads;
    parts
        .into_par_iter()
        .for_each(|(p0, kc, part)| match split {
            Split::Columns => pack_a(a, m, p0, kc, mr, K::KU, part, inner, K::PACK),
            Split::Rows => pack_b(b, n, p0, kc, nr, K::KU, part, inner, K::PACK),
        });
    let wp = &*wp;
    let cp = CPtr(c.as_mut_ptr());
    let fetch_next = whole_extent <= FETCH_NEXT_MAX;
    (0..extent.div_ceil(width))
        .into_par_iter()
        .try_for_each(|t| -> Result<()> {
            let c_base = cp; // the whole (Sync) wrapper, not its raw field
            let (x0, x1) = (t * width, ((t + 1) * width).min(extent));
            let w = x1 - x0;
            // The task's part of C, of the operand it packs, and its tile range; the
            // epilogue sees a column task's columns from 0, so its bias starts at x0.
            let (own_a, own_b, range, corner, epi_t) = match split {
                Split::Columns => (
                    a,
                    View {
                        offset: b.offset + x0 * b.cs,
                        ..b
                    },
                    (0, m, 0, w),
                    x0,
                    Epilogue {
                        bias: epi.bias.map(|x| &x[x0..]),
                        activation: epi.activation,
                    },
                ),
                Split::Rows => (
                    View {
                        offset: a.offset + x0 * a.rs,
                        ..a
                    },
                    b,
                    (0, w, 0, n),
                    x0 * n,
                    epi,
                ),
            };
            with_task_buf(|buf| {
                let own_len = w.div_ceil(tile) * tile;
                let buf = buf.get(own_len * kc_max.min(k).div_ceil(K::KU))?;
                for (bi, &(p0, kc, off)) in blocks.iter().enumerate() {
                    let steps = kc.div_ceil(K::KU);
                    let next = match (blocks.get(bi + 1).filter(|_| fetch_next), split) {
                        (Some(&(p0, kc, _)), Split::Columns) => own_b.ahead((p0, kc), (0, w)),
                        (Some(&(p0, kc, _)), Split::Rows) => own_a.ahead((0, w), (p0, kc)),
                        (None, _) => Ahead::default(),
                    };
                    let own = &mut buf[..own_len * steps];
                    let whole = &wp[off..off + whole_len * steps];
                    let (pa, pb) = match split {
                        Split::Columns => {
                            pack_b(own_b, w, p0, kc, nr, K::KU, own, false, K::PACK);
                            (whole, &*own)
                        }
                        Split::Rows => {
                            pack_a(own_a, w, p0, kc, mr, K::KU, own, false, K::PACK);
                            (&*own, whole)
                        }
                    };
                    let packed = Packed {
                        a: pa,
                        a_stride: mr * steps,
                        b: pb,
                        b_stride: nr * steps,
                        kc: steps,
                        next,
                    };
                    let last = (p0 + kc == k).then_some(epi_t);
                    // SAFETY: C is m × n with row stride n; the task's columns (rows) of
                    // it, from `corner` on, belong to this task alone.
                    unsafe {
                        macro_tile::<K>(range, packed, CPtr(c_base.0.add(corner)), n, p0 > 0, last)
                    };
                }
                Ok(())
            })
        })?;
    // A whole operand beyond 32 MiB is not kept in the thread's cache of buffers (at
    // 4096² it would hold 64 MiB per calling thread for good).
    whole_pack.release_above(8 << 20);
    Ok(true)
}

fn matmul_typed<K: MicroKernel, T: Scalar>(
    isa: Isa,
    spec: &MatmulSpec,
    a: &[T],
    b: &[T],
    out: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<()> {
    let (m, k, n, batch) = (spec.m, spec.k, spec.n, spec.batch());
    let view = |data, off, v: &xkern_core::MatrixView| View {
        data,
        offset: off,
        rs: v.row_stride,
        cs: v.col_stride,
    };
    let av = |bi| view(a, spec.a_offset(bi), &spec.a);
    let bv = |bi| view(b, spec.b_offset(bi), &spec.b);
    if (m == 1 || n == 1)
        && k > 0
        && each_entry(out, m * n, |bi, c| {
            let streamed = gemv::gemv(isa, av(bi), bv(bi), c, (m, k, n))?;
            if streamed {
                for row in c.chunks_exact_mut(n) {
                    epi.apply(row, 0);
                }
            }
            Ok(streamed)
        })?
    {
        return Ok(());
    }
    // Few rows of A: B streamed in place (see `skinny`); every entry or none.
    if matches!(isa, Isa::Avx512)
        && (batch == 1 || m * n * k > SMALL)
        && (2..=16).contains(&m)
        && each_entry(out, m * n, |bi, c| {
            skinny::skinny(av(bi), bv(bi), c, (m, k, n), epi)
        })?
    {
        return Ok(());
    }
    // Row-major f32 operands read in place (see `direct`); every entry or none.
    if matches!(isa, Isa::Avx512)
        && (batch == 1 || m * n * k > SMALL)
        && (m * n * k <= DIRECT_MAX || n <= DIRECT_NARROW)
        && each_entry(out, m * n, |bi, c| {
            direct::product(av(bi), bv(bi), c, (m, k, n), epi, true)
        })?
    {
        return Ok(());
    }
    if matches!(isa, Isa::Avx512) && batch > 1 && m * n * k <= SMALL {
        // Many small f32 matrices: one per task, read in place (see `direct`); every entry
        // or none.
        let done = out
            .par_chunks_mut(m * n)
            .enumerate()
            .map(|(bi, c)| direct::product(av(bi), bv(bi), c, (m, k, n), epi, false))
            .collect::<Result<Vec<bool>>>()?;
        if done.iter().all(|&d| d) {
            return Ok(());
        }
    }
    if batch > 1 && m * n * k <= SMALL {
        // Many small matrices: one matrix per task, each with its own packing buffers.
        return out
            .par_chunks_mut(m * n)
            .enumerate()
            .try_for_each(|(bi, c)| {
                with_pack_bufs(|ap, bp| {
                    gemm::<K, T>(av(bi), bv(bi), c, (m, k, n), epi, false, ap, bp)
                })
            });
    }
    with_pack_bufs(|ap, bp| {
        for (bi, c) in out.chunks_exact_mut(m * n).enumerate() {
            gemm::<K, T>(av(bi), bv(bi), c, (m, k, n), epi, true, ap, bp)?;
        }
        Ok(())
    })
}

fn matmul_isa<K: MicroKernel>(
    isa: Isa,
    spec: &MatmulSpec,
    a: &CpuStorage,
    b: &CpuStorage,
    out: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<()> {
    match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => matmul_typed::<K, _>(isa, spec, a, b, out, epi),
        (CpuStorage::F16(a), CpuStorage::F16(b)) => matmul_typed::<K, _>(isa, spec, a, b, out, epi),
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
            matmul_typed::<K, _>(isa, spec, a, b, out, epi)
        }
        _ => Err(xkern_core::Error::Backend {
            backend: "cpu",
            message: "matmul operands of different or integer dtypes".into(),
        }),
    }
}

/// `bf16_dot`: the device found AVX-512 BF16 at construction; bf16 products then run on
/// the `vdpbf16ps` kernel (which treats bf16 denormal inputs as zero).
pub(crate) fn matmul(
    isa: Isa,
    bf16_dot: bool,
    spec: &MatmulSpec,
    a: &CpuStorage,
    b: &CpuStorage,
    bias: Option<&CpuStorage>,
) -> Result<CpuStorage> {
    let (m, n, batch) = (spec.m, spec.n, spec.batch());
    // Every path overwrites all of C (the packed GEMM stores its first depth block, K = 0
    // fills zeros, GEMV and the skinny path write each output): no fill pass first (a
    // serial 2 MiB memset was ~5% of batch 32 × 128×64×128, with the other core idle).
    let mut out = try_vec_overwrite(batch * m * n, 0.0f32)?;
    if out.is_empty() {
        return CpuStorage::from_f32(spec.dtype, out);
    }
    let bias_row = match (bias, &spec.bias) {
        (Some(s), Some(view)) => {
            let mut v = try_vec(n, 0.0f32)?;
            s.gather_f32(view.offset, view.stride, 0, 1, &mut v);
            Some(v)
        }
        _ => None,
    };
    let epi = Epilogue {
        bias: bias_row.as_deref(),
        activation: spec.activation,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if bf16_dot && matches!(a, CpuStorage::BF16(_)) => {
            matmul_isa::<kernel_avx512_bf16::Avx512Bf16>(isa, spec, a, b, &mut out, epi)?
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => matmul_isa::<kernel_avx512::Avx512>(isa, spec, a, b, &mut out, epi)?,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => matmul_isa::<kernel_avx2::Avx2>(isa, spec, a, b, &mut out, epi)?,
        _ => matmul_isa::<kernel_generic::Generic>(isa, spec, a, b, &mut out, epi)?,
    }
    CpuStorage::from_f32(spec.dtype, out)
}

#[cfg(test)]
mod kernel_speed {
    use super::*;

    /// Kernel-only throughput with panels in L1 (a tuning aid, not a test of speed:
    /// `cargo test --release -p xkern-cpu kernel_in_l1 -- --ignored --nocapture`).
    #[test]
    #[ignore = "prints a measurement; run by hand in release mode"]
    fn kernel_in_l1() {
        fn run<K: MicroKernel>(name: &str) {
            let kc = 256;
            let a = vec![1.0f32; K::MR * kc];
            let b = vec![1.0f32; K::NR * kc];
            let mut c = vec![0.0f32; K::MR * K::NR];
            let iters = 20_000;
            let t = std::time::Instant::now();
            for _ in 0..iters {
                // SAFETY: panels and tile sized for the kernel; ISA checked below.
                unsafe {
                    K::run::<false>(
                        kc,
                        a.as_ptr(),
                        b.as_ptr(),
                        c.as_mut_ptr(),
                        K::NR,
                        true,
                        Walk::NONE,
                    )
                };
            }
            let flops = 2.0 * (K::MR * K::NR * kc * K::KU * iters) as f64;
            println!(
                "{name}: {:.1} GFLOP/s on one thread",
                flops / t.elapsed().as_secs_f64() / 1e9
            );
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx512.is_available() {
            run::<kernel_avx512::Avx512>("avx512 12x32");
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            run::<kernel_avx512_bf16::Avx512Bf16>("avx512-bf16 12x32 (bf16 pairs)");
        }
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.is_available() {
            run::<kernel_avx2::Avx2>("avx2 6x16");
        }
        run::<kernel_generic::Generic>("generic 4x16");
    }
}

#[cfg(test)]
mod fetch_walk {
    use super::*;
    use std::collections::BTreeSet;

    /// The cache lines (addresses / 64) that walks over `ahead`, `per_call` lines each
    /// in `steps` steps (one [`Walk::step`] a step, as the kernels take them), fetch.
    fn walked(ahead: &Ahead<'_>, per_call: usize, steps: usize) -> BTreeSet<usize> {
        let mut lines = BTreeSet::new();
        let mut from = 0;
        while from < ahead.lines() {
            let mut walk = ahead.walk(from, per_call, steps);
            if !walk.is_empty() {
                for _ in 0..steps {
                    lines.insert(walk.step() as usize / 64);
                }
            }
            from += per_call.min(steps);
        }
        lines
    }

    /// The walks fetch every line of the block and nothing outside its runs, however the
    /// lines are shared out between calls and steps, for runs that start mid-line, run
    /// along either axis, or are shorter than a line.
    #[test]
    fn walks_cover_the_block_and_nothing_else() {
        let data: Vec<f32> = (0..64 * 1024).map(|i| i as f32).collect();
        // (offset, rs, cs, rows, cols) of views into `data`.
        let cases = [
            (0, 640, 1, (3, 40), (16, 200)), // row-major, aligned rows
            (5, 643, 1, (1, 37), (3, 161)),  // row-major, runs start mid-line
            (7, 1, 517, (2, 90), (1, 60)),   // column-major (a transposed view)
            (0, 100, 1, (0, 50), (10, 3)),   // runs shorter than a line
            (9, 300, 1, (4, 1), (0, 299)),   // a single run
        ];
        for (offset, rs, cs, (r0, rows), (c0, cols)) in cases {
            let v = View {
                data: &data[..],
                offset,
                rs,
                cs,
            };
            let ahead = v.ahead((r0, rows), (c0, cols));
            let mut want = BTreeSet::new();
            for r in r0..r0 + rows {
                for c in c0..c0 + cols {
                    want.insert(std::ptr::from_ref(&data[offset + r * rs + c * cs]) as usize / 64);
                }
            }
            let shares = [
                (1, 1),
                (3, 256),
                (47, 256),
                (256, 256),
                (5, 3),
                (1000, 7),
                (272, 273),
                (300, 301),
                (1, 1000),
                (999, 1000),
            ];
            for (per_call, steps) in shares {
                let got = walked(&ahead, per_call, steps);
                assert_eq!(
                    got, want,
                    "view {offset},{rs},{cs} {rows}×{cols}, {per_call}/{steps}"
                );
            }
        }
    }

    /// Views that are strided both ways, and empty ones, name nothing to fetch.
    #[test]
    fn nothing_to_fetch() {
        let data = vec![0.0f32; 1000];
        let v = View {
            data: &data[..],
            offset: 0,
            rs: 20,
            cs: 2,
        };
        assert_eq!(v.ahead((0, 10), (0, 10)).lines(), 0);
        let v = View { cs: 1, ..v };
        assert_eq!(v.ahead((0, 0), (0, 10)).lines(), 0);
        assert_eq!(v.ahead((0, 10), (0, 0)).lines(), 0);
        assert!(v.ahead((0, 3), (0, 10)).walk(0, 5, 4).count == 4);
        assert!(v.ahead((60, 3), (0, 10)).walk(0, 5, 4).is_empty());
        assert!(Walk::NONE.is_empty());
    }
}
