//! Vectorised kernels over one contiguous row (or chunk of a row), compiled once per
//! instruction set.
//!
//! Each kernel is a plain Rust loop over 16 independent lanes — enough accumulators to
//! hide add latency and to fill a 512-bit register — written so the compiler vectorises
//! it; the `isa_kernels!` macro compiles the same bodies inside `#[target_feature]`
//! functions for AVX-512 and AVX2, and [`RowKernels::for_isa`] picks the set once per
//! call site. Lanes are combined in a fixed order (wider registers do not change the
//! 16-lane order), so the AVX2 and AVX-512 kernels give the same bits; the portable ones
//! differ only where an exp is taken (unfused [`exp`] against [`exp_fma`], ≤ 2 ulp each).
//!
//! Sums accumulate in f64 (these kernels are bound by memory bandwidth, where the f64
//! adds are free); max/min propagate NaN; argmax/argmin keep the first index on ties and
//! report the first NaN.

// Kernel code: lane arrays are indexed by constant-bounded loops and rows by their
// own lengths.
#![allow(clippy::indexing_slicing)]

use crate::simd::Isa;
use crate::simd::exp::{exp, exp_fma};
use crate::simd::nan_max as max_nan;

const LANES: usize = 16;

/// The pieces an ISA may do better than the generic code compiled for it: `exp` of one
/// value and `exp(x − m)` of one 16-lane chunk (the same function: [`exp`] in the portable
/// kernels, [`exp_fma`] where FMA exists, ≤ 2 ulp either way), and the NaN-propagating
/// extreme of a row.
trait RowOps {
    fn exp1(x: f32) -> f32;
    fn exp16(x: &[f32; LANES], m: f32) -> [f32; LANES];
    fn extreme(x: &[f32], sign: f32) -> f32;
    /// Whether [`RowOps::stream16`] bypasses the caches.
    const STREAMS: bool;
    /// Stores 16 floats at `p`, 64-byte aligned, with a non-temporal store where
    /// [`RowOps::STREAMS`] (weakly ordered: see [`crate::simd::store_fence`]).
    ///
    /// # Safety
    /// `p` is valid for 16 floats and 64-byte aligned.
    unsafe fn stream16(p: *mut f32, v: &[f32; LANES]);
}

/// The scalar exp per lane (which compilers vectorise) and [`extreme`] as written: [`exp`]
/// in the portable kernels (`FMA = false`), [`exp_fma`] in kernels compiled with FMA, where
/// its `mul_add`s are single instructions (16 operations per lane where [`exp`] takes 24;
/// bit for bit what the AVX-512 exp gives).
struct ScalarOps<const FMA: bool>;

/// The portable kernels' operations.
type PortableOps = ScalarOps<false>;
/// The AVX2+FMA kernels' operations.
#[cfg(target_arch = "x86_64")]
type FmaOps = ScalarOps<true>;

impl<const FMA: bool> RowOps for ScalarOps<FMA> {
    #[inline(always)]
    fn exp1(x: f32) -> f32 {
        if FMA { exp_fma(x) } else { exp(x) }
    }

    #[inline(always)]
    fn exp16(x: &[f32; LANES], m: f32) -> [f32; LANES] {
        let mut o = [0.0f32; LANES];
        for i in 0..LANES {
            o[i] = Self::exp1(x[i] - m);
        }
        o
    }

    #[inline(always)]
    fn extreme(x: &[f32], sign: f32) -> f32 {
        extreme(x, sign)
    }

    /// The AVX2 kernels (`FMA`) stream; the portable ones store plainly.
    const STREAMS: bool = FMA && cfg!(target_arch = "x86_64");

    #[inline(always)]
    unsafe fn stream16(p: *mut f32, v: &[f32; LANES]) {
        #[cfg(target_arch = "x86_64")]
        if FMA {
            // SAFETY: the caller's contract; FMA (the AVX2 kernels) implies AVX.
            unsafe { crate::simd::stream16_avx(p, v) };
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, LANES) };
    }
}

/// [`crate::simd::exp::exp16_avx512`] ([`exp_fma`]'s bits), and the extreme compiled for
/// AVX2: compiled for AVX-512 the NaN-propagating max becomes mask compares and blends,
/// 0.15–0.18 ns per element against 0.09 for the AVX2 code (Zen 4, `rows_speed`). Only
/// the AVX-512 kernels use it.
#[cfg(target_arch = "x86_64")]
struct Avx512Ops;

#[cfg(target_arch = "x86_64")]
impl RowOps for Avx512Ops {
    #[inline(always)]
    fn exp1(x: f32) -> f32 {
        exp_fma(x)
    }

    #[inline(always)]
    fn exp16(x: &[f32; LANES], m: f32) -> [f32; LANES] {
        // SAFETY: `Avx512Ops` is named only by the `avx512` kernels below, which run only
        // on CPUs where AVX-512F was detected.
        unsafe { crate::simd::exp::exp16_avx512(x, m) }
    }

    #[inline(always)]
    fn extreme(x: &[f32], sign: f32) -> f32 {
        // SAFETY: as above; `Isa::Avx512` also requires AVX2 and FMA (simd/mod.rs).
        unsafe { (avx2::KERNELS.extreme)(x, sign) }
    }

