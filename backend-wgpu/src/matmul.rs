//! Batched matmul with the fused epilogue: three kernels, chosen from the operand strides.
//!
//! - **Register-tiled** (`matmul_tiled.wgsl`, the default). A workgroup of 16 × 16
//!   invocations computes a 64 × 64 block of C; each invocation a 4 × 4 micro-tile in
//!   registers. K is walked 16 at a time: both operands are staged k-major in workgroup
//!   memory, then each invocation runs 16 steps of 4 + 4 workgroup loads and 16 FMAs.
//!   Why these sizes: 256 invocations and 2 × 16 × 65 × 4 B ≈ 8.3 KiB of workgroup
//!   memory fit WebGPU's guaranteed limits (256 invocations, 16 KiB), so the kernel runs
//!   on every adapter without a query; 16 accumulators plus 8 operands stay in registers
//!   on every GPU class (8 × 8 micro-tiles need 64 + 16 and spill on some mobile parts);
//!   the 4 × 4 tile reuses each staged value 4 times, cutting workgroup-memory traffic
//!   4× against the one-output-per-invocation kernel; and a 64 × 64 block keeps a
//!   512 × 512 product at 64 workgroups, where 128 × 128 would leave most of a large GPU
//!   idle. Micro-tile rows and columns are interleaved (rows ty + 16i, columns tx + 16j):
//!   the B reads of a k-step hit 16 consecutive words (no bank conflict), the A reads are
//!   broadcasts, and each store of the write-back is a coalesced row segment.
//!   Variants: each operand is contiguous along K or along its other axis (NN: A along K,
//!   B along N; NT: B along K, i.e. `.t()` of a row-major [N, K]; TN: A along M; TT:
//!   both), and staging loads run along that axis so neighbouring invocations read
//!   neighbouring addresses. Staging that transposes (an operand contiguous along K) writes
//!   down a column of the k-major tile, so that tile's rows are padded by one word: 65
//!   instead of 64 turns the 16-way bank conflict of those stores into at most 2-way.
//!   Where an operand's contiguous extent, its other stride and every batch offset are
//!   multiples of 4 (and K > 0), staging reads one `vec4` (16 B for f32, 8 B for 16-bit
//!   types) per invocation instead of four scalars. The micro-kernel and the write-back
//!   are unrolled by [`micro_kernel`] and [`write_back`] from the [`Tiling`] constants.
//! - **Cooperative matrices** (`matmul_coop.wgsl`, see [`crate::matmul_coop`]): the f16
//!   case of the register-tiled kernel on tensor cores, where the device offers them;
//!   every layout and size the register-tiled kernel takes, same epilogue and bounds.
//! - **GEMV** (`gemv.wgsl`) for M = 1 (W = B) and N = 1 (W = Aᵀ, x = the column of B):
//!   a matrix-vector product reads W once, so it is bound by memory, and a 64-row tile
//!   would waste 63/64 of the tiled kernel. Dot-product layout (W contiguous along K) or
//!   column layout; see the WGSL.
//! - **Strided** (`matmul.wgsl`): 16 × 16 outputs per workgroup, one per invocation, any
//!   strides. Taken only when an operand has no unit stride (e.g. a column slice with a
//!   step), where coalesced staging is impossible anyway.
//!
//! Bounds the host guarantees (checked in [`plan`] and [`Recording::dispatch`]): every
//! element index of a view inside its matrix fits u32 (offsets, strides and extents go
//! through `fit_u32`, and a binding holds at most `max_storage_buffer_binding_size`
//! bytes); a vector load is chosen only when the operand's base offsets and non-contiguous
//! stride are multiples of 4 and its contiguous extent (K, M or N) is a non-zero multiple
//! of 4, so each `vec4` starts aligned and lies wholly inside or wholly outside the
//! matrix. Kernels check every load against M, N and K (zero-filling the ragged edge of a
//! tile) and every store against M and N, so no size needs to be a multiple of a tile.
//!
//! Every kernel accumulates in f32 and writes f32; 16-bit outputs are rounded once by
//! `finish_f32`. Batches index a host-computed table of operand offsets (any broadcast
//! or strided batch layout); grids are linear and folded past the per-dimension limit.
//!
//! [`Recording::dispatch`]: crate::pipelines::Recording::dispatch

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::matmul_coop::{CoopShape, coop_source};
use crate::pipelines::{Params, Slot, assemble, fit_u32};
use std::fmt::Write as _;
use xkern_core::{Activation, DType, MatmulSpec, Result};

