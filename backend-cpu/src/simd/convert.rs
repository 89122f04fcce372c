//! f16 ↔ f32 and bf16 → f32 conversion of whole slices with the CPU's widest vectors
//! (F16C, or AVX-512F's 16-lane forms, for f16), chosen once per process.
//!
//! `half`'s own slice conversion calls its F16C routine through a function pointer for
//! every 8 elements, and its per-element `to_f32` checks the CPU every time, so neither
//! vectorises: an f16 GEMV (1×4096×4096) spent 25 ms converting what an f32 one reads
//! in 2.5. (Loops that convert as they compute use `storage::f16_bits_to_f32`, which
//! the compiler vectorises.) The instructions are exact for widening and round to nearest
//! even for narrowing, as `half` does, so the result does not depend on which variant
//! runs (the tests compare every 16-bit value and a spread of f32 values bit for bit).

use half::f16;
use std::sync::LazyLock;

/// A widening routine: `dst[i] = src[i]` (slices of the same length).
type Widen = unsafe fn(&[f16], &mut [f32]);
/// A narrowing routine: `dst[i] = round(src[i])` (slices of the same length).
type Narrow = unsafe fn(&[f32], &mut [f16]);
/// A bf16 widening routine, as [`Widen`].
type WidenBf16 = unsafe fn(&[half::bf16], &mut [f32]);

/// The widest widening this CPU runs.
static WIDEN: LazyLock<Widen> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return x86::widen_avx512;
        }
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            return x86::widen_f16c;
        }
    }
    widen_soft
});

/// The widest narrowing this CPU runs.
static NARROW: LazyLock<Narrow> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return x86::narrow_avx512;
        }
        if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
        {
            return x86::narrow_f16c;
        }
    }
    narrow_soft
});

/// bf16 → f32 for a slice: the widest routine this CPU runs.
static WIDEN_BF16: LazyLock<WidenBf16> = LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return x86::widen_bf16_avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return x86::widen_bf16_avx2;
        }
    }
    widen_bf16_soft
});

