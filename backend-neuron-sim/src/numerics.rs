//! Hardware numerics: how elements are stored, cast and computed.
//!
//! - Storage: on-chip memories and HBM hold little-endian bytes of the tile's dtype.
//!   Reading converts to f32 exactly; writing rounds f32 to the dtype with
//!   round-to-nearest-even (the `half` crate's `from_f32`), NaN stays NaN.
//! - The tensor engine multiplies bf16/fp16 operands exactly (their products fit f32)
//!   and accumulates in fp32 in PSUM; fp32 operands are used as given (fp32 matmul mode).
//! - Vector, scalar and GpSimd compute in fp32 with free casts on input and output.
//! - Activation functions: the hardware evaluates piecewise polynomials with published
//!   valid input ranges. We model each as the correctly-rounded-ish f32 function of
//!   `libm`/std (exp, tanh, erfc-based gelu, ...): within the valid ranges the hardware's
//!   error is below bf16 resolution, and outside them this model is more accurate than
//!   the hardware, never less. Outputs stay within xkern's conformance tolerances.
//! - Freshly allocated on-chip memory is poisoned with the dtype's quiet NaN (u32: all
//!   ones) so that reads of unwritten data show up.

// Element indices come from access patterns validated against their tensor or tile.
#![allow(clippy::indexing_slicing)]

use half::{bf16, f16};
use xkern_core::DType;

/// Decodes one element of `dtype` at the start of `bytes` to f32 (u32 converts by value).
#[inline]
pub fn load(dtype: DType, bytes: &[u8]) -> f32 {
    match dtype {
        DType::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        DType::BF16 => bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
        DType::F16 => f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
        DType::U32 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f32,
    }
}

/// Encodes `x` as one element of `dtype` into the start of `bytes`, rounding to nearest
/// even (u32: saturating conversion of the value, NaN → 0, like Rust's `as`).
#[inline]
pub fn store(dtype: DType, bytes: &mut [u8], x: f32) {
    match dtype {
        DType::F32 => bytes[..4].copy_from_slice(&x.to_le_bytes()),
        DType::BF16 => bytes[..2].copy_from_slice(&bf16::from_f32(x).to_bits().to_le_bytes()),
        DType::F16 => bytes[..2].copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes()),
        DType::U32 => bytes[..4].copy_from_slice(&(x as u32).to_le_bytes()),
    }
}

/// Decodes a contiguous run of elements into `out` (fast paths per dtype).
pub fn load_run(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::BF16 => {
            // bf16 → f32 is a 16-bit shift of the bits: exact.
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        _ => {
            let size = dtype.size_in_bytes();
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(size)) {
                *o = load(dtype, c);
            }
        }
    }
}

/// Encodes a contiguous run of f32 values into `bytes`, rounding per [`store`].
pub fn store_run(dtype: DType, bytes: &mut [u8], values: &[f32]) {
    match dtype {
        DType::F32 => {
            for (c, v) in bytes.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            let size = dtype.size_in_bytes();
            for (c, v) in bytes.chunks_exact_mut(size).zip(values) {
                store(dtype, c, *v);
            }
        }
    }
}

/// The poison pattern of one element of `dtype`: a quiet NaN (u32: all ones).
pub fn poison_bytes(dtype: DType) -> &'static [u8] {
    match dtype {
        DType::F32 => &[0x00, 0x00, 0xC0, 0x7F],
        DType::BF16 => &[0xC0, 0x7F],
        DType::F16 => &[0x00, 0x7E],
        DType::U32 => &[0xFF, 0xFF, 0xFF, 0xFF],
    }
}

/// A binary ALU operation of the vector, scalar and GpSimd engines (NKI's `np.add`, ...).
/// Comparisons yield 1.0 or 0.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// a + b
    Add,
    /// a − b
    Subtract,
    /// a · b
    Multiply,
    /// a / b
    Divide,
    /// max(a, b), NaN-propagating
    Max,
    /// min(a, b), NaN-propagating
    Min,
    /// a^b
    Pow,
    /// 1.0 if a == b
    IsEqual,
    /// 1.0 if a >= b
    IsGe,
    /// 1.0 if a > b
    IsGt,
    /// 1.0 if a <= b
    IsLe,
    /// 1.0 if a < b
    IsLt,
}

