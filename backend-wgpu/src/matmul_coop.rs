//! The f16 matmul on cooperative matrices (tensor cores): when it runs, and its WGSL.
//!
//! What wgpu 30.0.2 offers is summarised in the `device` module doc: subgroup-scope
//! `coop_mat16x16<f16, A|B>` × `coop_mat16x16<f32, C>` fragments loaded from and stored
//! to workgroup or storage memory, on Vulkan adapters that list such a configuration
//! (NVIDIA since Turing lists 16×16×16 f16 → f32 through `VK_KHR_cooperative_matrix`).
//!
//! Kernel (`matmul_coop.wgsl`): 8 subgroups per workgroup compute a 128 × 128 block of C,
//! each a 64 × 32 part as 4 × 2 fragments of f32 accumulators; K is staged 32 deep as f16
//! in workgroup memory in each operand's own layout (so every layout stages with
//! coalesced loads along its contiguous axis, `vec4` where aligned) and read back as
//! fragments row- or column-major to match. Why these sizes: 64 × 32 per subgroup gives
//! each A fragment two uses and each B fragment four per 16-deep step with 8 accumulator
//! fragments (64 f32 registers per lane at 32 lanes), well inside a register file; a
//! 128 × 128 block halves the staged bytes per multiply against 64 × 64; staging is
//! (128 × 40 or 32 × 136 halves) × 2 + 8 KiB of write-back patches, at most 28 KiB, under
//! the 32 KiB most GPUs offer (checked against the device limit).
//!
//! When it runs ([`coop_shape`], [`with_coop`]): the dtype is f16, the register-tiled
//! kernel would run (both operands have a unit stride; M, N > 1), the device has
//! `EXPERIMENTAL_COOPERATIVE_MATRIX` with a 16×16×16 f16 → f32 configuration, `SUBGROUP`
//! (the kernel numbers subgroups with `subgroup_id`) and a fixed subgroup size SG
//! (min = max, a power of two from 4 to 128: lane l of the write-back takes elements
//! l, l + SG, ...), and a workgroup of 8·SG invocations and the staging fit its limits.
//! Otherwise the f16 matmul runs on the register-tiled kernel as before.
//!
//! Bounds the host guarantees: the same as the register-tiled kernel's (element indices
//! fit u32; a `vec4` load is chosen only for aligned views whose contiguous extent is a
//! multiple of 4, so each vector lies wholly inside or outside the matrix). Fragment
//! loads and stores touch only workgroup memory, at offsets that are multiples of 8
//! halves (16 bytes) with strides 40 or 136 halves, and 16 f32, as Vulkan asks of
//! cooperative-matrix pointers and strides; every global store is bounds-checked.
//!
//! Not checked without a GPU: naga writes kernels with cooperative types under the Vulkan
//! memory model and marks no access `NonPrivatePointer`, so the staging stores are
//! ordered before the fragment loads only by the barrier as drivers implement it (as
//! for every wgpu shader using these types); and lavapipe has no cooperative matrices,
//! so the tests run this kernel with its cooperative operations emulated
//! (`matmul_coop_emulated.wgsl`) and check the real one with naga only.

use crate::matmul::Operand;
use std::fmt::Write as _;

pub(crate) const COOP_WGSL: &str = include_str!("matmul_coop.wgsl");
const COOP_STAGE_WGSL: &str = include_str!("matmul_coop_stage.wgsl");

/// Output block of one workgroup (rows, columns), and the K step (also in the WGSL).
pub(crate) const BM: usize = 128;
pub(crate) const BN: usize = 128;
const BK: usize = 32;
/// Padding (halves) of each staged row: 16 bytes, keeping fragment rows 16-byte aligned.
const PAD: usize = 8;
/// Fragments per subgroup along M and N (the subgroups form a 2 × 4 grid).
const FM: usize = 4;
const FN: usize = 2;
/// Subgroups per workgroup.
const SUBGROUPS: u32 = 8;
/// Bytes of the write-back patches: one 16 × 16 f32 patch per subgroup.
const PATCH_BYTES: usize = 8 * 256 * 4;