    const STREAMS: bool = true;

    #[inline(always)]
    unsafe fn stream16(p: *mut f32, v: &[f32; LANES]) {
        // SAFETY: the caller's contract; AVX-512F was detected (see `exp16`).
        unsafe { crate::simd::stream16_avx512(p, v) }
    }
}

/// Starts loading the cache line of `next` holding element `at` (none past its end), so
/// that the next row streams in while this one is computed from cache.
#[inline(always)]
fn prefetch(next: &[f32], at: usize) {
    if let Some(p) = next.get(at) {
        crate::simd::prefetch(p);
    }
}

/// The 16 lanes of an exact chunk as an array (chunks of `chunks_exact(LANES)`).
#[inline(always)]
fn lanes(c: &[f32]) -> &[f32; LANES] {
    c.try_into().unwrap_or(&[0.0; LANES])
}

/// Combines 16 lanes pairwise in a fixed order.
#[inline(always)]
fn fold_lanes<T: Copy>(mut v: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            v[i] = f(v[i], v[i + w]);
        }
    }
    v[0]
}

/// Σ x, in f64.
#[inline(always)]
fn sum(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f64::from(c[i]);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f64::from(v);
    }
    fold_lanes(acc, |a, b| a + b)
}

/// Σ exp(x − m), in f64.
#[inline(always)]
fn sum_exp<E: RowOps>(x: &[f32], m: f32) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        let e = E::exp16(lanes(c), m);
        for i in 0..LANES {
            acc[i] += f64::from(e[i]);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f64::from(E::exp1(v - m));
    }
    fold_lanes(acc, |a, b| a + b)
}

/// max(sign·x)·sign: the NaN-propagating max (sign 1) or min (sign −1); −∞·sign when empty.
///
/// Four 16-lane accumulators over 64-element blocks: with one, each chunk's compare and
/// blend waited for the previous chunk's (5.4 cycles per 16 elements on Zen 4, where the
/// loads allow one or two).
#[inline(always)]
fn extreme(x: &[f32], sign: f32) -> f32 {
    let (mut a0, mut a1, mut a2, mut a3) = (
        [f32::NEG_INFINITY; LANES],
        [f32::NEG_INFINITY; LANES],
        [f32::NEG_INFINITY; LANES],
        [f32::NEG_INFINITY; LANES],
    );
    let blocks = x.chunks_exact(4 * LANES);
    let rest = blocks.remainder();
    for b in blocks {
        let b: &[f32; 4 * LANES] = b.try_into().unwrap_or(&[0.0; 4 * LANES]);
        for i in 0..LANES {
            a0[i] = max_nan(a0[i], sign * b[i]);
            a1[i] = max_nan(a1[i], sign * b[LANES + i]);
            a2[i] = max_nan(a2[i], sign * b[2 * LANES + i]);
            a3[i] = max_nan(a3[i], sign * b[3 * LANES + i]);
        }
    }
    let chunks = rest.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        let c = lanes(c);
        for i in 0..LANES {
            a0[i] = max_nan(a0[i], sign * c[i]);
        }
    }
    for (a, &v) in a1.iter_mut().zip(tail) {
        *a = max_nan(*a, sign * v);
    }
    let mut m = [0.0f32; LANES];
    for i in 0..LANES {
        m[i] = max_nan(max_nan(a0[i], a1[i]), max_nan(a2[i], a3[i]));
    }
    sign * fold_lanes(m, max_nan)
}

/// (value, index) of the first maximum of sign·x, or of the first NaN; `None` when empty.
///
/// Two passes: the NaN-propagating extreme (the fast `extreme` loop, no index tracking),
/// then the first position holding it ([`first`]; the row is in cache from the first
/// pass). ±0 compare equal, so the first zero wins, as with a strict `>`. Per element on
/// a cached row (Zen 4, `rows_speed`): 0.09–0.14 ns with AVX-512 or AVX2, where a one-pass
/// loop tracking indices in mask registers took 0.20 and the first search's old
/// chunk-by-chunk form left AVX2 at 0.31.
#[inline(always)]
fn arg<E: RowOps>(x: &[f32], sign: f32) -> Option<(f32, u32)> {
    if x.is_empty() {
        return None;
    }
    let m = E::extreme(x, sign);
    let j = if m.is_nan() {
        first(x, |v| v.is_nan())
    } else {
        first(x, |v| v == m)
    }?;
    x.get(j).map(|&v| (v, j as u32))
}

/// The first index where `hit` holds: blocks of 64 elements are screened with lane flags
/// OR-ed together (vector compares, no branch per chunk), and the block with a hit is
/// then searched in order.
#[inline(always)]
fn first(x: &[f32], hit: impl Fn(f32) -> bool) -> Option<usize> {
    const BLOCK: usize = 4 * LANES;
    let blocks = x.chunks_exact(BLOCK);
    let base = x.len() - blocks.remainder().len();
    for (bi, b) in blocks.enumerate() {
        let mut any = [0u32; LANES];
        for c in b.chunks_exact(LANES) {
            for i in 0..LANES {
                any[i] |= u32::from(hit(c[i]));
            }
        }
        if any.iter().any(|&a| a != 0) {
            return b.iter().position(|&v| hit(v)).map(|i| bi * BLOCK + i);
        }
    }
    x[base..].iter().position(|&v| hit(v)).map(|i| base + i)
}

