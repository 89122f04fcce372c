//! [`Tolerance`]: how close a backend's result must be to the f64 reference, stated once
//! per dtype.
//!
//! The measure is the relative Frobenius error over the finite elements,
//! `‖got − ref‖₂ ≤ rel · ‖ref‖₂ + abs · √n`, after an exact check of the special values:
//! where the reference is NaN the result must be NaN, where it is ±∞ the result must be
//! the same infinity, and where it is finite the result must be finite (NaN never passes
//! where a number is expected). The `abs` floor is the dtype's smallest normal number, so
//! that an all-zero reference (e.g. `K = 0`) demands zeros up to denormal noise.
//! [`Tolerance::check_scaled`] takes the relative bound against another norm (the op on
//! absolute values) for results that cancel, such as short sums near zero.
//!
//! The `rel` bounds: f32 `1e-5` (f32 accumulation of up to ~1000 terms is ~1e-6 in
//! practice); f16 `2e-3` and bf16 `1e-2`, about four times the output rounding of each
//! format (2⁻¹¹ and 2⁻⁹ relative), since the reference runs on the rounded inputs and the
//! only other error is f32 accumulation.

// Indices come from enumerating the slices they index (after a length check).
#![allow(clippy::indexing_slicing)]

use crate::DType;

/// An error bound for comparing a result to the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Bound on `‖got − ref‖₂ / ‖ref‖₂`.
    pub rel: f64,
    /// Per-element absolute floor, scaled by `√n`.
    pub abs: f64,
}

impl Tolerance {
    /// Exact equality (integer outputs such as argmax indices).
    pub const EXACT: Tolerance = Tolerance { rel: 0.0, abs: 0.0 };