/// What the device offers that the choice depends on (from `Gpu`; a plain struct so that
/// the choice is unit-tested without a device).
#[derive(Clone, Debug, Default)]
pub(crate) struct CoopCaps {
    /// The adapter's cooperative-matrix configurations (empty without the feature).
    pub(crate) configs: Vec<wgpu::CooperativeMatrixProperties>,
    pub(crate) f16: bool,
    pub(crate) subgroups: bool,
    pub(crate) subgroup_min: u32,
    pub(crate) subgroup_max: u32,
    pub(crate) max_invocations: u32,
    pub(crate) max_workgroup_size_x: u32,
    pub(crate) max_workgroup_bytes: u32,
}

/// The launch shape of the cooperative-matrix kernel on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CoopShape {
    /// The subgroup size; a workgroup has 8 subgroups.
    pub(crate) sg: u32,
}

/// The configuration the kernel needs: 16×16×16, f16 operands, f32 accumulators.
fn is_wanted(p: &wgpu::CooperativeMatrixProperties) -> bool {
    p.m_size == 16
        && p.n_size == 16
        && p.k_size == 16
        && p.ab_type == wgpu::CooperativeScalarType::F16
        && p.cr_type == wgpu::CooperativeScalarType::F32
}

/// Row stride (halves) of an operand's staged tile: rows run along its contiguous axis.
fn tile_stride(x: usize, op: Operand) -> usize {
    (if op.k_major { BK } else { x }) + PAD
}

/// Halves of an operand's staged tile.
fn tile_len(x: usize, op: Operand) -> usize {
    (if op.k_major { x } else { BK }) * tile_stride(x, op)
}

/// The largest workgroup memory any variant needs: both operands staged k-major.
fn max_workgroup_bytes() -> usize {
    let k = Operand {
        k_major: true,
        vec4: false,
    };
    2 * (tile_len(BM, k) + tile_len(BN, k)) + PATCH_BYTES
}

/// The kernel's launch shape on a device with `caps`, or `None` when the kernel cannot
/// run there (see the module doc for the conditions).
pub(crate) fn coop_shape(caps: &CoopCaps) -> Option<CoopShape> {
    let sg = caps.subgroup_max;
    let threads = SUBGROUPS.checked_mul(sg)?;
    let ok = caps.f16
        && caps.subgroups
        && caps.configs.iter().any(is_wanted)
        && caps.subgroup_min == sg
        && sg.is_power_of_two()
        && (4..=128).contains(&sg)
        && threads <= caps.max_invocations
        && threads <= caps.max_workgroup_size_x
        && max_workgroup_bytes() <= caps.max_workgroup_bytes as usize;
    ok.then_some(CoopShape { sg })
}

/// The staging function of operand `op` ("a" or "b") for the tile `x` wide.
fn stage(op: &str, x: usize, layout: Operand) -> String {
    let body = if layout.vec4 {
        format!(
            "        var v = vec4<f16>(0.0h);\n        if (inside) {{ v = {op}[gi / 4u]; }}\n        t{op}[at] = v.x;\n        t{op}[at + 1u] = v.y;\n        t{op}[at + 2u] = v.z;\n        t{op}[at + 3u] = v.w;"
        )
    } else {
        format!(
            "        var v = 0.0h;\n        if (inside) {{ v = {op}[gi]; }}\n        t{op}[at] = v;"
        )
    };
    let contiguous = if layout.k_major { BK } else { x };
    COOP_STAGE_WGSL
        .replace("{{BODY}}", &body)
        .replace("{{op}}", op)
        .replace("{{X}}", &x.to_string())
        .replace("{{C}}", &contiguous.to_string())
        .replace("{{S}}", &tile_stride(x, layout).to_string())
        .replace("{{KCONT}}", &layout.k_major.to_string())
        .replace("{{PER}}", if layout.vec4 { "4" } else { "1" })
}

/// The accumulators, zero. The zero comes from a zeroed patch of workgroup memory
/// through `coopLoadT` rather than from `coop_mat16x16<f32, C>()`, which naga writes as
/// `OpConstantNull` of the cooperative type: the load uses only operations the kernel
/// needs anyway, so a driver that runs the multiply runs this too.
fn init() -> String {
    let mut s = String::from(
        "    for (var i = t; i < 2048u; i = i + THREADS) { tc[i] = 0.0; }\n    workgroupBarrier();\n    let zero = coopLoadT<coop_mat16x16<f32, C>>(&tc[sgid * 256u], 16u);\n",
    );
    for i in 0..FM {
        for j in 0..FN {
            let _ = writeln!(s, "    var c{i}{j} = zero;");
        }
    }
    s
}