/// `out ← exp(x − m)` element-wise (exact 16-lane chunks, then the tail, so the loop
/// vectorises without bounds checks); returns Σ out in f64, added as [`sum`] adds (16 lanes, then the tail, then the lanes
/// pairwise), and prefetches `next` one cache line per chunk.
#[inline(always)]
fn exp_into<E: RowOps>(x: &[f32], out: &mut [f32], m: f32, next: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut oc = out.chunks_exact_mut(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (ci, (o, v)) in (&mut oc).zip(&mut xc).enumerate() {
        prefetch(next, ci * LANES);
        let e = E::exp16(lanes(v), m);
        o.copy_from_slice(&e);
        for i in 0..LANES {
            acc[i] += f64::from(e[i]);
        }
    }
    for ((o, &v), a) in oc
        .into_remainder()
        .iter_mut()
        .zip(xc.remainder())
        .zip(acc.iter_mut())
    {
        *o = E::exp1(v - m);
        *a += f64::from(*o);
    }
    fold_lanes(acc, |a, b| a + b)
}

/// `x ← exp(x − m)` in place, returning the f32 sum (the online-softmax step of attention).
#[inline(always)]
fn exp_shift<E: RowOps>(x: &mut [f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let e = E::exp16(lanes(c), m);
        c.copy_from_slice(&e);
        for i in 0..LANES {
            acc[i] += e[i];
        }
    }
    for (v, a) in chunks.into_remainder().iter_mut().zip(acc.iter_mut()) {
        *v = E::exp1(*v - m);
        *a += *v;
    }
    fold_lanes(acc, |a, b| a + b)
}

/// One online-softmax step of flash attention over a key-major tile `s[p·w + q]` of raw
/// scores (key `p`, query lane `q`; `w` a multiple of 16), every lane its own softmax row:
/// scores are scaled by `scale`, and masked (−∞) at keys `p ≥ limit[q]` when `limit` is
/// not empty; then `m' = max(m, max_p s)` (NaN-propagating), `c = exp(m − m')`,
/// `s ← exp(s − m')`, `l ← l·c + Σ_p s`, with `corr ← c`. A lane that has seen no key
/// yet (`m' = −∞`) gets `s = 0` and `c = 0` (its sums and output are still zero). The
/// lanes are vertical: no horizontal reduction per row, as the query-major tile needed.
#[inline(always)]
fn softmax_cols<E: RowOps>(s: &mut [f32], w: usize, scale: f32, limit: &[u32], st: ColState<'_>) {
    let ColState { m, l, corr } = st;
    for g in (0..w.min(m.len())).step_by(LANES) {
        let (mg, lg, cg) = (
            &mut m[g..g + LANES],
            &mut l[g..g + LANES],
            &mut corr[g..g + LANES],
        );
        let mut mx = [f32::NEG_INFINITY; LANES];
        if let Some(lim) = limit.get(g..g + LANES) {
            for (p, row) in s.chunks_exact_mut(w).enumerate() {
                let r = &mut row[g..g + LANES];
                for i in 0..LANES {
                    let x = if p as u32 >= lim[i] {
                        f32::NEG_INFINITY
                    } else {
                        r[i] * scale
                    };
                    r[i] = x;
                    mx[i] = max_nan(mx[i], x);
                }
            }
        } else {
            for row in s.chunks_exact_mut(w) {
                let r = &mut row[g..g + LANES];
                for i in 0..LANES {
                    let x = r[i] * scale;
                    r[i] = x;
                    mx[i] = max_nan(mx[i], x);
                }
            }
        }
        let mut shift = [0.0f32; LANES];
        for i in 0..LANES {
            let m_new = max_nan(mg[i], mx[i]);
            shift[i] = if m_new == f32::NEG_INFINITY {
                0.0
            } else {
                m_new
            };
            cg[i] = E::exp1(mg[i] - shift[i]);
            mg[i] = m_new;
        }
        let mut acc = [0.0f32; LANES];
        for row in s.chunks_exact_mut(w) {
            let r = &mut row[g..g + LANES];
            let mut d = [0.0f32; LANES];
            for i in 0..LANES {
                d[i] = r[i] - shift[i];
            }
            let e = E::exp16(&d, 0.0);
            r.copy_from_slice(&e);
            for i in 0..LANES {
                acc[i] += e[i];
            }
        }
        for i in 0..LANES {
            lg[i] = lg[i] * cg[i] + acc[i];
        }
    }
}

/// `x[r·w + j] *= f[j]` for every row `r` of `x` (`w = f.len()`): the online softmax's
/// correction of attention's transposed output, one factor per query lane.
#[inline(always)]
fn mul_cols(x: &mut [f32], f: &[f32]) {
    if f.is_empty() {
        return;
    }
    for row in x.chunks_exact_mut(f.len()) {
        for (o, &c) in row.iter_mut().zip(f) {
            *o *= c;
        }
    }
}

/// The online-softmax state of a tile's query lanes: running max, sum, and the last
/// step's correction factor.
pub(crate) struct ColState<'a> {
    pub m: &'a mut [f32],
    pub l: &'a mut [f32],
    pub corr: &'a mut [f32],
}

