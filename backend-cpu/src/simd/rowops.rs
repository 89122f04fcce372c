//! The streaming decode's row operations, reading K and V rows in their own float type:
//! `q · k` and `o += p · v` for f32 `q` and `o`, and f32, f16 or bf16 `k` and `v`,
//! widening 16 (AVX-512F) or 8 (AVX2 with F16C) elements per instruction as they load.
//!
//! A decode reads every key and value row once and does two multiply-adds per element of
//! them, so its pace is the memory's only if each row is used where it lies. Widening each
//! 16-bit row into a buffer first (one call of the slice conversion per row), then running
//! baseline-compiled loops over the buffer, made an f16 decode (h32 q1 kv4096 d128) take
//! 6.5 ms against the f32 one's 4.5, though it reads half the bytes.
//!
//! The sums run in one fixed order for a given length, whatever the element type: two
//! accumulators of `W` lanes over blocks of `2W` elements (element `i` into lane
//! `i mod W` of accumulator `(i / W) mod 2`), one more block of `W` into the first, the
//! accumulators added, their lanes summed in a fixed tree, then the last `len mod W`
//! elements in order. Widening is exact, so a 16-bit row gives bit for bit the result of
//! its f32 widening.

// Kernel code: every slice is cut at bounds computed from the slices' own lengths (rows
// from `out.len()`, columns from `o.len() / rows`, keys from what fits in `v`).
#![allow(clippy::indexing_slicing)]

use super::Isa;
use crate::storage::Scalar;

/// `dots(q, k, out)`: `out[r] = Σ_i q[r·d + i]·k[i]` for the `R = out.len()` rows of `q`,
/// `d = k.len()` (`q` holds at least `R·d` elements), each in the order of the module doc.
/// The key row is read (and widened) once for all rows.
pub(crate) type Dots<T> = unsafe fn(&[f32], &[T], &mut [f32]);

/// `pv(o, p, vis, v, rs, next)`: the weighted sums of a block of value rows into `R =
/// vis.len()` output rows at once, `o[r·dv + c] += Σ_{j < vis[r]} p[r·ps + j] · v[j·rs + c]`
/// for `c < dv = o.len() / R` (`ps = p.len() / R`), over `j` in order, each term one fused
/// multiply-add (the columns past the last whole vector: a product and a sum). Each value
/// row is read (and widened) once for all output rows, which stay in registers. Rows of
/// `next` (`rs` apart, as many as the block's) are fetched into L2 meanwhile, a hint for
/// the next block (any address, null for none). Keys whose rows do not fit in `v` are
/// left out.
pub(crate) type Pv<T> = unsafe fn(&mut [f32], &[f32], &[usize], &[T], usize, *const T);

/// The row operations of one instruction set for rows of `T`.
#[derive(Clone, Copy)]
pub(crate) struct RowOps<T> {
    /// See [`Dots`].
    pub dots: Dots<T>,
    /// See [`Pv`].
    pub pv: Pv<T>,
}

/// A float type whose rows the vector row operations load directly.
pub(crate) trait Lanes: Scalar {
    /// Elements `p..p + 16` as f32.
    ///
    /// # Safety
    /// They are readable, and the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;

