//! Deterministic normal samples for `Tensor::randn`.
//!
//! Counter-based: element `i` of a tensor drawn with `seed` depends only on `(seed, i)`,
//! through SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014) and the Box–Muller transform, computed with the `libm` crate
//! so the values are the same on every platform and every backend (the host draws them
//! once and uploads them).

/// SplitMix64's step: the output for generator state `z` (the next state is
/// `z + 0x9E37_79B9_7F4A_7C15`). Also the benchmark's seeded shuffles.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform sample in (0, 1] from 53 random bits.
fn unit(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64)
}

/// The `i`-th standard normal sample of the stream `seed`.
pub fn normal_at(seed: u64, i: u64) -> f64 {
    let key = splitmix64(seed ^ 0x6A09_E667_F3BC_C909);
    let u1 = unit(splitmix64(key ^ i.wrapping_mul(2)));
    let u2 = unit(splitmix64(key ^ i.wrapping_mul(2).wrapping_add(1)));
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * std::f64::consts::PI * u2)
}

/// `len` standard normal samples of the stream `seed`, as f32.
pub fn normal_f32(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64).map(|i| normal_at(seed, i) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_look_standard_normal() {
        let v = normal_f32(7, 100_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        assert_eq!(normal_f32(1, 64), normal_f32(1, 64));
        assert_ne!(normal_f32(1, 64), normal_f32(2, 64));
        // A prefix of a longer draw is the shorter draw.
        assert_eq!(normal_f32(3, 200)[..50], normal_f32(3, 50)[..]);
    }
}