impl AluOp {
    /// Applies the operation in f32.
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        let flag = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            AluOp::Add => a + b,
            AluOp::Subtract => a - b,
            AluOp::Multiply => a * b,
            AluOp::Divide => a / b,
            AluOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            AluOp::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            AluOp::Pow => a.powf(b),
            AluOp::IsEqual => flag(a == b),
            AluOp::IsGe => flag(a >= b),
            AluOp::IsGt => flag(a > b),
            AluOp::IsLe => flag(a <= b),
            AluOp::IsLt => flag(a < b),
        }
    }

    /// The identity element when used as a reduction (`None` for non-reductions).
    pub fn reduce_identity(self) -> Option<f32> {
        match self {
            AluOp::Add => Some(0.0),
            AluOp::Multiply => Some(1.0),
            AluOp::Max => Some(f32::NEG_INFINITY),
            AluOp::Min => Some(f32::INFINITY),
            _ => None,
        }
    }
}

/// An activation function of the scalar engine, evaluated as an f32 function (see the
/// module doc for why that models the hardware's piecewise polynomials).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFn {
    /// x (a copy with scale and bias).
    Identity,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// max(x, 0)
    Relu,
    /// tanh x
    Tanh,
    /// 1 / (1 + e^−x)
    Sigmoid,
    /// x · Φ(x), the exact erf form.
    Gelu,
    /// x · σ(x)
    Silu,
    /// x²
    Square,
    /// √x
    Sqrt,
    /// 1 / √x
    Rsqrt,
    /// 1 / x
    Reciprocal,
}

impl ActFn {
    /// Evaluates the function in f32.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            ActFn::Identity => x,
            ActFn::Exp => x.exp(),
            ActFn::Log => x.ln(),
            ActFn::Relu => {
                if x.is_nan() {
                    x
                } else {
                    x.max(0.0)
                }
            }
            ActFn::Tanh => x.tanh(),
            ActFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            // x·Φ(x) with Φ(x) = erfc(−x/√2)/2: 1 + erf(x/√2) would cancel for x < 0.
            ActFn::Gelu => 0.5 * x * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2),
            ActFn::Silu => x / (1.0 + (-x).exp()),
            ActFn::Square => x * x,
            ActFn::Sqrt => x.sqrt(),
            ActFn::Rsqrt => 1.0 / x.sqrt(),
            ActFn::Reciprocal => 1.0 / x,
        }
    }
}

/// Comparison of an affine expression against zero, for [`crate::Simulator::affine_select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// expr >= 0
    Ge,
    /// expr > 0
    Gt,
    /// expr <= 0
    Le,
    /// expr < 0
    Lt,
    /// expr == 0
    Eq,
}

impl CmpOp {
    /// True when `v` compared with zero holds.
    #[inline]
    pub fn holds(self, v: i64) -> bool {
        match self {
            CmpOp::Ge => v >= 0,
            CmpOp::Gt => v > 0,
            CmpOp::Le => v <= 0,
            CmpOp::Lt => v < 0,
            CmpOp::Eq => v == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_store_rounds_to_nearest_even() {
        let mut b = [0u8; 2];
        // 1 + 2^-8 lies exactly between bf16 1.0 and 1 + 2^-7: ties go to even (1.0).
        store(DType::BF16, &mut b, 1.0 + 1.0 / 256.0);
        assert_eq!(load(DType::BF16, &b), 1.0);
        // 1 + 3·2^-8 lies between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
        store(DType::BF16, &mut b, 1.0 + 3.0 / 256.0);
        assert_eq!(load(DType::BF16, &b), 1.0 + 1.0 / 64.0);
    }

    #[test]
    fn poison_reads_as_nan() {
        for d in [DType::F32, DType::BF16, DType::F16] {
            assert!(load(d, poison_bytes(d)).is_nan(), "{d}");
        }
    }

    #[test]
    fn runs_match_scalar_paths() {
        let vals = [1.5f32, -2.25, 3.0e-3, 65504.0, f32::NAN];
        for d in [DType::F32, DType::BF16, DType::F16] {
            let mut bytes = vec![0u8; vals.len() * d.size_in_bytes()];
            store_run(d, &mut bytes, &vals);
            let mut back = vec![0f32; vals.len()];
            load_run(d, &bytes, &mut back);
            for (i, v) in vals.iter().enumerate() {
                let want = d.round_f32(*v);
                assert!(
                    back[i] == want || (want.is_nan() && back[i].is_nan()),
                    "{d} {v}"
                );
            }
        }
    }
}