/// Softmax (or log-softmax) of one row into `out`: max, then `exp(x − max)` written to
/// `out` and summed as it goes, then one scaling pass (the row is in cache). `next`, the
/// row to come (or empty), is prefetched during the passes from cache, so that memory
/// works while the exponentials are computed instead of after.
///
/// With `stream` (outputs too large to stay in cache) the output is written once, with
/// non-temporal stores where the ISA has them ([`RowOps::STREAMS`]): the exponentials go
/// to a per-thread scratch row, and the scaling pass streams from it to `out`, so `out`'s
/// lines are never read for ownership (a third of the traffic of a softmax through the
/// cache). The caller ends each task with [`crate::simd::store_fence`]. The bits are the
/// same either way.
#[inline(always)]
fn softmax<E: RowOps>(x: &[f32], out: &mut [f32], log: bool, next: &[f32], stream: bool) {
    let m = E::extreme(x, 1.0);
    let stream = stream && E::STREAMS;
    if log {
        let lse = sum_exp::<E>(x, m).ln() as f32;
        write_map::<E>(out, x, next, stream, |v| v - m - lse);
    } else if stream {
        let mut scratch = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
        if scratch.len() < x.len() {
            scratch.resize(x.len(), 0.0);
        }
        let e = &mut scratch[..x.len()];
        let inv = (1.0 / exp_into::<E>(x, e, m, next)) as f32;
        write_map::<E>(out, e, &[], true, |v| v * inv);
        SCRATCH.with(|c| *c.borrow_mut() = scratch);
    } else {
        let inv = (1.0 / exp_into::<E>(x, out, m, next)) as f32;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

thread_local! {
    /// [`softmax`]'s scratch row for streamed outputs (taken out while in use).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[i] = f(src[i])`, prefetching `next` a line per chunk; with `stream` the whole
/// 64-byte lines of `out` are written by [`RowOps::stream16`] (the unaligned head and the
/// tail by plain stores).
#[inline(always)]
fn write_map<E: RowOps>(
    out: &mut [f32],
    src: &[f32],
    next: &[f32],
    stream: bool,
    f: impl Fn(f32) -> f32,
) {
    let n = out.len().min(src.len());
    let head = if stream {
        out.as_ptr().align_offset(64).min(n)
    } else {
        n
    };
    let (o_head, o_body) = out[..n].split_at_mut(head);
    let (s_head, s_body) = src[..n].split_at(head);
    for (ci, (o, v)) in o_head
        .chunks_mut(LANES)
        .zip(s_head.chunks(LANES))
        .enumerate()
    {
        prefetch(next, ci * LANES);
        for (o, &v) in o.iter_mut().zip(v) {
            *o = f(v);
        }
    }
    let mut oc = o_body.chunks_exact_mut(LANES);
    let mut sc = s_body.chunks_exact(LANES);
    for (ci, (o, v)) in (&mut oc).zip(&mut sc).enumerate() {
        prefetch(next, head + ci * LANES);
        let v = lanes(v);
        let mut t = [0.0f32; LANES];
        for i in 0..LANES {
            t[i] = f(v[i]);
        }
        // SAFETY: `o` is 16 floats of `out`, 64-byte aligned (it starts `head` + a
        // multiple of 16 floats from `out`'s start, `out` being 64-byte aligned there).
        unsafe { E::stream16(o.as_mut_ptr(), &t) };
    }
    for (o, &v) in oc.into_remainder().iter_mut().zip(sc.remainder()) {
        *o = f(v);
    }
}

/// RMS norm of one row into `out`.
#[inline(always)]
fn rms_norm(x: &[f32], out: &mut [f32], weight: Option<&[f32]>, eps: f32) {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    // Whole chunks first (the accumulators stay in registers), then the tail.
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a += f64::from(v) * f64::from(v);
    }
    let ms = fold_lanes(acc, |a, b| a + b) / x.len() as f64;
    let r = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
    match weight {
        Some(w) => {
            for ((o, &v), &wj) in out.iter_mut().zip(x).zip(w) {
                *o = v * r * wj;
            }
        }
        None => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * r;
            }
        }
    }
}