    /// The bound for outputs of `dtype`.
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F32 => Tolerance {
                rel: 1e-5,
                abs: f64::from(f32::MIN_POSITIVE),
            },
            DType::F16 => Tolerance {
                rel: 2e-3,
                abs: half::f16::MIN_POSITIVE.to_f64(),
            },
            DType::BF16 => Tolerance {
                rel: 1e-2,
                abs: half::bf16::MIN_POSITIVE.to_f64(),
            },
            DType::U32 => Tolerance::EXACT,
        }
    }

    /// `‖got − expected‖₂ / ‖expected‖₂` over the positions where `expected` is finite
    /// (0 when both are zero there). Special values are not compared; see [`Tolerance::check`].
    pub fn rel_frobenius(got: &[f64], expected: &[f64]) -> f64 {
        let (mut diff2, mut ref2) = (0.0f64, 0.0f64);
        for (&g, &e) in got.iter().zip(expected) {
            if e.is_finite() {
                diff2 += (g - e) * (g - e);
                ref2 += e * e;
            }
        }
        if diff2 == 0.0 {
            0.0
        } else {
            diff2.sqrt() / ref2.sqrt().max(f64::MIN_POSITIVE)
        }
    }

    /// Compares `got` to `expected` element-wise (same order); `Err` says why not.
    pub fn check(&self, got: &[f64], expected: &[f64]) -> Result<(), String> {
        self.check_scaled(got, expected, expected)
    }

    /// [`Tolerance::check`] with the relative bound taken against `scale` instead of
    /// `expected`: `‖got − expected‖₂ ≤ rel · ‖scale‖₂ + abs · √n` over the positions
    /// where `expected` is finite (special values are checked exactly, as in `check`).
    ///
    /// For results that may cancel, such as a sum or dot product of few terms whose exact
    /// value is near zero, f32 accumulation is only accurate relative to the magnitude of
    /// the terms: pass the same op computed on their absolute values (`Σ|x|`, `|A|·|B|`)
    /// as `scale`. With `scale == expected` this is exactly `check`.
    pub fn check_scaled(&self, got: &[f64], expected: &[f64], scale: &[f64]) -> Result<(), String> {
        if got.len() != expected.len() || scale.len() != expected.len() {
            return Err(format!(
                "{} elements, expected {} (scale {})",
                got.len(),
                expected.len(),
                scale.len()
            ));
        }
        let (mut diff2, mut ref2, mut scale2, mut finite) = (0.0f64, 0.0f64, 0.0f64, 0usize);
        let mut worst: Option<(usize, f64)> = None;
        for (i, ((&g, &e), &s)) in got.iter().zip(expected).zip(scale).enumerate() {
            let special_ok = if e.is_nan() {
                g.is_nan()
            } else if e.is_infinite() {
                g == e
            } else {
                g.is_finite()
            };
            if !special_ok {
                return Err(format!("element {i}: got {g}, expected {e}"));
            }
            if e.is_finite() {
                let d = (g - e).abs();
                diff2 += d * d;
                ref2 += e * e;
                scale2 += s * s;
                finite += 1;
                if worst.is_none_or(|(_, w)| d > w) {
                    worst = Some((i, d));
                }
            }
        }
        let (err, norm, scale_norm) = (diff2.sqrt(), ref2.sqrt(), scale2.sqrt());
        let bound = self.rel * scale_norm + self.abs * (finite as f64).sqrt();
        if err <= bound {
            return Ok(());
        }
        let (i, d) = worst.unwrap_or((0, 0.0));
        let rel_err = err / norm.max(f64::MIN_POSITIVE);
        let measure = if std::ptr::eq(scale, expected) {
            format!("relative Frobenius error {rel_err:.3e}")
        } else {
            format!(
                "error relative to ‖scale‖ {scale_norm:.3e} of {:.3e} (relative Frobenius error {rel_err:.3e})",
                err / scale_norm.max(f64::MIN_POSITIVE)
            )
        };
        Err(format!(
            "{measure} exceeds {:.1e} (‖diff‖ {err:.3e}, ‖ref‖ {norm:.3e}); worst element {i}: got {}, expected {} (|diff| {d:.3e})",
            self.rel, got[i], expected[i],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values_must_match_exactly() {
        let t = Tolerance::for_dtype(DType::F32);
        assert!(t.check(&[f64::NAN], &[f64::NAN]).is_ok());
        assert!(t.check(&[1.0], &[f64::NAN]).is_err());
        assert!(t.check(&[f64::NAN], &[1.0]).is_err());
        assert!(t.check(&[f64::INFINITY], &[f64::NEG_INFINITY]).is_err());
        assert!(t.check(&[f64::INFINITY], &[1e300]).is_err());
        assert!(
            t.check(&[f64::NEG_INFINITY, 2.0], &[f64::NEG_INFINITY, 2.0])
                .is_ok()
        );
    }

    #[test]
    fn relative_bound_is_enforced() {
        let t = Tolerance::for_dtype(DType::F32);
        assert!(t.check(&[1.0 + 5e-6, 2.0], &[1.0, 2.0]).is_ok());
        assert!(t.check(&[1.0 + 1e-4, 2.0], &[1.0, 2.0]).is_err());
        assert!(t.check(&[0.0, 0.0], &[0.0, 0.0]).is_ok());
        assert!(t.check(&[1e-3, 0.0], &[0.0, 0.0]).is_err());
        assert!(Tolerance::EXACT.check(&[3.0], &[4.0]).is_err());
        assert!(t.check(&[1.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn scaled_bound_uses_the_scale() {
        let t = Tolerance::for_dtype(DType::F32);
        // A cancelling sum: exact 1e-3, terms of magnitude 2e3 (Σ|x|).
        let (got, want) = ([1e-3 + 1e-5], [1e-3]);
        assert!(t.check(&got, &want).is_err());
        assert!(t.check_scaled(&got, &want, &[2e3]).is_ok());
        assert!(t.check_scaled(&[1e-3 + 1.0], &want, &[2e3]).is_err());
        // Special values stay exact whatever the scale.
        assert!(t.check_scaled(&[1.0], &[f64::NAN], &[1e30]).is_err());
        assert!(t.check_scaled(&[1.0], &[1.0], &[1.0, 2.0]).is_err());
    }
}