/// One 16-deep step: load FM A and FN B fragments from the staged tiles at depth `kk`,
/// then FM × FN multiply-adds. A k-major A tile holds rows of A (row-major fragments),
/// an m-major one columns (column-major); likewise B, whose n-major tile holds rows of B.
fn mma(a: Operand, b: Operand) -> String {
    let mut s = String::new();
    for i in 0..FM {
        let r = 16 * i;
        let load = if a.k_major {
            format!("coopLoadT<coop_mat16x16<f16, A>>(&ta[(sm + {r}u) * SA + kk], SA)")
        } else {
            format!("coopLoad<coop_mat16x16<f16, A>>(&ta[kk * SA + sm + {r}u], SA)")
        };
        let _ = writeln!(s, "            let a{i} = {load};");
    }
    for j in 0..FN {
        let c = 16 * j;
        let load = if b.k_major {
            format!("coopLoad<coop_mat16x16<f16, B>>(&tb[(sn + {c}u) * SB + kk], SB)")
        } else {
            format!("coopLoadT<coop_mat16x16<f16, B>>(&tb[kk * SB + sn + {c}u], SB)")
        };
        let _ = writeln!(s, "            let b{j} = {load};");
    }
    for i in 0..FM {
        for j in 0..FN {
            let _ = writeln!(
                s,
                "            c{i}{j} = coopMultiplyAdd(a{i}, b{j}, c{i}{j});"
            );
        }
    }
    s
}

/// The write-back: each fragment to the subgroup's patch, then through the epilogue.
/// Barriers (not subgroup ones) order the patch's writes and reads: they sit in uniform
/// control flow, which WGSL requires of every cooperative operation anyway.
fn write_back() -> String {
    let mut s = String::new();
    for i in 0..FM {
        for j in 0..FN {
            let _ = writeln!(s, "    coopStoreT(c{i}{j}, &tc[sgid * 256u], 16u);");
            let _ = writeln!(s, "    workgroupBarrier();");
            let _ = writeln!(
                s,
                "    store_patch(live, batch, m0 + sm + {}u, n0 + sn + {}u, sgid, lane);",
                16 * i,
                16 * j
            );
            let _ = writeln!(s, "    workgroupBarrier();");
        }
    }
    s
}

/// The WGSL of one variant (also used by the naga tests). `act` and `bias` are the
/// epilogue constants of `matmul.rs`; the bindings are the register-tiled kernel's.
pub(crate) fn coop_source(
    bindings: &[crate::pipelines::Binding],
    epilogue: &[(&str, String)],
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    // Enable directives precede every declaration; `assemble` starts with `enable f16;`.
    "enable wgpu_cooperative_matrix;\n".to_string() + &body(bindings, epilogue, a, b, shape)
}

/// The kernel without its enable directive.
fn body(
    bindings: &[crate::pipelines::Binding],
    epilogue: &[(&str, String)],
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    let mut constants: Vec<(&str, String)> = epilogue.to_vec();
    constants.extend([
        ("STAGE_A", stage("a", BM, a)),
        ("STAGE_B", stage("b", BN, b)),
        ("INIT", init()),
        ("MMA", mma(a, b)),
        ("WRITE", write_back()),
        ("SG", shape.sg.to_string()),
        ("THREADS", (SUBGROUPS * shape.sg).to_string()),
        ("SA", tile_stride(BM, a).to_string()),
        ("SB", tile_stride(BN, b).to_string()),
        ("TA_LEN", tile_len(BM, a).to_string()),
        ("TB_LEN", tile_len(BN, b).to_string()),
    ]);
    crate::pipelines::assemble(COOP_WGSL, bindings, &constants)
}