const MATMUL_WGSL: &str = include_str!("matmul.wgsl");
const TILED_WGSL: &str = include_str!("matmul_tiled.wgsl");
const STAGE_WGSL: &str = include_str!("matmul_stage.wgsl");
const GEMV_WGSL: &str = include_str!("gemv.wgsl");
const EPILOGUE_WGSL: &str = include_str!("epilogue.wgsl");
/// Output tile of the strided kernel.
const TILE: usize = 16;
/// Outputs per workgroup of the GEMV layouts (`gemv.wgsl`).
const GEMV_DOT_OUTS: usize = 4;
const GEMV_COLUMN_OUTS: usize = 64;

/// The constants of the register-tiled kernel (see the module doc for why these).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiling {
    /// Output block of one workgroup: rows, columns.
    pub(crate) bm: usize,
    pub(crate) bn: usize,
    /// K step staged per barrier pair.
    pub(crate) bk: usize,
    /// Micro-tile of one invocation: rows, columns.
    pub(crate) tm: usize,
    pub(crate) tn: usize,
}

/// The tiling every variant uses: 64 × 64 blocks, 4 × 4 micro-tiles, 16-deep k-steps.
pub(crate) const TILING: Tiling = Tiling {
    bm: 64,
    bn: 64,
    bk: 16,
    tm: 4,
    tn: 4,
};

// The staging loops assume that each pass covers whole tiles: every tile of BK × BM and
// BK × BN elements (and of vec4s) is a multiple of the invocation count.
const _: () = {
    let t = TILING;
    let threads = (t.bm / t.tm) * (t.bn / t.tn);
    assert!(t.bm.is_multiple_of(t.tm) && t.bn.is_multiple_of(t.tn) && t.bk.is_multiple_of(4));
    assert!((t.bm * t.bk / 4).is_multiple_of(threads));
    assert!((t.bn * t.bk / 4).is_multiple_of(threads));
    assert!(threads <= 256);
    // Workgroup memory within WebGPU's guaranteed 16 KiB.
    assert!(t.bk * (t.bm + 1 + t.bn + 1) * 4 <= 16384);
};

/// How the register-tiled kernel reads one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Operand {
    /// Contiguous along K (else along M for A, N for B).
    pub(crate) k_major: bool,
    /// Staged with `vec4` loads.
    pub(crate) vec4: bool,
}

/// Which kernel runs a matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Plan {
    /// Register-tiled, with the layouts of A and B.
    Tiled { a: Operand, b: Operand },
    /// The f16 tiled case on cooperative matrices, with the layouts of A and B.
    Coop {
        a: Operand,
        b: Operand,
        shape: CoopShape,
    },
    /// Matrix-vector: `dot` when W is contiguous along K; `n1` for N = 1 (W = Aᵀ).
    Gemv { dot: bool, n1: bool },
    /// The general strided kernel.
    Strided,
}

/// The operand layout of a strided view for the tiled kernel: contiguous along K
/// (`k_stride == 1`) or along the other axis, with vector loads where the bounds in the
/// module doc hold; `None` when neither stride is 1.
fn operand(
    k_stride: usize,
    x_stride: usize,
    k: usize,
    x: usize,
    offsets_aligned: bool,
) -> Option<Operand> {
    let (k_major, extent, other) = if k_stride == 1 {
        (true, k, x_stride)
    } else if x_stride == 1 {
        (false, x, k_stride)
    } else {
        return None;
    };
    let vec4 =
        offsets_aligned && k > 0 && x > 0 && extent.is_multiple_of(4) && other.is_multiple_of(4);
    Some(Operand { k_major, vec4 })
}