/// `arg(row, sign)`: (value, index) of the first extreme, or `None` for an empty row.
type ArgFn = unsafe fn(&[f32], f32) -> Option<(f32, u32)>;
/// `softmax(row, out, log, next, stream)`: `next` is the row to come, prefetched (may be
/// empty); `stream` writes `out` with non-temporal stores (see [`softmax`]).
///
/// # Safety
/// The ISA the kernels were built for is available; with `stream`, the calling thread
/// runs [`crate::simd::store_fence`] before `out` is read or handed to another thread.
type SoftmaxFn = unsafe fn(&[f32], &mut [f32], bool, &[f32], bool);
/// `softmax_cols(tile, width, scale, limit, state)`.
type SoftmaxColsFn = unsafe fn(&mut [f32], usize, f32, &[u32], ColState<'_>);
/// `col_add4(states, rows, next rows)`.
type ColAdd4Fn = unsafe fn(&mut [f64], [&[f32]; 4], [&[f32]; 4]);
/// `rms_norm(row, out, weight, eps)`.
type RmsNormFn = unsafe fn(&[f32], &mut [f32], Option<&[f32]>, f32);

/// One set of row kernels, compiled for one instruction set.
#[derive(Clone, Copy)]
pub(crate) struct RowKernels {
    pub sum: unsafe fn(&[f32]) -> f64,
    pub sum_exp: unsafe fn(&[f32], f32) -> f64,
    pub exp_shift: unsafe fn(&mut [f32], f32) -> f32,
    /// `softmax_cols(s, w, scale, limit, state)`: see [`softmax_cols`].
    pub softmax_cols: SoftmaxColsFn,
    /// `mul_cols(x, f)`: see [`mul_cols`].
    pub mul_cols: unsafe fn(&mut [f32], &[f32]),
    pub extreme: unsafe fn(&[f32], f32) -> f32,
    pub arg: ArgFn,
    pub softmax: SoftmaxFn,
    pub rms_norm: RmsNormFn,
    /// `st[j] += row[j]` in f64 (column sums of outer-axis reductions).
    pub col_add: unsafe fn(&mut [f64], &[f32]),
    /// `st[j] += (r0[j] + r1[j]) + (r2[j] + r3[j])` in f64: four rows per pass over `st`,
    /// prefetching the four rows of the second argument (see [`col_add4`]).
    pub col_add4: ColAdd4Fn,
    /// `st[j] = nan_max(st[j], sign · row[j])` (column extremes), prefetching the last
    /// argument (see [`col_extreme`]).
    pub col_extreme: unsafe fn(&mut [f32], &[f32], f32, &[f32]),
    /// f32 → bf16, round to nearest even, NaN kept quiet (bit-identical to `half`).
    pub narrow_bf16: unsafe fn(&[f32], &mut [half::bf16]),
}

/// f32 → bf16 with round to nearest even, branch-free so it vectorises: round up when
/// the first dropped bit is set and any other dropped bit or the kept last bit is set;
/// NaN keeps its top bits and becomes quiet. Same bits as `half::bf16::from_f32`.
#[inline(always)]
pub(crate) fn narrow_bf16(src: &[f32], dst: &mut [half::bf16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        let x = s.to_bits();
        let up = u32::from((x & 0x8000) != 0 && (x & 0x1_7fff) != 0);
        let rounded = (x >> 16) + up;
        let nan = (x & 0x7fff_ffff) > 0x7f80_0000;
        let bits = if nan { (x >> 16) | 0x40 } else { rounded };
        *d = half::bf16::from_bits(bits as u16);
    }
}

/// `st[j] += row[j]`, widened to f64.
#[inline(always)]
fn col_add(st: &mut [f64], row: &[f32]) {
    for (s, &v) in st.iter_mut().zip(row) {
        *s += f64::from(v);
    }
}

/// Four rows per pass over the f64 column sums, halving their load/store traffic per row.
/// The next four rows (`next`, each possibly empty) are prefetched into L2 a line per row
/// per chunk: the four streams alone left the loads waiting on memory (perf), and
/// prefetching into L1 did not help (4096² column sum, 4 interleaved rounds: 2.8–3.0 ms
/// without or with L1 prefetches, 2.2–2.4 ms into L2).
#[inline(always)]
fn col_add4(st: &mut [f64], [a, b, c, d]: [&[f32]; 4], next: [&[f32]; 4]) {
    let mut sc = st.chunks_exact_mut(LANES);
    let (mut ac, mut bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (mut cc, mut dc) = (c.chunks_exact(LANES), d.chunks_exact(LANES));
    let chunks = (&mut sc)
        .zip(&mut ac)
        .zip(&mut bc)
        .zip(&mut cc)
        .zip(&mut dc);
    for (ci, ((((s, p), q), r), t)) in chunks.enumerate() {
        for row in next {
            crate::simd::prefetch_l2_at(row, ci * LANES);
        }
        let (p, q, r, t) = (lanes(p), lanes(q), lanes(r), lanes(t));
        for i in 0..LANES {
            s[i] += (f64::from(p[i]) + f64::from(q[i])) + (f64::from(r[i]) + f64::from(t[i]));
        }
    }
    let rest = sc.into_remainder().iter_mut();
    let rows = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .zip(cc.remainder());
    for ((s, ((&p, &q), &r)), &t) in rest.zip(rows).zip(dc.remainder()) {
        *s += (f64::from(p) + f64::from(q)) + (f64::from(r) + f64::from(t));
    }
}

/// `st[j] = nan_max(st[j], sign · row[j])`, prefetching `next` (possibly empty: the row
/// four on) into L2 a line per chunk, as [`col_add4`] does: 4096² column max 3.7–4.1 →
/// 1.8–2.4 ms (5 interleaved rounds).
#[inline(always)]
fn col_extreme(st: &mut [f32], row: &[f32], sign: f32, next: &[f32]) {
    let mut sc = st.chunks_exact_mut(LANES);
    let mut rc = row.chunks_exact(LANES);
    for (ci, (s, r)) in (&mut sc).zip(&mut rc).enumerate() {
        crate::simd::prefetch_l2_at(next, ci * LANES);
        let r = lanes(r);
        for i in 0..LANES {
            s[i] = max_nan(s[i], sign * r[i]);
        }
    }
    for (s, &v) in sc.into_remainder().iter_mut().zip(rc.remainder()) {
        *s = max_nan(*s, sign * v);
    }
}

/// Compiles the kernels above inside wrappers carrying the ISA's attributes, with the
/// ISA's 16-lane exp. One expansion: `isa_kernels!(avx2, FmaOps, [cfg(target_arch =
/// "x86_64")], [target_feature(enable = "avx2,fma")])` gives `#[cfg(..)] mod avx2 { #[target_feature(..)] unsafe fn sum(x:
/// &[f32]) -> f64 { super::sum(x) } ... pub(super) const KERNELS: RowKernels = .. }`.
macro_rules! isa_kernels {
    ($name:ident, $exp:ident, [$($mod_attr:meta),*], [$($fn_attr:meta),*]) => {
        $(#[$mod_attr])*
        mod $name {
            use super::{$exp, RowKernels};
            $(#[$fn_attr])*
            unsafe fn sum(x: &[f32]) -> f64 {
                super::sum(x)
            }
            $(#[$fn_attr])*
            unsafe fn sum_exp(x: &[f32], m: f32) -> f64 {
                super::sum_exp::<$exp>(x, m)
            }
            $(#[$fn_attr])*
            unsafe fn exp_shift(x: &mut [f32], m: f32) -> f32 {
                super::exp_shift::<$exp>(x, m)
            }
            $(#[$fn_attr])*
            unsafe fn softmax_cols(
                s: &mut [f32],
                w: usize,
                scale: f32,
                limit: &[u32],
                st: super::ColState<'_>,
            ) {
                super::softmax_cols::<$exp>(s, w, scale, limit, st)
            }
            $(#[$fn_attr])*
            unsafe fn mul_cols(x: &mut [f32], f: &[f32]) {
                super::mul_cols(x, f)
            }
            $(#[$fn_attr])*
            unsafe fn extreme(x: &[f32], s: f32) -> f32 {
                <$exp as super::RowOps>::extreme(x, s)
            }
            $(#[$fn_attr])*
            unsafe fn arg(x: &[f32], s: f32) -> Option<(f32, u32)> {
                super::arg::<$exp>(x, s)
            }
            $(#[$fn_attr])*
            unsafe fn softmax(x: &[f32], o: &mut [f32], log: bool, next: &[f32], stream: bool) {
                super::softmax::<$exp>(x, o, log, next, stream)
            }
            $(#[$fn_attr])*
            unsafe fn rms_norm(x: &[f32], o: &mut [f32], w: Option<&[f32]>, eps: f32) {
                super::rms_norm(x, o, w, eps)
            }
            $(#[$fn_attr])*
            unsafe fn col_add(st: &mut [f64], row: &[f32]) {
                super::col_add(st, row)
            }
            $(#[$fn_attr])*
            unsafe fn col_add4(st: &mut [f64], rows: [&[f32]; 4], next: [&[f32]; 4]) {
                super::col_add4(st, rows, next)
            }
            $(#[$fn_attr])*
            unsafe fn col_extreme(st: &mut [f32], row: &[f32], sign: f32, next: &[f32]) {
                super::col_extreme(st, row, sign, next)
            }
            $(#[$fn_attr])*
            unsafe fn narrow_bf16(src: &[f32], dst: &mut [half::bf16]) {
                super::narrow_bf16(src, dst)
            }
            pub(super) const KERNELS: RowKernels = RowKernels {
                sum,
                sum_exp,
                exp_shift,
                softmax_cols,
                mul_cols,
                extreme,
                arg,
                softmax,
                rms_norm,
                col_add,
                col_add4,
                col_extreme,
                narrow_bf16,
            };
        }
    };
}
isa_kernels!(
    avx512,
    Avx512Ops,
    [cfg(target_arch = "x86_64")],
    [target_feature(enable = "avx512f")]
);
isa_kernels!(
    avx2,
    FmaOps,
    [cfg(target_arch = "x86_64")],
    [target_feature(enable = "avx2,fma")]
);
isa_kernels!(generic, PortableOps, [], []);

/// Whether candidate `(v, j)` (a value of sign·x and its index) beats `(bv, bj)` for
/// argmax: a NaN beats a number (the first NaN wins), then the larger value, ties (±0
/// included) to the smaller index.
#[inline(always)]
pub(crate) fn beats((v, j): (f32, u32), (bv, bj): (f32, u32)) -> bool {
    if v.is_nan() || bv.is_nan() {
        v.is_nan() && (!bv.is_nan() || j < bj)
    } else {
        v > bv || (v == bv && j < bj)
    }
}

impl RowKernels {
    /// The kernels compiled for `isa`. Calling them is sound because a device only holds
    /// an ISA that was detected on this CPU.
    pub(crate) fn for_isa(isa: Isa) -> RowKernels {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::KERNELS,
            _ => generic::KERNELS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_keeps_the_first_index_and_the_first_nan() {
        let mut x = vec![0.0f32; 100];
        x[37] = 5.0;
        x[70] = 5.0;
        assert_eq!(arg::<PortableOps>(&x, 1.0), Some((5.0, 37)));
        x[90] = f32::NAN;
        x[50] = f32::NAN;
        assert_eq!(arg::<PortableOps>(&x, 1.0).map(|(_, i)| i), Some(50));
        assert_eq!(arg::<PortableOps>(&[3.0, 1.0, 1.0], -1.0), Some((1.0, 1)));
        assert_eq!(arg::<PortableOps>(&[], 1.0), None);
        let all_neg_inf = vec![f32::NEG_INFINITY; 40];
        assert_eq!(
            arg::<PortableOps>(&all_neg_inf, 1.0),
            Some((f32::NEG_INFINITY, 0))
        );
    }

    /// `arg` against the plain definition (first strict maximum of sign·x, or
    /// the first NaN) on rows full of ties, ±0, ±∞ and NaNs, at every length around the
    /// 16-lane chunks, for both signs and every ISA's kernel.
    #[test]
    fn arg_matches_the_definition_on_ties_and_special_values() {
        fn want(x: &[f32], sign: f32) -> Option<u32> {
            if let Some(j) = x.iter().position(|v| v.is_nan()) {
                return Some(j as u32);
            }
            let mut best: Option<(f32, usize)> = None;
            for (j, &v) in x.iter().enumerate() {
                if best.is_none_or(|(b, _)| sign * v > sign * b) {
                    best = Some((v, j));
                }
            }
            best.map(|(_, j)| j as u32)
        }
        let pool = [
            f32::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            1.0,
            2.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for isa in Isa::available() {
            let k = RowKernels::for_isa(isa);
            for len in (0..70).chain([255, 256, 257, 1000]) {
                for trial in 0..60 {
                    // Fewer distinct values in some trials (more ties), NaN in few rows.
                    let kinds = if trial % 3 == 0 { 7 } else { 3 + trial % 4 };
                    let x: Vec<f32> = (0..len)
                        .map(|_| {
                            let r = next() as usize;
                            if r.is_multiple_of(97) && trial % 4 == 0 {
                                f32::NAN
                            } else {
                                pool[r % kinds]
                            }
                        })
                        .collect();
                    for sign in [1.0, -1.0] {
                        // SAFETY: `isa` is available on this CPU.
                        let got = unsafe { (k.arg)(&x, sign) };
                        assert_eq!(got.map(|(_, j)| j), want(&x, sign), "{isa:?} {x:?} {sign}");
                        if let Some((v, j)) = got {
                            assert_eq!(v.to_bits(), x[j as usize].to_bits());
                        }
                    }
                }
            }
            // Equal extremes in different 64-element blocks: the first wins.
            for (first_at, second_at) in [(5, 70), (63, 64), (64, 200), (130, 4095)] {
                for sign in [1.0, -1.0] {
                    let mut x = vec![0.5f32; 4099];
                    x[first_at] = 3.0 * sign;
                    x[second_at] = 3.0 * sign;
                    // SAFETY: `isa` is available on this CPU.
                    let got = unsafe { (k.arg)(&x, sign) }.map(|(_, j)| j);
                    assert_eq!(got, Some(first_at as u32), "{isa:?} {first_at} {sign}");
                }
            }
            // One extreme (or one NaN) anywhere in a long row: in every 64-element block
            // the search screens, at block edges and in the tail.
            for len in [1, 63, 64, 65, 130, 1000, 4099] {
                let mut at: Vec<usize> = vec![0, len - 1, len / 2, 63, 64, 127, 128];
                at.extend((0..8).map(|_| next() as usize % len));
                for pos in at.into_iter().filter(|&p| p < len) {
                    for (sign, special) in
                        [(1.0, 2.0), (-1.0, -2.0), (1.0, f32::NAN), (-1.0, f32::NAN)]
                    {
                        let mut x = vec![0.5f32; len];
                        x[pos] = special;
                        // SAFETY: `isa` is available on this CPU.
                        let got = unsafe { (k.arg)(&x, sign) };
                        assert_eq!(got.map(|(_, j)| j), Some(pos as u32), "{isa:?} {len} {pos}");
                    }
                }
            }
        }
    }

    /// Streamed (non-temporal) outputs hold the bits of the cached path, for outputs at
    /// every alignment within a line and lengths around whole lines, on every ISA.
    #[test]
    fn streamed_softmax_gives_the_cached_bits() {
        for isa in Isa::available() {
            let k = RowKernels::for_isa(isa);
            for len in [1, 15, 16, 17, 31, 64, 100, 1000, 4099] {
                let x: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 1000) as f32 * 0.013 - 6.0)
                    .collect();
                for log in [false, true] {
                    let mut want = vec![0.0f32; len];
                    // SAFETY: `isa` is available on this CPU.
                    unsafe { (k.softmax)(&x, &mut want, log, &[], false) };
                    let mut buf = vec![f32::NAN; len + 16];
                    for shift in 0..16 {
                        buf.fill(f32::NAN);
                        let out = &mut buf[shift..shift + len];
                        // SAFETY: as above.
                        unsafe { (k.softmax)(&x, out, log, &x, true) };
                        crate::simd::store_fence();
                        assert!(
                            out.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{isa:?} len {len} shift {shift} log {log}"
                        );
                        // Nothing outside the row was written.
                        assert!(
                            buf[..shift]
                                .iter()
                                .chain(&buf[shift + len..])
                                .all(|v| v.is_nan())
                        );
                    }
                }
            }
        }
    }

    /// Every FMA kernel set (AVX2, AVX-512) gives the same bits; the portable set, whose
    /// exp rounds each multiply and add separately, agrees within two ulp of the exp
    /// (sums, extremes and argmax, which take no exp, exactly).
    #[test]
    fn every_isa_gives_the_same_bits() {
        let x: Vec<f32> = (0..10_007)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.013 - 6.0)
            .collect();
        let run = |k: RowKernels| {
            let mut o = vec![0.0; x.len()];
            // SAFETY: only ISAs available on this CPU are passed in.
            unsafe {
                (k.softmax)(&x, &mut o, false, &[], false);
                let sums = ((k.sum)(&x), (k.sum_exp)(&x, 1.5));
                let ext = ((k.extreme)(&x, -1.0), (k.arg)(&x, 1.0));
                (sums, ext, o)
            }
        };
        let generic = run(RowKernels::for_isa(Isa::Generic));
        let fma: Vec<_> = Isa::available()
            .into_iter()
            .filter(|&isa| isa != Isa::Generic)
            .map(|isa| (isa, run(RowKernels::for_isa(isa))))
            .collect();
        for (isa, (sums, ext, soft)) in &fma {
            let (base_sums, base_ext, base_soft) = &fma[0].1;
            assert_eq!(sums.0.to_bits(), base_sums.0.to_bits(), "{isa:?}");
            assert_eq!(sums.1.to_bits(), base_sums.1.to_bits(), "{isa:?}");
            assert_eq!(ext, base_ext, "{isa:?}");
            assert!(
                soft.iter()
                    .zip(base_soft)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?}: softmax bits differ from {:?}",
                fma[0].0
            );
            assert_eq!(sums.0.to_bits(), generic.0.0.to_bits(), "{isa:?}");
            assert_eq!(ext, &generic.1, "{isa:?}");
            let rel = (sums.1 - generic.0.1).abs() / generic.0.1;
            assert!(rel < 1e-6, "{isa:?}: sum_exp differs by {rel:e}");
            let max_rel = soft
                .iter()
                .zip(&generic.2)
                .map(|(a, b)| ((a - b) / b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_rel < 5e-7, "{isa:?}: softmax differs by {max_rel:e}");
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Per-kernel throughput on a cached row (a tuning aid:
    /// `cargo test --release -p xkern-cpu rows_speed -- --ignored --nocapture`).
    #[test]
    #[ignore = "prints a measurement; run by hand in release mode"]
    fn rows_speed() {
        let x: Vec<f32> = (0..4096).map(|i| (i % 97) as f32 * 0.01).collect();
        let mut o = vec![0.0f32; 4096];
        let ramp: Vec<f32> = (0..4096).map(|i| i as f32).collect();
        for isa in Isa::available() {
            let k = RowKernels::for_isa(isa);
            let time = |name: &str, f: &mut dyn FnMut()| {
                let t = std::time::Instant::now();
                for _ in 0..2000 {
                    f();
                }
                let ns = t.elapsed().as_secs_f64() * 1e9 / (2000.0 * 4096.0);
                println!("{isa:?} {name}: {ns:.3} ns/element");
            };
            // SAFETY: `isa` is available.
            unsafe {
                time("sum", &mut || {
                    std::hint::black_box((k.sum)(&x));
                });
                time("max", &mut || {
                    std::hint::black_box((k.extreme)(&x, 1.0));
                });
                time("argmax", &mut || {
                    std::hint::black_box((k.arg)(&x, 1.0));
                });
                time("argmax_end", &mut || {
                    std::hint::black_box((k.arg)(&ramp, 1.0));
                });
                time("sum_exp", &mut || {
                    std::hint::black_box((k.sum_exp)(&x, 1.0));
                });
                time("softmax", &mut || {
                    (k.softmax)(&x, &mut o, false, &[], false)
                });
                time("rms_norm", &mut || (k.rms_norm)(&x, &mut o, None, 1e-6));
            }
        }
    }
}

#[cfg(test)]
mod bf16_conversion {
    use super::narrow_bf16;
    use crate::storage::Scalar;
    use half::bf16;

    /// The vectorisable conversion gives `half`'s bits for every class of value: ties
    /// (even and odd), carries into the exponent, overflow to ∞, denormals, ±0, ∞, NaNs.
    #[test]
    fn narrow_bf16_matches_half_bit_for_bit() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0xffc1_2345),
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x0000_8000),
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x3f80_8001),
            f32::from_bits(0x7f7f_8000),
            f32::from_bits(0x7f7f_ffff),
        ];
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            xs.push(f32::from_bits(state));
        }
        let mut got = vec![bf16::ZERO; xs.len()];
        narrow_bf16(&xs, &mut got);
        for (x, g) in xs.iter().zip(&got) {
            assert_eq!(
                g.to_bits(),
                bf16::from_f32(*x).to_bits(),
                "{:#010x}",
                x.to_bits()
            );
        }
        let mut back = vec![0.0f32; got.len()];
        bf16::widen_into(&got, &mut back);
        for (g, b) in got.iter().zip(&back) {
            assert_eq!(b.to_bits(), g.to_f32().to_bits());
        }
    }
}