/// Widens bf16 `src` into `dst` (of the same length): the bits moved to the top half of
/// the f32, a NaN made quiet (`half`'s `to_f32` bits). Compiled for the CPU's widest
/// vectors: the portable shift loop, inlined into code built for the x86-64 baseline,
/// ran 4 lanes at a time (a bf16 4096² column sum took 3.0 ms, f16 through AVX-512 1.6).
#[inline]
pub(crate) fn widen_bf16(src: &[half::bf16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    // SAFETY: as in `widen_f16`.
    unsafe { (*WIDEN_BF16)(src, dst) }
}

/// The portable bf16 widening, which the routines below compile per ISA.
///
/// # Safety
/// None beyond the signature; `unsafe` only to share the routines' type.
#[inline(always)]
unsafe fn widen_bf16_soft(src: &[half::bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        let b = u32::from(s.to_bits());
        let quiet = u32::from(b & 0x7fff > 0x7f80) << 22;
        *d = f32::from_bits((b << 16) | quiet);
    }
}

/// Widens `src` into `dst` (of the same length), element for element.
#[inline]
pub(crate) fn widen_f16(src: &[f16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    // SAFETY: the routine was chosen for instructions detected on this CPU, and reads and
    // writes only within the two slices.
    unsafe { (*WIDEN)(src, dst) }
}

/// Narrows `src` into `dst` (of the same length; round to nearest even, overflow to
/// ±inf, NaN stays NaN), element for element.
#[inline]
pub(crate) fn narrow_f16(src: &[f32], dst: &mut [f16]) {
    debug_assert_eq!(src.len(), dst.len());
    // SAFETY: as in `widen_f16`.
    unsafe { (*NARROW)(src, dst) }
}

/// Portable widening, the branch-free conversion the compiler vectorises.
///
/// # Safety
/// None beyond the signature; `unsafe` only to share the routines' type.
unsafe fn widen_soft(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = crate::storage::f16_bits_to_f32(s.to_bits());
    }
}

/// Portable narrowing, as [`widen_soft`].
///
/// # Safety
/// None beyond the signature.
unsafe fn narrow_soft(src: &[f32], dst: &mut [f16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// [`super::widen_bf16_soft`] vectorised for AVX-512F.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen_bf16_avx512(src: &[half::bf16], dst: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { super::widen_bf16_soft(src, dst) }
    }

    /// [`super::widen_bf16_soft`] vectorised for AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_bf16_avx2(src: &[half::bf16], dst: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { super::widen_bf16_soft(src, dst) }
    }

    /// 16 elements per instruction; the tail through a zeroed block.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen_avx512(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: elements i..i + 16 lie inside both slices; unaligned forms.
            unsafe {
                let h = _mm256_loadu_si256(s.add(i).cast());
                _mm512_storeu_ps(d.add(i), _mm512_cvtph_ps(h));
            }
            i += 16;
        }
        if i < n {
            let mut block = [0u16; 16];
            // SAFETY: elements i..n lie inside `src`.
            unsafe { std::ptr::copy_nonoverlapping(s.add(i), block.as_mut_ptr(), n - i) };
            let mask = ((1u32 << (n - i)) - 1) as u16;
            // SAFETY: `block` holds 16 elements; the masked store writes lanes 0..n - i,
            // which lie inside `dst`.
            unsafe {
                let h = _mm256_loadu_si256(block.as_ptr().cast());
                _mm512_mask_storeu_ps(d.add(i), mask, _mm512_cvtph_ps(h));
            }
        }
    }

    /// 8 elements per instruction; the tail through a zeroed block.
    ///
    /// # Safety
    /// The CPU has F16C and AVX.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: elements i..i + 8 lie inside both slices; unaligned forms.
            unsafe {
                let h = _mm_loadu_si128(s.add(i).cast());
                _mm256_storeu_ps(d.add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        if i < n {
            let mut block = [0u16; 8];
            let mut out = [0.0f32; 8];
            // SAFETY: elements i..n lie inside both slices; the blocks hold 8 each.
            unsafe {
                std::ptr::copy_nonoverlapping(s.add(i), block.as_mut_ptr(), n - i);
                let h = _mm_loadu_si128(block.as_ptr().cast());
                _mm256_storeu_ps(out.as_mut_ptr(), _mm256_cvtph_ps(h));
                std::ptr::copy_nonoverlapping(out.as_ptr(), d.add(i), n - i);
            }
        }
    }

    /// 16 elements per instruction; the tail through a zeroed block.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn narrow_avx512(src: &[f32], dst: &mut [f16]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr().cast::<u16>());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: elements i..i + 16 lie inside both slices; unaligned forms.
            unsafe {
                let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_loadu_ps(s.add(i)));
                _mm256_storeu_si256(d.add(i).cast(), h);
            }
            i += 16;
        }
        if i < n {
            let mut block = [0.0f32; 16];
            let mut out = [0u16; 16];
            // SAFETY: elements i..n lie inside both slices; the blocks hold 16 each.
            unsafe {
                std::ptr::copy_nonoverlapping(s.add(i), block.as_mut_ptr(), n - i);
                let h =
                    _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_loadu_ps(block.as_ptr()));
                _mm256_storeu_si256(out.as_mut_ptr().cast(), h);
                std::ptr::copy_nonoverlapping(out.as_ptr(), d.add(i), n - i);
            }
        }
    }

    /// 8 elements per instruction; the tail through a zeroed block.
    ///
    /// # Safety
    /// The CPU has F16C and AVX.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn narrow_f16c(src: &[f32], dst: &mut [f16]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr().cast::<u16>());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: elements i..i + 8 lie inside both slices; unaligned forms.
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(s.add(i)));
                _mm_storeu_si128(d.add(i).cast(), h);
            }
            i += 8;
        }
        if i < n {
            let mut block = [0.0f32; 8];
            let mut out = [0u16; 8];
            // SAFETY: elements i..n lie inside both slices; the blocks hold 8 each.
            unsafe {
                std::ptr::copy_nonoverlapping(s.add(i), block.as_mut_ptr(), n - i);
                let h =
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(block.as_ptr()));
                _mm_storeu_si128(out.as_mut_ptr().cast(), h);
                std::ptr::copy_nonoverlapping(out.as_ptr(), d.add(i), n - i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every routine this CPU runs, with its name.
    fn widens() -> Vec<(&'static str, Widen)> {
        let mut v: Vec<(&'static str, Widen)> = vec![("soft", widen_soft)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("avx")
            {
                v.push(("f16c", x86::widen_f16c));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(("avx512", x86::widen_avx512));
            }
        }
        v
    }

    fn narrows() -> Vec<(&'static str, Narrow)> {
        let mut v: Vec<(&'static str, Narrow)> = vec![("soft", narrow_soft)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("avx")
            {
                v.push(("f16c", x86::narrow_f16c));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(("avx512", x86::narrow_avx512));
            }
        }
        v
    }

    /// Same value, or both NaN (the quiet bit may differ between hardware and software
    /// conversion of a signalling NaN).
    fn same32(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn widen_every_f16_value_at_every_length() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let want: Vec<f32> = all.iter().map(|h| h.to_f32()).collect();
        for (name, f) in widens() {
            let mut got = vec![f32::MAX; all.len()];
            // SAFETY: `widens` lists only routines this CPU runs.
            unsafe { f(&all, &mut got) };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(same32(*g, *w), "{name}: {i:#06x} gave {g:e}, want {w:e}");
            }
            // Every tail length, at an odd offset, and a longer destination left alone.
            for len in 0..40 {
                let src = &all[0x3c01..0x3c01 + len];
                let mut got = vec![-7.0f32; len + 3];
                // SAFETY: as above.
                unsafe { f(src, &mut got) };
                for (g, s) in got.iter().zip(src) {
                    assert_eq!(g.to_bits(), s.to_f32().to_bits(), "{name} len {len}");
                }
                assert!(got[len..].iter().all(|&x| x == -7.0), "{name} len {len}");
            }
        }
    }

    /// The branch-free element conversion that fused loops use (`Scalar::to_f32`).
    #[test]
    fn element_widening_of_every_f16_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (got, want) = (crate::storage::f16_bits_to_f32(bits), h.to_f32());
            assert!(same32(got, want), "{bits:#06x} gave {got:e}, want {want:e}");
            if h.is_nan() {
                // The payload moves with the value, made quiet as the hardware does.
                let payload = u32::from(bits & 0x3ff) | 0x200;
                assert_eq!((got.to_bits() >> 13) & 0x3ff, payload, "{bits:#06x}");
                assert_eq!(got.is_sign_negative(), h.is_sign_negative(), "{bits:#06x}");
                if let Some(&(name, f)) = widens().last() {
                    let mut out = [0.0f32];
                    // SAFETY: `widens` lists only routines this CPU runs.
                    unsafe { f(&[h], &mut out) };
                    assert_eq!(
                        got.to_bits(),
                        out[0].to_bits(),
                        "{bits:#06x}: {name} differs"
                    );
                }
            }
        }
    }

    /// bf16 slices widen to `to_f32`'s bits, NaNs quiet included, on every routine this
    /// CPU runs and through `Scalar::widen_into`, at every tail length.
    #[test]
    fn bf16_widening_of_every_value() {
        use crate::storage::Scalar;
        let all: Vec<half::bf16> = (0..=u16::MAX).map(half::bf16::from_bits).collect();
        let mut routines: Vec<(&str, WidenBf16)> = vec![("soft", widen_bf16_soft)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                routines.push(("avx2", x86::widen_bf16_avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                routines.push(("avx512", x86::widen_bf16_avx512));
            }
        }
        let via_trait: WidenBf16 = |s, d| half::bf16::widen_into(s, d);
        routines.push(("widen_into", via_trait));
        for (name, f) in routines {
            let mut got = vec![0.0f32; all.len()];
            // SAFETY: only routines this CPU runs are listed.
            unsafe { f(&all, &mut got) };
            for (g, b) in got.iter().zip(&all) {
                assert_eq!(
                    g.to_bits(),
                    b.to_f32().to_bits(),
                    "{name}: {:#06x}",
                    b.to_bits()
                );
            }
            for len in 0..40 {
                let src = &all[0x3f01..0x3f01 + len];
                let mut got = vec![-7.0f32; len + 3];
                // SAFETY: as above.
                unsafe { f(src, &mut got[..len]) };
                for (g, s) in got.iter().zip(src) {
                    assert_eq!(g.to_bits(), s.to_f32().to_bits(), "{name} len {len}");
                }
                assert!(got[len..].iter().all(|&x| x == -7.0), "{name} len {len}");
            }
        }
    }

    #[test]
    fn narrow_matches_half_bit_for_bit() {
        // Edges (halfway cases, the largest finite, overflow, subnormals, zeros, inf,
        // NaN) and a sweep of bit patterns across the whole f32 range.
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            5.960_464_5e-8,
            2.980_232_2e-8,
            2.980_232_4e-8,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
        ];
        let mut bits = 0u32;
        while let Some(next) = bits.checked_add(0x0000_1f3b) {
            xs.push(f32::from_bits(bits));
            bits = next;
        }
        let want: Vec<f16> = xs.iter().map(|&x| f16::from_f32(x)).collect();
        for (name, f) in narrows() {
            let mut got = vec![f16::ZERO; xs.len()];
            // SAFETY: `narrows` lists only routines this CPU runs.
            unsafe { f(&xs, &mut got) };
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                let ok = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
                assert!(
                    ok,
                    "{name}: {x:e} gave {:#06x}, want {:#06x}",
                    g.to_bits(),
                    w.to_bits()
                );
            }
            for len in 0..40 {
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 3.0).collect();
                let mut got = vec![f16::from_f32(-7.0); len + 3];
                // SAFETY: as above.
                unsafe { f(&src, &mut got) };
                for (g, s) in got.iter().zip(&src) {
                    assert_eq!(g.to_bits(), f16::from_f32(*s).to_bits(), "{name} len {len}");
                }
                assert!(
                    got[len..].iter().all(|x| x.to_f32() == -7.0),
                    "{name} len {len}"
                );
            }
        }
    }
}
