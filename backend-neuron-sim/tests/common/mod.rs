//! Helpers shared by the integration tests: deterministic data and an f64 reference.
#![allow(dead_code)]

use xkern_core::DType;

/// Deterministic values in [-1, 1) (xorshift), rounded to `dtype`.
pub fn data(n: usize, seed: u64, dtype: DType) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            dtype.round_f32((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

/// `lhsTᵀ · rhs` in f64: lhsT `[k, m]`, rhs `[k, n]`, result `[m, n]`.
pub fn matmul_t_f64(lhs_t: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for kk in 0..k {
        for i in 0..m {
            let a = lhs_t[kk * m + i] as f64;
            for j in 0..n {
                out[i * n + j] += a * rhs[kk * n + j] as f64;
            }
        }
    }
    out
}

/// ‖got − want‖_F / ‖want‖_F.
pub fn rel_frobenius(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        num += (*g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den).sqrt()
}