/// The same kernel with its cooperative operations emulated in plain WGSL
/// (`matmul_coop_emulated.wgsl`), for tests on adapters without cooperative matrices.
/// The rewrite is textual and total: the result must contain no `coop` word but the
/// emulation's own names (the tests check).
#[cfg(test)]
pub(crate) fn emulated_source(
    bindings: &[crate::pipelines::Binding],
    epilogue: &[(&str, String)],
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    let src = body(bindings, epilogue, a, b, shape);
    let mut out = String::new();
    for line in src.lines() {
        let l = line
            .replace(
                "coopLoadT<coop_mat16x16<f32, C>>(&tc[sgid * 256u], 16u)",
                "array<f32, EMU_N>()",
            )
            .replace("coopMultiplyAdd(", "emu_mma(lane, ")
            .replace("coopStoreT(", "emu_store(lane, ")
            .replace(", &tc[sgid * 256u], 16u);", ", sgid * 256u);");
        let l = emulate_load(&l, "coopLoadT<coop_mat16x16<f16, A>>(&ta[", true);
        let l = emulate_load(&l, "coopLoad<coop_mat16x16<f16, A>>(&ta[", false);
        let l = emulate_load(&l, "coopLoadT<coop_mat16x16<f16, B>>(&tb[", true);
        let l = emulate_load(&l, "coopLoad<coop_mat16x16<f16, B>>(&tb[", false);
        out += &l;
        out.push('\n');
    }
    out + include_str!("matmul_coop_emulated.wgsl")
}

/// `coopLoadT<…>(&ta[INDEX], S)` → `emu_load(INDEX, S, true)`: the index is the text up
/// to the `], ` that closes it, the stride up to the final `)`.
#[cfg(test)]
fn emulate_load(line: &str, from: &str, row_major: bool) -> String {
    let to = "emu_load(";
    let Some(at) = line.find(from) else {
        return line.to_string();
    };
    let rest = &line[at + from.len()..];
    let close = rest.find("], ").unwrap_or(rest.len());
    let index = &rest[..close];
    let tail = &rest[close + 3..];
    let end = tail.rfind(')').unwrap_or(tail.len());
    format!(
        "{}{to}{index}, {}, {row_major}){}",
        &line[..at],
        &tail[..end],
        &tail[end + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(m: u32, ab: wgpu::CooperativeScalarType) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties {
            m_size: m,
            n_size: m,
            k_size: m,
            ab_type: ab,
            cr_type: wgpu::CooperativeScalarType::F32,
            saturating_accumulation: false,
        }
    }

    /// An H100 as its Vulkan driver describes itself (limits from the lead's run).
    fn h100() -> CoopCaps {
        CoopCaps {
            configs: vec![
                config(16, wgpu::CooperativeScalarType::F16),
                config(8, wgpu::CooperativeScalarType::F32),
            ],
            f16: true,
            subgroups: true,
            subgroup_min: 32,
            subgroup_max: 32,
            max_invocations: 1024,
            max_workgroup_size_x: 1024,
            max_workgroup_bytes: 49152,
        }
    }

    #[test]
    fn an_h100_gets_eight_subgroups_of_32() {
        assert_eq!(coop_shape(&h100()), Some(CoopShape { sg: 32 }));
        assert!(max_workgroup_bytes() <= 32 * 1024);
    }

    #[test]
    fn anything_missing_falls_back() {
        type Change = fn(&mut CoopCaps);
        let cases: [(&str, Change); 9] = [
            ("no feature", |c| c.configs.clear()),
            ("only 8x8 f32", |c| {
                c.configs = vec![config(8, wgpu::CooperativeScalarType::F32)]
            }),
            ("f16 accumulators only", |c| {
                c.configs = vec![wgpu::CooperativeMatrixProperties {
                    cr_type: wgpu::CooperativeScalarType::F16,
                    ..config(16, wgpu::CooperativeScalarType::F16)
                }]
            }),
            ("no f16", |c| c.f16 = false),
            ("no subgroups", |c| c.subgroups = false),
            ("varying subgroup size", |c| c.subgroup_min = 16),
            ("workgroup too large", |c| c.max_invocations = 128),
            ("workgroup x too large", |c| c.max_workgroup_size_x = 128),
            ("workgroup memory", |c| c.max_workgroup_bytes = 16384),
        ];
        for (name, f) in cases {
            let mut caps = h100();
            f(&mut caps);
            assert_eq!(coop_shape(&caps), None, "{name}");
        }
        let mut wave64 = h100();
        (wave64.subgroup_min, wave64.subgroup_max) = (64, 64);
        assert_eq!(coop_shape(&wave64), Some(CoopShape { sg: 64 }));
        assert_eq!(coop_shape(&CoopCaps::default()), None);
    }
}
