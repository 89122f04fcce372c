//! [`Tolerance`]: how close a backend's result must be to the f64 reference, stated once
//! per dtype.
//!
//! The measure is the relative Frobenius error over the finite elements,
//! `‖got − ref‖₂ ≤ rel · ‖ref‖₂ + abs · √n`, after an exact check of the special values:
//! where the reference is NaN the result must be NaN, where it is ±∞ the result must be
//! the same infinity, and where it is finite the result must be finite (NaN never passes
//! where a number is expected). The `abs` floor is the dtype's smallest normal number, so
//! that an all-zero reference (e.g. `K = 0`) demands zeros up to denormal noise.
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
        if got.len() != expected.len() {
            return Err(format!(
                "{} elements, expected {}",
                got.len(),
                expected.len()
            ));
        }
        let (mut diff2, mut ref2, mut finite) = (0.0f64, 0.0f64, 0usize);
        let mut worst: Option<(usize, f64)> = None;
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
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
                finite += 1;
                if worst.is_none_or(|(_, w)| d > w) {
                    worst = Some((i, d));
                }
            }
        }
        let (err, norm) = (diff2.sqrt(), ref2.sqrt());
        let bound = self.rel * norm + self.abs * (finite as f64).sqrt();
        if err <= bound {
            return Ok(());
        }
        let (i, d) = worst.unwrap_or((0, 0.0));
        Err(format!(
            "relative Frobenius error {:.3e} exceeds {:.1e} (‖diff‖ {err:.3e}, ‖ref‖ {norm:.3e}); worst element {i}: got {}, expected {} (|diff| {d:.3e})",
            err / norm.max(f64::MIN_POSITIVE),
            self.rel,
            got[i],
            expected[i],
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
}
