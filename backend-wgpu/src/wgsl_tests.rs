//! Validates every generated WGSL variant with naga (parse + full validation with the
//! capabilities the device would grant), without a GPU.

use crate::attention::attention_source;
use crate::copy::{cast_source, strided_source};
use crate::matmul::matmul_source;
use crate::reduce::{normalize_source, reduce_source};
use xkern_core::{Activation, DType, NormKind, ReduceKind};

fn validate(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: parse error:\n{}", e.emit_to_string(src)));
    let caps = naga::valid::Capabilities::SHADER_FLOAT16;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: invalid:\n{}", e.emit_to_string(src)));
}

#[test]
fn every_kernel_variant_validates() {
    let mut n = 0;
    for from in DType::ALL {
        for to in DType::ALL {
            validate(&format!("cast {from}->{to}"), &cast_source(from, to));
            n += 1;
        }
    }
    for wide in [false, true] {
        validate("strided", &strided_source(wide));
        n += 1;
    }
    for dtype in DType::FLOATS {
        for act in [
            None,
            Some(Activation::Relu),
            Some(Activation::Gelu),
            Some(Activation::Silu),
        ] {
            for bias in [false, true] {
                validate(
                    &format!("matmul {dtype} {act:?} {bias}"),
                    &matmul_source(dtype, act, bias),
                );
                n += 1;
            }
        }
        validate(&format!("attention {dtype}"), &attention_source(dtype));
        n += 1;
        for kind in ReduceKind::ALL {
            validate(
                &format!("reduce {dtype} {kind:?}"),
                &reduce_source(dtype, kind),
            );
            n += 1;
        }
        for kind in [
            NormKind::Softmax,
            NormKind::LogSoftmax,
            NormKind::RmsNorm { eps: 0.0 },
        ] {
            for w in [false, true] {
                validate(
                    &format!("normalize {dtype} {kind:?}"),
                    &normalize_source(dtype, kind, w),
                );
                n += 1;
            }
        }
    }
    assert_eq!(n, 16 + 2 + 3 * (8 + 1 + 7 + 6));
}
