//! Element types: the [`DType`] tag, the [`Element`] trait that ties a Rust type to its tag,
//! and the host-side buffers ([`HostSlice`], [`HostData`]) that move data across the
//! backend boundary.
//!
//! Rounding from f32 to f16/bf16 is round-to-nearest-even everywhere (the `half` crate's
//! `from_f32`), NaN stays NaN, and ±inf stay infinite.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE-754 binary32.
    F32,
    /// IEEE-754 binary16; computed in f32.
    F16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa); computed in f32.
    BF16,
    /// Unsigned 32-bit integers: the indices that argmax/argmin return.
    U32,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::U32];
    /// The floating-point dtypes, which every arithmetic op accepts.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// True for F32, F16 and BF16.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::U32)
    }

    /// The lower-case name used in case ids and reports (`f32`, `f16`, `bf16`, `u32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        }
    }

    /// Parses a name as printed by [`DType::name`].
    pub fn parse(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Rounds an f32 to this dtype and back: what storing `x` in this dtype keeps.
    /// For U32 the value is returned unchanged (U32 never holds arithmetic results).
    pub fn round_f32(self, x: f32) -> f32 {
        match self {
            DType::F32 | DType::U32 => x,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for u32 {}
}

/// A Rust type that can be a tensor element: `f32`, `half::f16`, `half::bf16` or `u32`.
///
/// Sealed: the set of element types is part of xkern's contract.
pub trait Element:
    Copy + Send + Sync + fmt::Debug + bytemuck::Pod + sealed::Sealed + 'static
{
    /// The tag of this type.
    const DTYPE: DType;
    /// Borrows a slice as a host buffer.
    fn host_slice(data: &[Self]) -> HostSlice<'_>;
    /// Takes the vector out of a host buffer of this type (`None` for another dtype).
    fn from_host(data: HostData) -> Option<Vec<Self>>;
}

macro_rules! impl_element {
    // One expansion, for f32:
    // impl Element for f32 { const DTYPE = DType::F32; host_slice -> HostSlice::F32(data);
    //                        from_host: HostData::F32(v) => Some(v), _ => None }
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn host_slice(data: &[Self]) -> HostSlice<'_> {
                HostSlice::$variant(data)
            }
            fn from_host(data: HostData) -> Option<Vec<Self>> {
                match data {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f16, F16);
impl_element!(bf16, BF16);
impl_element!(u32, U32);

/// A borrowed host buffer of one dtype: what [`crate::Backend::upload`] receives.
#[derive(Clone, Copy, Debug)]
pub enum HostSlice<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
    /// bf16 elements.
    BF16(&'a [bf16]),
    /// u32 elements.
    U32(&'a [u32]),
}

impl HostSlice<'_> {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            HostSlice::F32(_) => DType::F32,
            HostSlice::F16(_) => DType::F16,
            HostSlice::BF16(_) => DType::BF16,
            HostSlice::U32(_) => DType::U32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostSlice::F32(v) => v.len(),
            HostSlice::F16(v) => v.len(),
            HostSlice::BF16(v) => v.len(),
            HostSlice::U32(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw little-endian bytes (what a GPU or simulated HBM stores).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HostSlice::F32(v) => bytemuck::cast_slice(v),
            HostSlice::F16(v) => bytemuck::cast_slice(v),
            HostSlice::BF16(v) => bytemuck::cast_slice(v),
            HostSlice::U32(v) => bytemuck::cast_slice(v),
        }
    }

    /// An owned copy.
    pub fn to_owned(&self) -> HostData {
        match *self {
            HostSlice::F32(v) => HostData::F32(v.to_vec()),
            HostSlice::F16(v) => HostData::F16(v.to_vec()),
            HostSlice::BF16(v) => HostData::BF16(v.to_vec()),
            HostSlice::U32(v) => HostData::U32(v.to_vec()),
        }
    }
}

/// An owned host buffer of one dtype: what [`crate::Backend::download`] returns.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// u32 elements.
    U32(Vec<u32>),
}

impl HostData {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        self.as_slice().dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Borrows the buffer.
    pub fn as_slice(&self) -> HostSlice<'_> {
        match self {
            HostData::F32(v) => HostSlice::F32(v),
            HostData::F16(v) => HostSlice::F16(v),
            HostData::BF16(v) => HostSlice::BF16(v),
            HostData::U32(v) => HostSlice::U32(v),
        }
    }

    /// Rebuilds a buffer of `dtype` from little-endian bytes (length must be a multiple of
    /// the element size; returns `None` otherwise).
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> Option<HostData> {
        if !bytes.len().is_multiple_of(dtype.size_in_bytes()) {
            return None;
        }
        Some(match dtype {
            DType::F32 => HostData::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F16 => HostData::F16(bytemuck::pod_collect_to_vec(bytes)),
            DType::BF16 => HostData::BF16(bytemuck::pod_collect_to_vec(bytes)),
            DType::U32 => HostData::U32(bytemuck::pod_collect_to_vec(bytes)),
        })
    }

    /// Every element as f64, exactly (all four dtypes embed in f64 without rounding).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            HostData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            HostData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            HostData::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    /// Rounds f32 values to `dtype` (round-to-nearest-even). `dtype` must be a float
    /// dtype; for U32 this returns `None`.
    pub fn from_f32(dtype: DType, values: &[f32]) -> Option<HostData> {
        Some(match dtype {
            DType::F32 => HostData::F32(values.to_vec()),
            DType::F16 => HostData::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => HostData::BF16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::U32 => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_nearest_even_and_keeps_specials() {
        // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
        assert_eq!(DType::BF16.round_f32(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 lies between 1 + 2^-7 and 1 + 2^-6: ties to even mantissa (1 + 2^-6).
        assert_eq!(DType::BF16.round_f32(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(DType::F16.round_f32(1.0 + 1.0 / 2048.0), 1.0);
        assert!(DType::F16.round_f32(f32::NAN).is_nan());
        assert_eq!(DType::F16.round_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(DType::F16.round_f32(1e6), f32::INFINITY);
        assert_eq!(DType::BF16.round_f32(f32::NEG_INFINITY), f32::NEG_INFINITY);
    }

    #[test]
    fn bytes_round_trip() {
        let d = HostData::BF16(vec![bf16::from_f32(1.5), bf16::from_f32(-2.0)]);
        let bytes = d.as_slice().as_bytes().to_vec();
        assert_eq!(HostData::from_bytes(DType::BF16, &bytes), Some(d));
        assert_eq!(HostData::from_bytes(DType::F32, &bytes[..3]), None);
    }

    #[test]
    fn names_parse_back() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()), Some(d));
        }
        assert_eq!(DType::parse("f64"), None);
    }
}
