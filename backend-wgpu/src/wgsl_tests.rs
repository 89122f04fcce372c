//! Validates every generated WGSL variant with naga (parse + full validation with the
//! capabilities the device would grant), without a GPU.

use crate::attention::{FLASH_TILES, FORCED_TILES, TEST_TILES};
use crate::attention_wgsl::{attention_source, decode_source, flash_source, merge_source};
use crate::copy::{cast_source, strided_source};
use crate::matmul::{
    MatmulBlock, Operand, block_source, gemv_source, matmul_source, splitk_source,
    tiled_coop_source,
};
use crate::matmul_coop::CoopShape;
use crate::reduce::{normalize_source, reduce_source};
use xkern_core::{Activation, DType, NormKind, ReduceKind};

fn validate(name: &str, src: &str) {
    validate_with(name, src, false);
}

/// Validates `src` with the subgroup capability only when `subgroups`, so a fallback
/// variant that used a subgroup builtin would fail here.
pub(crate) fn validate_with(name: &str, src: &str, subgroups: bool) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: parse error:\n{}", e.emit_to_string(src)));
    let mut caps = naga::valid::Capabilities::SHADER_FLOAT16;
    if subgroups {
        caps |= naga::valid::Capabilities::SUBGROUP;
    }
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: invalid:\n{}", e.emit_to_string(src)));
}

/// Every layout of one operand of the tiled matmul: contiguous along K or not, scalar or
/// vector loads.
const OPERANDS: [Operand; 4] = [
    Operand {
        k_major: false,
        vec4: false,
    },
    Operand {
        k_major: false,
        vec4: true,
    },
    Operand {
        k_major: true,
        vec4: false,
    },
    Operand {
        k_major: true,
        vec4: true,
    },
];

