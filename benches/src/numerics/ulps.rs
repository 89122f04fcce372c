//! Per-element accuracy figures: relative error, distance in ulps of the output dtype
//! from the correctly rounded reference, the fraction correctly rounded, and the
//! tolerance's verdict.

use super::NumericsRow;
use xkern::{DType, Tolerance};

/// A float of `dtype` as a signed integer that counts representable values in order
/// (±0 both 0), so that the difference of two is their distance in ulps.
fn ordered(dtype: DType, x: f64) -> i64 {
    let (bits, sign_bit) = match dtype {
        DType::F16 => (u64::from(xkern::half::f16::from_f64(x).to_bits()), 1 << 15),
        DType::BF16 => (u64::from(xkern::half::bf16::from_f64(x).to_bits()), 1 << 15),
        _ => (u64::from((x as f32).to_bits()), 1 << 31),
    };
    let magnitude = (bits & (sign_bit - 1)) as i64;
    if bits & sign_bit != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// The value of `dtype` that [`ordered`] maps to `key`.
fn from_ordered(dtype: DType, key: i64) -> f64 {
    let (magnitude, sign_bit) = (key.unsigned_abs(), if key < 0 { 1u64 } else { 0 });
    match dtype {
        DType::F16 => xkern::half::f16::from_bits((magnitude | sign_bit << 15) as u16).to_f64(),
        DType::BF16 => xkern::half::bf16::from_bits((magnitude | sign_bit << 15) as u16).to_f64(),
        _ => f64::from(f32::from_bits((magnitude | sign_bit << 31) as u32)),
    }
}

/// `x` rounded to nearest (ties to even) in `dtype`, as its [`ordered`] key. The
/// conversion through f32 may round twice; the true nearest is that value or a
/// neighbour, and the neighbour nearest to `x` is taken.
fn round_key(dtype: DType, x: f64) -> i64 {
    let guess = ordered(dtype, f64::from(dtype.round_f32(x as f32)));
    let mut best = guess;
    for key in [guess - 1, guess + 1] {
        let (d, d_best) = (
            (from_ordered(dtype, key) - x).abs(),
            (from_ordered(dtype, best) - x).abs(),
        );
        if d < d_best || (d == d_best && key % 2 == 0) {
            best = key;
        }
    }
    best
}

/// Distance in ulps of `dtype` between `got` (a value of `dtype`) and `reference` rounded
/// to nearest in `dtype`.
pub fn ulps(dtype: DType, got: f64, reference: f64) -> u64 {
    ordered(dtype, got).abs_diff(round_key(dtype, reference))
}

/// The accuracy figures of `got` (a device's output of `dtype`) against `want`.
pub(super) fn accuracy(got: &[f64], want: &[f64], dtype: DType) -> NumericsRow {
    let verdict = Tolerance::for_dtype(dtype).check(got, want);
    let finite: Vec<(f64, f64)> = got
        .iter()
        .zip(want)
        .filter(|(_, w)| w.is_finite())
        .map(|(&g, &w)| (g, w))
        .collect();
    let exact_count = got
        .iter()
        .zip(want)
        .filter(|&(&g, &w)| {
            if !w.is_finite() || dtype == DType::U32 {
                g == w || (g.is_nan() && w.is_nan())
            } else {
                g.is_finite() && ulps(dtype, g, w) == 0
            }
        })
        .count();
    let (mut max_rel, mut median_rel, mut max_ulps, mut median_ulps) = (None, None, None, None);
    if dtype.is_float() && !finite.is_empty() {
        let floor = match dtype {
            DType::F16 => xkern::half::f16::MIN_POSITIVE.to_f64(),
            DType::BF16 => xkern::half::bf16::MIN_POSITIVE.to_f64(),
            _ => f64::from(f32::MIN_POSITIVE),
        };
        let mut rel: Vec<f64> = finite
            .iter()
            .map(|&(g, w)| {
                if g.is_finite() {
                    (g - w).abs() / w.abs().max(floor)
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        rel.sort_by(f64::total_cmp);
        max_rel = rel.last().copied();
        median_rel = Some(rel[rel.len() / 2]);
        let mut u: Vec<u64> = finite
            .iter()
            .map(|&(g, w)| {
                if g.is_finite() {
                    ulps(dtype, g, w)
                } else {
                    u64::MAX
                }
            })
            .collect();
        u.sort_unstable();
        max_ulps = u.last().copied();
        median_ulps = Some(u[u.len() / 2]);
    }
    NumericsRow {
        id: String::new(),
        op: String::new(),
        dtype: String::new(),
        backend: String::new(),
        elements: got.len(),
        rel_err: Tolerance::rel_frobenius(got, want),
        max_rel,
        median_rel,
        max_ulps,
        median_ulps,
        exact: if got.is_empty() {
            1.0
        } else {
            exact_count as f64 / got.len() as f64
        },
        within_tolerance: verdict.is_ok(),
        error_detail: verdict.err(),
        peers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulps_count_representable_steps() {
        let next = |x: f32| f64::from(f32::from_bits(x.to_bits() + 1));
        assert_eq!(ulps(DType::F32, 1.0, 1.0), 0);
        assert_eq!(ulps(DType::F32, next(1.0), 1.0), 1);
        assert_eq!(ulps(DType::F32, 1.0, 1.0 + 2f64.powi(-22)), 2);
        // Across zero: ±0 are one value, the smallest subnormals one step either side.
        let tiny = f64::from(f32::from_bits(1));
        assert_eq!(ulps(DType::F32, -0.0, 0.0), 0);
        assert_eq!(ulps(DType::F32, tiny, -tiny), 2);
        // The reference is rounded first: within half an ulp is 0.
        assert_eq!(ulps(DType::F32, 1.0, 1.0 + 2f64.powi(-25)), 0);
        assert_eq!(ulps(DType::F32, 1.0, 1.0 + 2f64.powi(-23) * 0.75), 1);
        // 16-bit dtypes count their own ulps: bf16 has 8 significant bits, f16 11.
        assert_eq!(ulps(DType::BF16, 1.0078125, 1.0), 1);
        assert_eq!(ulps(DType::F16, 1.0 + 2f64.powi(-10), 1.0), 1);
        // Rounding f64 → bf16 through f32 would round twice; the nearest value wins: just
        // above the midpoint of 1 and 1 + 2⁻⁷ rounds up.
        let above_tie = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(ulps(DType::BF16, 1.0078125, above_tie), 0);
        // Exactly on the midpoint: ties to even (1.0).
        assert_eq!(ulps(DType::BF16, 1.0, 1.0 + 2f64.powi(-8)), 0);
    }

    #[test]
    fn accuracy_of_a_known_error() {
        let want = [1.0, 2.0, 4.0, -8.0];
        let one_ulp = f64::from(f32::from_bits(2.0f32.to_bits() + 1));
        let got = [1.0, one_ulp, 4.0, -8.0];
        let row = accuracy(&got, &want, DType::F32);
        assert_eq!(row.max_ulps, Some(1));
        assert_eq!(row.median_ulps, Some(0));
        assert_eq!(row.exact, 0.75);
        assert_eq!(row.max_rel, Some(2f64.powi(-23)));
        assert!(row.within_tolerance);
        let bad = accuracy(&[1.0, 2.0, 4.0, -7.0], &want, DType::F32);
        assert!(!bad.within_tolerance && bad.error_detail.is_some());
        assert_eq!(bad.max_rel, Some(0.125));
        // Indices: only equality counts.
        let idx = accuracy(&[3.0, 1.0], &[3.0, 2.0], DType::U32);
        assert_eq!(
            (idx.exact, idx.max_ulps, idx.within_tolerance),
            (0.5, None, false)
        );
    }
}