    /// Elements `p..p + 8` as f32.
    ///
    /// # Safety
    /// They are readable, and the CPU has AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

#[cfg(not(target_arch = "x86_64"))]
impl Lanes for f32 {}
#[cfg(not(target_arch = "x86_64"))]
impl Lanes for half::f16 {}
#[cfg(not(target_arch = "x86_64"))]
impl Lanes for half::bf16 {}

impl<T: Lanes> RowOps<T> {
    /// The operations `isa` runs; `None` for the generic instruction set (the decode then
    /// widens rows into buffers) or an AVX2 CPU without F16C.
    pub(crate) fn for_isa(isa: Isa) -> Option<Self> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(RowOps {
                dots: x86::dots_avx512::<T>,
                pv: x86::pv_avx512::<T>,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if std::arch::is_x86_feature_detected!("f16c") => Some(RowOps {
                dots: x86::dots_avx2::<T>,
                pv: x86::pv_avx2::<T>,
            }),
            _ => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    impl Lanes for f32 {
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const f32) -> __m512 {
            // SAFETY: the caller's contract.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller's contract.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Lanes for f16 {
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const f16) -> __m512 {
            // SAFETY: the caller's contract (16 f16 are 256 bits).
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
        }
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn load8(p: *const f16) -> __m256 {
            // SAFETY: the caller's contract (8 f16 are 128 bits).
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
        }
    }

    impl Lanes for bf16 {
        /// The bits moved to the top of each f32: exact (a NaN stays a NaN).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load16(p: *const bf16) -> __m512 {
            // SAFETY: the caller's contract (16 bf16 are 256 bits).
            unsafe {
                let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
            }
        }
        #[inline]
        #[target_feature(enable = "avx2,f16c")]
        unsafe fn load8(p: *const bf16) -> __m256 {
            // SAFETY: the caller's contract (8 bf16 are 128 bits).
            unsafe {
                let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
            }
        }
    }

    /// One vector width's operations, for the bodies below, written once: AVX-512F (16
    /// lanes) and AVX2 + FMA + F16C (8). Each is inlined into a wrapper compiled with its
    /// features.
    trait Simd {
        type V: Copy;
        /// Lanes per vector.
        const W: usize;
        unsafe fn zero() -> Self::V;
        unsafe fn splat(x: f32) -> Self::V;
        unsafe fn load(p: *const f32) -> Self::V;
        /// `W` elements of `T` widened.
        unsafe fn load_t<T: Lanes>(p: *const T) -> Self::V;
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn store(p: *mut f32, v: Self::V);
    }

    /// 16 lanes (AVX-512F).
    struct Z;
    /// 8 lanes (AVX2, FMA, F16C).
    struct Y;

    // SAFETY (every method of both impls): the callers' pointers hold a vector's lanes, and
    // the methods run only inside wrappers compiled for, and called on CPUs with, the
    // features named.
    impl Simd for Z {
        type V = __m512;
        const W: usize = 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: see the impl.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load_t<T: Lanes>(p: *const T) -> __m512 {
            // SAFETY: see the impl.
            unsafe { T::load16(p) }
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: see the impl.
            unsafe { _mm512_storeu_ps(p, v) }
        }
    }

    impl Simd for Y {
        type V = __m256;
        const W: usize = 8;
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: see the impl.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load_t<T: Lanes>(p: *const T) -> __m256 {
            // SAFETY: see the impl.
            unsafe { T::load8(p) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: see the impl.
            unsafe { _mm256_storeu_ps(p, v) }
        }
    }

    /// [`super::Dots`] with 16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_avx512<T: Lanes>(q: &[f32], k: &[T], out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { dots::<Z, T>(q, k, out) }
    }

    /// [`super::Dots`] with 8 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots_avx2<T: Lanes>(q: &[f32], k: &[T], out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { dots::<Y, T>(q, k, out) }
    }