/// (D, Dv) pairs the fast attention kernels are validated at.
const ATTENTION_DIMS: [(usize, usize); 8] = [
    (1, 1),
    (7, 33),
    (64, 64),
    (80, 80),
    (96, 96),
    (128, 128),
    (129, 7),
    (256, 256),
];

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
                validate(
                    &format!("matmul-splitk {dtype} {act:?} {bias}"),
                    &splitk_source(dtype, act, bias),
                );
                n += 1;
                for dot in [false, true] {
                    validate(
                        &format!("gemv {dtype} {act:?} {bias} dot={dot}"),
                        &gemv_source(dtype, act, bias, dot),
                    );
                    n += 1;
                }
                for block in [MatmulBlock::B64, MatmulBlock::B128x64, MatmulBlock::B128] {
                    for a in OPERANDS {
                        for b in OPERANDS {
                            validate(
                                &format!(
                                    "matmul-tiled {block:?} {dtype} {act:?} {bias} {a:?} {b:?}"
                                ),
                                &block_source(dtype, act, bias, a, b, block),
                            );
                            n += 1;
                        }
                    }
                }
            }
        }
        validate(&format!("attention {dtype}"), &attention_source(dtype));
        n += 1;
        // The fast attention kernels at the head dims the host bakes in: the common ones,
        // odd and tiny ones, and the largest (256).
        for (d, dv) in ATTENTION_DIMS {
            for t in FLASH_TILES
                .into_iter()
                .chain(FORCED_TILES)
                .chain(TEST_TILES)
            {
                // vec4 Q/K/V loads only where D and Dv are multiples of 4.
                for vec in [false, true] {
                    if vec && (d % 4 != 0 || dv % 4 != 0) {
                        continue;
                    }
                    validate(
                        &format!("attention-flash {dtype} d={d} dv={dv} {t:?} vec={vec}"),
                        &flash_source(dtype, d, dv, t, vec),
                    );
                    n += 1;
                }
            }
            for rows in [4, 8] {
                // vec4 K/V loads only where D and Dv are multiples of 4.
                let vecs: &[bool] = if d % 4 == 0 && dv % 4 == 0 {
                    &[false, true]
                } else {
                    &[false]
                };
                for &vec in vecs {
                    // The V prefetch on and off, whole and split dot products.
                    let pv = vec == (rows == 4);
                    let sd = !vec;
                    validate(
                        &format!(
                            "attention-decode {dtype} d={d} dv={dv} rows={rows} vec={vec} pv={pv} sd={sd}"
                        ),
                        &decode_source(dtype, d, dv, rows, vec, pv, sd),
                    );
                    n += 1;
                }
            }
        }
        for kind in ReduceKind::ALL {
            for sg in [false, true] {
                validate_with(
                    &format!("reduce {dtype} {kind:?} subgroups={sg}"),
                    &reduce_source(dtype, kind, sg),
                    sg,
                );
                n += 1;
            }
        }
        for kind in [
            NormKind::Softmax,
            NormKind::LogSoftmax,
            NormKind::RmsNorm { eps: 0.0 },
        ] {
            for w in [false, true] {
                for sg in [false, true] {
                    for cache in [0, 1, 2, 4, 8, 16] {
                        for wg in [128, 256] {
                            validate_with(
                                &format!(
                                    "normalize {dtype} {kind:?} subgroups={sg} cache={cache} wg={wg}"
                                ),
                                &normalize_source(dtype, kind, w, sg, cache, wg),
                                sg,
                            );
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        validate(&format!("attention-merge {dtype}"), &merge_source(dtype));
        n += 1;
    }
    // Per float dtype: 8 epilogues × (strided + split-K sum + 2 GEMV + 3 blocks × 16
    // tiled layouts), attention (fallback, and the prefill tilings (host and test ones) +
    // 2 decode row counts per head-dim pair, and as many vec4 prefills and 2 vec4
    // decodes where D and Dv are multiples of 4), 7
    // reductions × 2 trees, 3 normalisations × weight × 2 trees × 6 register caches
    // (none, 1, 2, 4, 8, 16 vec4s per invocation) × 2 workgroup sizes; the merge per output dtype.
    let vec_dims = ATTENTION_DIMS
        .iter()
        .filter(|(d, dv)| d % 4 == 0 && dv % 4 == 0)
        .count();
    let flash = FLASH_TILES.len() + FORCED_TILES.len() + TEST_TILES.len();
    let fast = ATTENTION_DIMS.len() * (flash + 2) + (flash + 2) * vec_dims;
    assert_eq!(
        n,
        16 + 2 + 3 * (8 * (2 + 2 + 3 * 16) + 1 + fast + 2 * 7 + 2 * 6 * 6 * 2) + 3
    );
}

/// Every variant of the cooperative-matrix matmul (layouts × epilogues × subgroup sizes)
/// parses, validates with the capabilities a device with cooperative matrices grants
/// (and fails without `COOPERATIVE_MATRIX`), and goes through naga's SPIR-V writer as
/// wgpu's Vulkan backend would drive it (SPIR-V 1.6, index clamping): lavapipe has no
/// cooperative matrices, so this is as far as the kernel gets on this machine.
#[test]
fn every_coop_matmul_variant_validates_and_writes_spirv() {
    let caps = naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::SUBGROUP
        | naga::valid::Capabilities::COOPERATIVE_MATRIX;
    let opts = naga::back::spv::Options {
        lang_version: (1, 6),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: naga::proc::BoundsCheckPolicy::Restrict,
            buffer: naga::proc::BoundsCheckPolicy::Restrict,
            image_load: naga::proc::BoundsCheckPolicy::Restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        force_loop_bounding: true,
        ..naga::back::spv::Options::default()
    };
    let mut n = 0;
    for sg in [32, 64, 16] {
        for act in [
            None,
            Some(Activation::Relu),
            Some(Activation::Gelu),
            Some(Activation::Silu),
        ] {
            for bias in [false, true] {
                for a in OPERANDS {
                    for b in OPERANDS {
                        let name = format!("matmul-coop sg={sg} {act:?} {bias} {a:?} {b:?}");
                        let src = tiled_coop_source(act, bias, a, b, CoopShape { sg });
                        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| {
                            panic!("{name}: parse error:\n{}", e.emit_to_string(&src))
                        });
                        let info =
                            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                                .validate(&module)
                                .unwrap_or_else(|e| {
                                    panic!("{name}: invalid:\n{}", e.emit_to_string(&src))
                                });
                        let without = naga::valid::Validator::new(
                            naga::valid::ValidationFlags::all(),
                            caps - naga::valid::Capabilities::COOPERATIVE_MATRIX,
                        )
                        .validate(&module);
                        assert!(without.is_err(), "{name}: valid without the capability");
                        let words = naga::back::spv::write_vec(&module, &info, &opts, None)
                            .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));
                        assert_eq!(words.first(), Some(&0x0723_0203), "{name}: SPIR-V magic");
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, 3 * 8 * 16);
}