/// Chooses the kernel of `spec`, whose per-batch operand offsets are `offs` (a, b pairs).
pub(crate) fn plan(spec: &MatmulSpec, offs: &[u32]) -> Plan {
    let (a, b) = (&spec.a, &spec.b);
    if spec.m == 1 || spec.n == 1 {
        // W = B (k-stride b.row_stride) or Aᵀ (k-stride a.col_stride); dot-product
        // layout when W runs along K, unless it also runs along the outputs (then the
        // column layout covers 64 outputs per workgroup instead of 4).
        let n1 = spec.m != 1;
        let (w_ks, w_js, outputs) = if n1 {
            (a.col_stride, a.row_stride, spec.m)
        } else {
            (b.row_stride, b.col_stride, spec.n)
        };
        let dot = w_ks == 1 && (w_js != 1 || outputs == 1);
        return Plan::Gemv { dot, n1 };
    }
    let aligned = |first: usize| {
        offs.iter()
            .skip(first)
            .step_by(2)
            .all(|o| o.is_multiple_of(4))
    };
    let a_op = operand(a.col_stride, a.row_stride, spec.k, spec.m, aligned(0));
    let b_op = operand(b.row_stride, b.col_stride, spec.k, spec.n, aligned(1));
    match (a_op, b_op) {
        (Some(a), Some(b)) => Plan::Tiled { a, b },
        _ => Plan::Strided,
    }
}

/// Moves an f16 register-tiled `plan` to the cooperative-matrix kernel when the device
/// runs it (`shape`); any other plan stays.
pub(crate) fn with_coop(plan: Plan, dtype: DType, shape: Option<CoopShape>) -> Plan {
    match (plan, shape) {
        (Plan::Tiled { a, b }, Some(shape)) if dtype == DType::F16 => Plan::Coop { a, b, shape },
        _ => plan,
    }
}

fn act_code(act: Option<Activation>) -> u32 {
    match act {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Gelu) => 2,
        Some(Activation::Silu) => 3,
    }
}