    /// [`super::Pv`] with 16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pv_avx512<T: Lanes>(
        o: &mut [f32],
        p: &[f32],
        vis: &[usize],
        v: &[T],
        rs: usize,
        next: *const T,
    ) {
        // SAFETY: the caller's contract.
        unsafe { pv::<Z, T>(o, p, vis, v, rs, next) }
    }

    /// [`super::Pv`] with 8 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn pv_avx2<T: Lanes>(
        o: &mut [f32],
        p: &[f32],
        vis: &[usize],
        v: &[T],
        rs: usize,
        next: *const T,
    ) {
        // SAFETY: the caller's contract.
        unsafe { pv::<Y, T>(o, p, vis, v, rs, next) }
    }

    /// [`super::Dots`] in vectors of `S`: rows in groups of up to 8.
    ///
    /// # Safety
    /// The CPU has `S`'s features.
    #[inline(always)]
    unsafe fn dots<S: Simd, T: Lanes>(q: &[f32], k: &[T], out: &mut [f32]) {
        let d = k.len();
        let rows = out.len().min(q.len() / d.max(1));
        for g in (0..rows).step_by(8) {
            let n = (rows - g).min(8);
            let (q, out) = (&q[g * d..(g + n) * d], &mut out[g..g + n]);
            // SAFETY: q holds n rows of d; the features as the caller guarantees.
            unsafe {
                match n {
                    1 => dots_rows::<S, T, 1>(q, k, out),
                    2 => dots_rows::<S, T, 2>(q, k, out),
                    3 => dots_rows::<S, T, 3>(q, k, out),
                    4 => dots_rows::<S, T, 4>(q, k, out),
                    5 => dots_rows::<S, T, 5>(q, k, out),
                    6 => dots_rows::<S, T, 6>(q, k, out),
                    7 => dots_rows::<S, T, 7>(q, k, out),
                    _ => dots_rows::<S, T, 8>(q, k, out),
                }
            }
        }
    }

    /// `R` rows of [`dots`]: two accumulators per row, each key vector loaded (and
    /// widened) once for all rows.
    ///
    /// # Safety
    /// As [`dots`], with `q` holding `R·k.len()` elements and `out` `R`.
    #[inline(always)]
    unsafe fn dots_rows<S: Simd, T: Lanes, const R: usize>(q: &[f32], k: &[T], out: &mut [f32]) {
        let (d, w) = (k.len(), S::W);
        let (qp, kp) = (q.as_ptr(), k.as_ptr());
        // SAFETY: every load reads elements below d of k and of each of the R rows of q;
        // the features as the caller guarantees.
        unsafe {
            let mut acc = [[S::zero(); 2]; R];
            let mut i = 0;
            while i + 2 * w <= d {
                let x = [S::load_t(kp.add(i)), S::load_t(kp.add(i + w))];
                for (r, a) in acc.iter_mut().enumerate() {
                    for (h, a) in a.iter_mut().enumerate() {
                        *a = S::fma(S::load(qp.add(r * d + i + w * h)), x[h], *a);
                    }
                }
                i += 2 * w;
            }
            if i + w <= d {
                let x = S::load_t(kp.add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    a[0] = S::fma(S::load(qp.add(r * d + i)), x, a[0]);
                }
                i += w;
            }
            for (r, a) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; 16];
                S::store(lanes.as_mut_ptr(), S::add(a[0], a[1]));
                out[r] = finish(&mut lanes[..w], &q[r * d..(r + 1) * d], k, i);
            }
        }
    }

    /// The lanes' sum in a fixed tree (halves added pairwise, `W` a power of two), then
    /// the tail `q[i..]·k[i..]` in order.
    #[inline(always)]
    fn finish<T: Lanes>(lanes: &mut [f32], q: &[f32], k: &[T], i: usize) -> f32 {
        let mut w = lanes.len();
        while w > 1 {
            w /= 2;
            for l in 0..w {
                lanes[l] += lanes[l + w];
            }
        }
        let mut s = lanes[0];
        for (x, y) in q[i..].iter().zip(&k[i..]) {
            s += x * y.to_f32();
        }
        s
    }

    /// The keys of a [`super::Pv`] call whose `dv` elements fit in `v` (rows `rs` apart),
    /// up to the most any output row sees.
    fn pv_keys<T>(vis: &[usize], v: &[T], rs: usize, dv: usize) -> usize {
        let want = vis.iter().copied().max().unwrap_or(0);
        let fit = match v.len().checked_sub(dv) {
            Some(room) if rs > 0 => room / rs + 1,
            Some(_) => want,
            None => 0,
        };
        want.min(fit)
    }

    /// [`super::Pv`] in vectors of `S`: output rows in groups of up to 8, with up to 8
    /// accumulator chains (rows × column vectors) per pass.
    ///
    /// # Safety
    /// The CPU has `S`'s features.
    #[inline(always)]
    unsafe fn pv<S: Simd, T: Lanes>(
        o: &mut [f32],
        p: &[f32],
        vis: &[usize],
        v: &[T],
        rs: usize,
        next: *const T,
    ) {
        let rows = vis.len();
        if rows == 0 {
            return;
        }
        let (dv, ps) = (o.len() / rows, p.len() / rows);
        let keys = pv_keys(vis, v, rs, dv);
        for g in (0..rows).step_by(8) {
            let n = (rows - g).min(8);
            let mut seen = [0usize; 8];
            for (s, &x) in seen.iter_mut().zip(&vis[g..g + n]) {
                *s = x.min(keys).min(ps);
            }
            // (The next block's rows are fetched by the first group only.)
            let next = if g == 0 { next } else { std::ptr::null() };
            let a = &mut PvRows {
                o: &mut o[g * dv..(g + n) * dv],
                dv,
                p: &p[g * ps..(g + n) * ps],
                ps,
                vis: &seen[..n],
                v,
                rs,
            };
            // SAFETY: `vis` is at most `keys`, whose rows of dv elements lie in `v`, and
            // at most `ps`; the features as the caller guarantees.
            unsafe {
                let c0 = match n {
                    1 => pv_rows::<S, T, 1, 8>(a, 0, next),
                    2 => pv_rows::<S, T, 2, 4>(a, 0, next),
                    3 => pv_rows::<S, T, 3, 2>(a, 0, next),
                    4 => pv_rows::<S, T, 4, 2>(a, 0, next),
                    5 => pv_rows::<S, T, 5, 1>(a, 0, next),
                    6 => pv_rows::<S, T, 6, 1>(a, 0, next),
                    7 => pv_rows::<S, T, 7, 1>(a, 0, next),
                    _ => pv_rows::<S, T, 8, 1>(a, 0, next),
                };
                // The columns left: one vector at a time (fetching the next block's rows
                // if the wide passes did not run), then element by element.
                let next = if c0 == 0 { next } else { std::ptr::null() };
                let c1 = match n {
                    1 => pv_rows::<S, T, 1, 1>(a, c0, next),
                    2 => pv_rows::<S, T, 2, 1>(a, c0, next),
                    3 => pv_rows::<S, T, 3, 1>(a, c0, next),
                    4 => pv_rows::<S, T, 4, 1>(a, c0, next),
                    _ => c0,
                };
                if c1 == 0 && !next.is_null() {
                    // Rows narrower than a vector: no pass ran to spread the fetches over.
                    for j in 0..keys {
                        crate::simd::prefetch_run_l2(next.wrapping_add(j * rs), dv);
                    }
                }
                pv_tail(a, c1);
            }
        }
    }

    /// The arguments of [`pv_rows`] and [`pv_tail`] for one group of `R` rows.
    struct PvRows<'a, T> {
        /// The outputs, `R·dv`.
        o: &'a mut [f32],
        dv: usize,
        /// The probabilities, `R·ps`.
        p: &'a [f32],
        ps: usize,
        /// The keys each row adds: each at most `ps` and at most the keys whose rows fit
        /// in `v`.
        vis: &'a [usize],
        /// The value rows, `rs` apart.
        v: &'a [T],
        rs: usize,
    }

    /// `R` rows of [`pv`], `C` vectors of columns at a time from column `c0` for as long
    /// as whole passes fit; returns the first column left. Rows of `next` are fetched into
    /// L2 during the first pass, one per key.
    ///
    /// # Safety
    /// As [`pv`], with the group's arguments as [`PvRows`] says.
    #[inline(always)]
    unsafe fn pv_rows<S: Simd, T: Lanes, const R: usize, const C: usize>(
        g: &mut PvRows<'_, T>,
        mut c0: usize,
        next: *const T,
    ) -> usize {
        let (dv, p, ps, vis, v, rs) = (g.dv, g.p, g.ps, g.vis, g.v, g.rs);
        let o = &mut *g.o;
        let w = S::W;
        let keys = vis.iter().copied().max().unwrap_or(0);
        let (op, vp) = (o.as_mut_ptr(), v.as_ptr());
        let first = c0;
        while c0 + w * C <= dv {
            // SAFETY: rows r < R of o hold dv ≥ c0 + w·C floats; key j < keys has dv
            // elements at j·rs in v; the features as the caller guarantees.
            unsafe {
                let mut acc = [[S::zero(); C]; R];
                for (r, a) in acc.iter_mut().enumerate() {
                    for (c, x) in a.iter_mut().enumerate() {
                        *x = S::load(op.add(r * dv + c0 + w * c));
                    }
                }
                for j in 0..keys {
                    if c0 == first && !next.is_null() {
                        // One row of the next block per key, while this one's are used.
                        crate::simd::prefetch_run_l2(next.wrapping_add(j * rs), dv);
                    }
                    let mut x = [S::zero(); C];
                    for (c, x) in x.iter_mut().enumerate() {
                        *x = S::load_t(vp.add(j * rs + c0 + w * c));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        if j < vis[r] {
                            let pr = S::splat(p[r * ps + j]);
                            for (a, &x) in a.iter_mut().zip(&x) {
                                *a = S::fma(pr, x, *a);
                            }
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    for (c, x) in a.iter().enumerate() {
                        S::store(op.add(r * dv + c0 + w * c), *x);
                    }
                }
            }
            c0 += w * C;
        }
        c0
    }

    /// The columns from `c0` on (past the last whole vector), element by element.
    #[inline(always)]
    fn pv_tail<T: Lanes>(g: &mut PvRows<'_, T>, c0: usize) {
        let (dv, p, ps, vis, v, rs) = (g.dv, g.p, g.ps, g.vis, g.v, g.rs);
        let o = &mut *g.o;
        for (r, &seen) in vis.iter().enumerate() {
            for c in c0..dv {
                let mut x = o[r * dv + c];
                for j in 0..seen {
                    x += p[r * ps + j] * v[j * rs + c].to_f32();
                }
                o[r * dv + c] = x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Values whose products and sums round (not small integers), with some of each sign.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x as f32 / (1u32 << 24) as f32 - 0.5) * 3.7
            })
            .collect()
    }

    /// `Dots` in the module doc's order, lane by lane with fused multiply-adds.
    fn dot_model(q: &[f32], k: &[f32], w: usize) -> f32 {
        let d = k.len();
        let mut acc = vec![[0.0f32; 2]; w];
        let mut i = 0;
        while i + 2 * w <= d {
            for (l, a) in acc.iter_mut().enumerate() {
                for (h, x) in a.iter_mut().enumerate() {
                    let e = i + h * w + l;
                    *x = q[e].mul_add(k[e], *x);
                }
            }
            i += 2 * w;
        }
        if i + w <= d {
            for (l, a) in acc.iter_mut().enumerate() {
                a[0] = q[i + l].mul_add(k[i + l], a[0]);
            }
            i += w;
        }
        let mut lanes: Vec<f32> = acc.iter().map(|a| a[0] + a[1]).collect();
        let mut half = w;
        while half > 1 {
            half /= 2;
            for l in 0..half {
                lanes[l] += lanes[l + half];
            }
        }
        let mut s = lanes[0];
        for e in i..d {
            s += q[e] * k[e];
        }
        s
    }

    /// `Pv` as documented: per output element, the keys in order, fused multiply-adds for
    /// the columns of whole vectors and a product then a sum past them.
    #[allow(clippy::too_many_arguments)]
    fn pv_model(o: &mut [f32], p: &[f32], vis: &[usize], v: &[f32], rs: usize, w: usize) {
        let rows = vis.len();
        let (dv, ps) = (o.len() / rows, p.len() / rows);
        for r in 0..rows {
            for c in 0..dv {
                let mut x = o[r * dv + c];
                for j in 0..vis[r] {
                    let (pj, vj) = (p[r * ps + j], v[j * rs + c]);
                    x = if c < dv / w * w {
                        pj.mul_add(vj, x)
                    } else {
                        x + pj * vj
                    };
                }
                o[r * dv + c] = x;
            }
        }
    }

    /// Every ISA's operations, for every dtype, against the models bit for bit: row counts
    /// across the groups of eight, lengths around the vector widths, ragged visibility.
    #[test]
    fn ops_follow_the_documented_order() {
        fn run<T: Lanes>(isa: Isa, widen: impl Fn(f32) -> T) {
            let Some(ops) = RowOps::<T>::for_isa(isa) else {
                return;
            };
            let w = if isa == Isa::Avx512 { 16 } else { 8 };
            for rows in [1, 2, 3, 4, 5, 7, 8, 9, 13] {
                for d in [1, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64, 100, 128, 130] {
                    let q = values(rows * d, 1);
                    let k: Vec<T> = values(d, 2).into_iter().map(&widen).collect();
                    let k32: Vec<f32> = k.iter().map(|x| x.to_f32()).collect();
                    let mut got = vec![0.0f32; rows];
                    // SAFETY: `ops` were chosen for an ISA this CPU has.
                    unsafe { (ops.dots)(&q, &k, &mut got) };
                    for r in 0..rows {
                        let want = dot_model(&q[r * d..(r + 1) * d], &k32, w);
                        assert_eq!(
                            got[r].to_bits(),
                            want.to_bits(),
                            "{isa:?} dots {rows}×{d} row {r}"
                        );
                    }
                    // Value rows 3 apart beyond their length, 11 keys, the rows seeing
                    // different numbers of them.
                    let (keys, ps, rs) = (11, 12, d + 3);
                    let v: Vec<T> = values(keys * rs, 3).into_iter().map(&widen).collect();
                    let v32: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
                    let p = values(rows * ps, 4);
                    let vis: Vec<usize> = (0..rows).map(|r| (r * 5) % (keys + 1)).collect();
                    let mut got = values(rows * d, 5);
                    let mut want = got.clone();
                    // SAFETY: as above; a null `next` fetches nothing.
                    unsafe { (ops.pv)(&mut got, &p, &vis, &v, rs, std::ptr::null()) };
                    pv_model(&mut want, &p, &vis, &v32, rs, w);
                    for (i, (g, x)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), x.to_bits(), "{isa:?} pv {rows}×{d} at {i}");
                    }
                }
            }
        }
        for isa in Isa::available() {
            run::<f32>(isa, |x| x);
            run::<f16>(isa, f16::from_f32);
            run::<bf16>(isa, bf16::from_f32);
        }
    }

    /// Keys whose rows do not fit in the slice are left out, not read.
    #[test]
    fn pv_reads_only_whole_rows() {
        for isa in Isa::available() {
            let Some(ops) = RowOps::<f32>::for_isa(isa) else {
                continue;
            };
            let (dv, rs) = (32, 40);
            // Two whole rows and part of a third.
            let v = vec![1.0f32; 2 * rs + dv - 1];
            let mut o = vec![0.0f32; dv];
            // SAFETY: `ops` were chosen for an ISA this CPU has.
            unsafe { (ops.pv)(&mut o, &[1.0; 8], &[3], &v, rs, std::ptr::null()) };
            assert!(o.iter().all(|&x| x == 2.0), "{isa:?}: {o:?}");
        }
    }
}