/// Bindings of the tiled and strided kernels; `vec` per operand for vector loads.
fn bindings(dtype: DType, vec_a: bool, vec_b: bool) -> [(&'static str, Slot); 5] {
    let slot = |v: bool| {
        if v {
            Slot::InputVec4(dtype)
        } else {
            Slot::Input(dtype)
        }
    };
    [
        ("a", slot(vec_a)),
        ("b", slot(vec_b)),
        ("bias", Slot::Input(dtype)),
        ("offs", Slot::Words),
        ("out", Slot::OutF32),
    ]
}

fn gemv_bindings(dtype: DType) -> [(&'static str, Slot); 5] {
    [
        ("x", Slot::Input(dtype)),
        ("w", Slot::Input(dtype)),
        ("bias", Slot::Input(dtype)),
        ("offs", Slot::Words),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of one variant of the strided kernel (also used by the naga tests).
pub(crate) fn matmul_source(dtype: DType, act: Option<Activation>, bias: bool) -> String {
    assemble(
        MATMUL_WGSL,
        &bindings(dtype, false, false),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
        ],
    )
}

/// The WGSL of one variant of the GEMV kernel (also used by the naga tests).
pub(crate) fn gemv_source(dtype: DType, act: Option<Activation>, bias: bool, dot: bool) -> String {
    assemble(
        GEMV_WGSL,
        &gemv_bindings(dtype),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
            ("DOT", dot.to_string()),
        ],
    )
}

/// The staging function of operand `op` ("a" or "b"), whose tile is `x` wide with rows of
/// `stride` words. The kernel text calls both `load_<op>` and `load4_<op>` (under
/// constant conditions), so the one the binding lacks is defined here from the other;
/// the shim is never executed.
fn stage(op: &str, x: usize, stride: usize, layout: Operand) -> String {
    let shim = if layout.vec4 {
        format!("fn load_{op}(i: u32) -> f32 {{ return load4_{op}(i >> 2u)[i & 3u]; }}\n")
    } else {
        format!(
            "fn load4_{op}(q: u32) -> vec4<f32> {{ let i = 4u * q; return vec4<f32>(load_{op}(i), load_{op}(i + 1u), load_{op}(i + 2u), load_{op}(i + 3u)); }}\n"
        )
    };
    shim + &STAGE_WGSL
        .replace("{{op}}", op)
        .replace("{{X}}", &x.to_string())
        .replace("{{S}}", &stride.to_string())
        .replace("{{KCONT}}", &layout.k_major.to_string())
        .replace("{{VEC}}", &layout.vec4.to_string())
}

/// Row stride of a k-major tile `x` wide: one word of padding when staging transposes
/// (operand contiguous along K), else none (see the module doc).
fn tile_stride(x: usize, layout: Operand) -> usize {
    x + usize::from(layout.k_major)
}

/// The unrolled micro-kernel of one k-step. For the 4 × 4 tile it reads
/// ```text
/// let a0 = ta[ra + 0u]; let a1 = ta[ra + 16u]; let a2 = ta[ra + 32u]; let a3 = ta[ra + 48u];
/// let b0 = tb[rb + 0u]; ... let b3 = tb[rb + 48u];
/// acc[0] = fma(a0, b0, acc[0]); acc[1] = fma(a0, b1, acc[1]); ... acc[15] = fma(a3, b3, acc[15]);
/// ```
pub(crate) fn micro_kernel(t: Tiling) -> String {
    let (wx, wy) = (t.bn / t.tn, t.bm / t.tm);
    let mut s = String::new();
    for i in 0..t.tm {
        let _ = writeln!(s, "            let a{i} = ta[ra + {}u];", i * wy);
    }
    for j in 0..t.tn {
        let _ = writeln!(s, "            let b{j} = tb[rb + {}u];", j * wx);
    }
    for i in 0..t.tm {
        for j in 0..t.tn {
            let q = i * t.tn + j;
            let _ = writeln!(s, "            acc[{q}] = fma(a{i}, b{j}, acc[{q}]);");
        }
    }
    s
}

/// The unrolled write-back: `store(batch, row + 16i, col + 16j, acc[4i + j])` for 4 × 4.
pub(crate) fn write_back(t: Tiling) -> String {
    let (wx, wy) = (t.bn / t.tn, t.bm / t.tm);
    let mut s = String::new();
    for i in 0..t.tm {
        for j in 0..t.tn {
            let _ = writeln!(
                s,
                "    store(batch, row + {}u, col + {}u, acc[{}]);",
                i * wy,
                j * wx,
                i * t.tn + j
            );
        }
    }
    s
}

/// The WGSL of one variant of the register-tiled kernel (also used by the naga tests).
pub(crate) fn tiled_source(
    dtype: DType,
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
) -> String {
    let t = TILING;
    let (sa, sb) = (tile_stride(t.bm, a), tile_stride(t.bn, b));
    assemble(
        TILED_WGSL,
        &bindings(dtype, a.vec4, b.vec4),
        &[
            ("EPILOGUE", EPILOGUE_WGSL.to_string()),
            ("STAGE_A", stage("a", t.bm, sa, a)),
            ("STAGE_B", stage("b", t.bn, sb, b)),
            ("MICRO", micro_kernel(t)),
            ("WRITE", write_back(t)),
            ("ACT", act_code(act).to_string()),
            ("BIAS", u32::from(bias).to_string()),
            ("BM", t.bm.to_string()),
            ("BN", t.bn.to_string()),
            ("BK", t.bk.to_string()),
            ("WX", (t.bn / t.tn).to_string()),
            ("WY", (t.bm / t.tm).to_string()),
            ("SA", sa.to_string()),
            ("SB", sb.to_string()),
            ("TA_LEN", (t.bk * sa).to_string()),
            ("TB_LEN", (t.bk * sb).to_string()),
            ("TM_TN", (t.tm * t.tn).to_string()),
        ],
    )
}

/// The WGSL of one variant of the cooperative-matrix kernel (also used by the naga tests).
pub(crate) fn tiled_coop_source(
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    coop_source(
        &bindings(DType::F16, a.vec4, b.vec4),
        &coop_epilogue(act, bias),
        a,
        b,
        shape,
    )
}

fn coop_epilogue(act: Option<Activation>, bias: bool) -> [(&'static str, String); 3] {
    [
        ("EPILOGUE", EPILOGUE_WGSL.to_string()),
        ("ACT", act_code(act).to_string()),
        ("BIAS", u32::from(bias).to_string()),
    ]
}

/// Tests: the cooperative-matrix kernel with emulated fragments (see `matmul_coop`).
#[cfg(test)]
pub(crate) fn tiled_coop_emulated_source(
    act: Option<Activation>,
    bias: bool,
    a: Operand,
    b: Operand,
    shape: CoopShape,
) -> String {
    crate::matmul_coop::emulated_source(
        &bindings(DType::F16, a.vec4, b.vec4),
        &coop_epilogue(act, bias),
        a,
        b,
        shape,
    )
}

/// The cache key of a plan's kernel.
fn key(spec: &MatmulSpec, plan: Plan, has_bias: bool) -> String {
    let epi = format!(
        "{}/{}/{}",
        spec.dtype,
        act_code(spec.activation),
        u32::from(has_bias)
    );
    let layout = |o: Operand| {
        format!(
            "{}{}",
            if o.k_major { "k" } else { "x" },
            if o.vec4 { "4" } else { "1" }
        )
    };
    match plan {
        Plan::Tiled { a, b } => format!("matmul-tiled/{epi}/{}{}", layout(a), layout(b)),
        Plan::Coop { a, b, shape } => format!(
            "matmul-coop/{epi}/{}{}/sg{}",
            layout(a),
            layout(b),
            shape.sg
        ),
        Plan::Gemv { dot, .. } => format!("gemv/{epi}/{}", if dot { "dot" } else { "column" }),
        Plan::Strided => format!("matmul/{epi}"),
    }
}

impl WgpuBackend {
    /// [`xkern_core::Backend::matmul`].
    pub(crate) fn matmul_impl(
        &self,
        spec: &MatmulSpec,
        a: &WgpuStorage,
        b: &WgpuStorage,
        bias: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.check_dtype("matmul", spec.dtype)?;
        let (batch, m, n) = (spec.batch(), spec.m, spec.n);
        let len = batch * m * n;
        let mut offs = Vec::with_capacity(2 * batch);
        for i in 0..batch {
            offs.push(fit_u32(spec.a_offset(i))?);
            offs.push(fit_u32(spec.b_offset(i))?);
        }
        let plan = with_coop(plan(spec, &offs), spec.dtype, self.gpu().coop_shape());
        let has_bias = bias.is_some();
        #[allow(unused_mut)]
        let mut key = key(spec, plan, has_bias);
        #[cfg(test)]
        let emulated = self.gpu().coop_emulated();
        #[cfg(test)]
        if emulated {
            key += "/emulated";
        }
        let (bias_off, bias_stride) = spec.bias.as_ref().map_or((0, 0), |v| (v.offset, v.stride));
        let (dtype, act) = (spec.dtype, spec.activation);
        if let Plan::Gemv { dot, n1 } = plan {
            // x, W and the outputs of y = W·x: for N = 1 x is the column of B and W = Aᵀ,
            // so the offset pairs swap and the bias (one value) is read at stride 0.
            let (x, w, x_s, w_ks, w_js, outputs, bias_stride) = if n1 {
                let pairs = offs.chunks_exact_mut(2);
                pairs.for_each(|p| p.swap(0, 1));
                (
                    b,
                    a,
                    spec.b.row_stride,
                    spec.a.col_stride,
                    spec.a.row_stride,
                    m,
                    0,
                )
            } else {
                (
                    a,
                    b,
                    spec.a.col_stride,
                    spec.b.row_stride,
                    spec.b.col_stride,
                    n,
                    bias_stride,
                )
            };
            let offs = self.upload_u32(&offs)?;
            let kernel = self.kernel(&key, &gemv_bindings(dtype), || {
                gemv_source(dtype, act, has_bias, dot)
            })?;
            return self.record(|rec| {
                let out = self.alloc_storage(DType::F32, len)?;
                let blocks = outputs.div_ceil(if dot { GEMV_DOT_OUTS } else { GEMV_COLUMN_OUTS });
                let params = Params::default()
                    .u(outputs)?
                    .u(spec.k)?
                    .u(x_s)?
                    .u(w_ks)?
                    .u(w_js)?
                    .u(bias_off)?
                    .u(bias_stride)?
                    .u(blocks)?;
                rec.dispatch(
                    &kernel,
                    &[x, w, bias.unwrap_or(a), &offs, &out],
                    blocks * batch,
                    params,
                )?;
                self.finish_f32(rec, out, dtype, len)
            });
        }
        let (kernel, tile_m, tile_n) = match plan {
            Plan::Tiled { a: la, b: lb } => (
                self.kernel(&key, &bindings(dtype, la.vec4, lb.vec4), || {
                    tiled_source(dtype, act, has_bias, la, lb)
                })?,
                TILING.bm,
                TILING.bn,
            ),
            Plan::Coop {
                a: la,
                b: lb,
                shape,
            } => {
                let kernel = self.kernel(&key, &bindings(dtype, la.vec4, lb.vec4), || {
                    #[cfg(test)]
                    if emulated {
                        return tiled_coop_emulated_source(act, has_bias, la, lb, shape);
                    }
                    tiled_coop_source(act, has_bias, la, lb, shape)
                });
                match kernel {
                    Ok(k) => (k, crate::matmul_coop::BM, crate::matmul_coop::BN),
                    // A driver that lists the configuration but cannot build the kernel
                    // costs the speed-up, not the op: once recorded, the next call plans
                    // without cooperative matrices.
                    Err(e) => {
                        self.gpu().coop_failed(e.to_string());
                        return self.matmul_impl(spec, a, b, bias);
                    }
                }
            }
            _ => (
                self.kernel(&key, &bindings(dtype, false, false), || {
                    matmul_source(dtype, act, has_bias)
                })?,
                TILE,
                TILE,
            ),
        };
        let offs = self.upload_u32(&offs)?;
        self.record(|rec| {
            let out = self.alloc_storage(DType::F32, len)?;
            let (tiles_m, tiles_n) = (m.div_ceil(tile_m), n.div_ceil(tile_n));
            let params = Params::default()
                .u(m)?
                .u(n)?
                .u(spec.k)?
                .u(spec.a.row_stride)?
                .u(spec.a.col_stride)?
                .u(spec.b.row_stride)?
                .u(spec.b.col_stride)?
                .u(bias_off)?
                .u(bias_stride)?
                .u(tiles_m)?
                .u(tiles_n)?;
            let groups = tiles_m * tiles_n * batch;
            rec.dispatch(
                &kernel,
                &[a, b, bias.unwrap_or(a), &offs, &out],
                groups,
                params,
            )?;
            self.finish_f32(rec, out, dtype, len)
        })
    }
}
