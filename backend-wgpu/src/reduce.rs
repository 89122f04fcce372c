//! Axis reductions and row normalisations (`reduce.wgsl`, `normalize.wgsl`).
//!
//! Algorithm: for a contiguous axis (inner = 1), one 128-invocation workgroup per
//! output row of the canonical `[outer, axis, inner]` problem; invocations fold strided
//! slices of the axis, then a workgroup tree combines them (the spec's NaN, tie and
//! empty-axis rules are in the WGSL). The grid is `outer · inner` groups, folded past
//! the per-dimension limit.
//!
//! Outer-axis (column) reductions, inner > 1, take the column kernel instead: one
//! workgroup per block of `cx` neighbouring columns (32, or the next power of two of a
//! narrower inner) × `128 / cx` lanes of the axis, so that every load instruction of a
//! warp reads one contiguous run (32 neighbouring elements of an axis row, or for small
//! inner several whole neighbouring rows) where one workgroup per column read a
//! separate sector per element (a 4-byte read costs a 32-byte sector: ⅛ of the
//! bandwidth for f32). Each invocation folds at most 64 positions of its column (four
//! accumulators, four loads in flight); a tree over the axis lanes of each column
//! combines them; axes longer than `64 · 128 / cx` positions split into chunks whose
//! partial states the row merge (phase 2) folds, so a tall column spreads over the GPU
//! and keeps the short sequential runs of the accuracy argument below. On the H100 an
//! 8192² column sum took 0.136 ms of GPU time (1.97 TB/s; PyTorch 0.108 ms in that
//! run). A variant with 128 positions per invocation, eight loads in flight, vec4 loads
//! of four columns and a merge of one output per invocation measured 0.18–0.19 ms in
//! six runs (one outlier at 0.107), so it was taken out again.
//!
//! Trees: on adapters with `SUBGROUP` (and subgroups of at most 128 lanes) the
//! workgroup-wide combines run on subgroup shuffles (`tree_subgroup.wgsl`: three
//! barriers instead of eight, no assumption on how invocations map to subgroups);
//! elsewhere, or with [`DeviceOptions::without_subgroups`](crate::DeviceOptions) or
//! `XKERN_WGPU_SUBGROUPS=off`, a tree in workgroup memory (`tree.wgsl`). Both keep the
//! NaN, tie and index rules exactly, as they use the same combine functions, and both
//! fix the order of operations, so results repeat run to run on one adapter; the two
//! may differ from each other in the last bits of a sum.
//!
//! Long rows (more than `SPLIT_MIN` elements) are split across workgroups, whatever
//! the number of rows: phase 1 gives each `CHUNK`-element slice of a row its own
//! workgroup, which writes a two-word partial state (partial sum, extreme, (value,
//! index) pair, or logsumexp's (max, Σ exp(x − max))) to a temporary buffer; phase 2
//! folds each row's partials in a fixed order with one workgroup per row. Both
//! dispatches go into the op's one command encoder, with no readback between, and the
//! split depends only on the shape, so results are deterministic.
//!
//! Accuracy: rather than pairwise or compensated sums, the per-invocation sequential
//! runs are kept short and the rest is trees. In phase 1 each invocation adds at most
//! `CHUNK / 128 = 32` elements in order before the 7-level tree; phase 2 adds at most
//! `⌈chunks / 128⌉` partials per invocation (8 for a 4M-element row, 64 at a 128 MiB
//! binding of f32) before another tree. The f32 rounding error then grows with that
//! short depth rather than with `axis_len / 128` as with one workgroup per row
//! (≈32K sequential adds for 4M elements, which measured 4.4e-5 relative error). This
//! costs no extra memory traffic or instructions per element, unlike Kahan sums, and
//! the same split also spreads a long row over the whole GPU. Rows of at most
//! `SPLIT_MIN` elements keep the single pass (≤ 64 sequential adds per invocation).

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, Recording, Slot, assemble};
use xkern_core::{DType, Error, NormKind, NormSpec, ReduceKind, ReduceSpec, Result};

const REDUCE_WGSL: &str = include_str!("reduce.wgsl");
const NORMALIZE_WGSL: &str = include_str!("normalize.wgsl");
/// Workgroup-wide trees in workgroup memory (every adapter).
const TREE_WGSL: &str = include_str!("tree.wgsl");
/// The same trees on subgroup shuffles (adapters with `SUBGROUP`).
const TREE_SUBGROUP_WGSL: &str = include_str!("tree_subgroup.wgsl");

/// The tree placeholders of a reduction kernel: the tree functions, and the builtins
/// that the subgroup trees read (declared on `main` and stored in private variables).
fn tree_constants(subgroups: bool) -> [(&'static str, String); 3] {
    if subgroups {
        [
            ("TREE", TREE_SUBGROUP_WGSL.to_string()),
            (
                "SG_BUILTINS",
                ", @builtin(subgroup_invocation_id) sgl: u32, @builtin(subgroup_size) sgs: u32"
                    .to_string(),
            ),
            ("SG_INIT", "sg_lane = sgl;\n    sg_size = sgs;".to_string()),
        ]
    } else {
        [
            ("TREE", TREE_WGSL.to_string()),
            ("SG_BUILTINS", String::new()),
            ("SG_INIT", String::new()),
        ]
    }
}

/// Rows longer than this are split across workgroups (phases 1 and 2).
const SPLIT_MIN: usize = 8192;
/// Elements of a row that one phase-1 workgroup folds (a multiple of 128).
const CHUNK: usize = 4096;
/// The same on `vec4` loads: 32 loads per invocation into four accumulators (see
/// reduce.wgsl), so each accumulator lane adds at most 8 elements in order.
const CHUNK_VEC: usize = 16384;
/// The `vec4` chunk of large reductions (at least `BIG_REDUCTION` elements): 128 loads
/// per invocation, still at most 32 elements per accumulator lane (the accuracy argument
/// above holds), and a quarter of the workgroups, each with four times the work to
/// amortise its tree and launch (a 64M-element sum: 1024 workgroups instead of 4096,
/// about eight per SM of a large GPU).
pub(crate) const CHUNK_VEC_BIG: usize = 65536;
const BIG_REDUCTION: usize = 1 << 24;

/// Sequential axis positions per invocation of the column kernel (inner > 1): a
/// workgroup folds `COL_DEPTH · AY` positions of its columns, each of its four
/// accumulators at most `COL_DEPTH / 4` of them in order.
const COL_DEPTH: usize = 64;

/// Columns per workgroup of the column kernel for `inner` (> 1): 32, so that a warp
/// reads 32 neighbouring elements, or fewer for narrower rows (then a warp's lanes cover
/// several neighbouring axis rows, which are contiguous too).
fn col_lanes(inner: usize) -> usize {
    inner.next_power_of_two().clamp(2, 32)
}

/// Axis positions per workgroup of the column kernel with `cx` columns.
fn col_chunk(cx: usize) -> usize {
    COL_DEPTH * (128 / cx)
}

/// `XKERN_WGPU_REDUCE_CHUNK`: the big chunk, a power of two from 16384 to 262144
/// (timing experiments; above 65536 an accumulator lane adds more than 32 elements in
/// order).
pub(crate) fn parse_big_chunk(v: &str) -> std::result::Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if n.is_power_of_two() && (CHUNK_VEC..=1 << 18).contains(&n) => Ok(n),
        _ => Err(format!(
            "XKERN_WGPU_REDUCE_CHUNK={v:?}: expected a power of two from {CHUNK_VEC} to 262144"
        )),
    }
}

/// The chunk of a split reduction: depends on the shape (and the device's big chunk)
/// only, so results are the same on every run and adapter with the same subgroup size.
fn chunk_of(vec: bool, rows: usize, axis_len: usize, big: usize) -> usize {
    if !vec {
        CHUNK
    } else if rows.saturating_mul(axis_len) >= BIG_REDUCTION {
        big
    } else {
        CHUNK_VEC
    }
}

/// The load the binding lacks, for the code paths a kernel compiles but never takes: a
/// scalar `load_x` over a `vec4` binding, or a `load4_x` over a scalar one.
const SCALAR_SHIM: &str = "fn load_x(i: u32) -> f32 { return load4_x(i / 4u)[i % 4u]; }";
const VEC4_SHIM: &str = "fn load4_x(q: u32) -> vec4<f32> { return vec4<f32>(load_x(4u * q), load_x(4u * q + 1u), load_x(4u * q + 2u), load_x(4u * q + 3u)); }";

/// Whether a reduction or normalisation of `spec`'s shape reads `vec4`s: contiguous rows
/// (inner = 1) whose starts and length are multiples of 4, so every `vec4` is aligned and
/// wholly inside its row.
fn vec4_rows(inner: usize, axis_len: usize, offset: usize) -> bool {
    inner <= 1 && axis_len > 0 && axis_len.is_multiple_of(4) && offset.is_multiple_of(4)
}

/// The input slot and the shim placeholder of a kernel reading `vec4`s or scalars.
fn x_slot(dtype: DType, vec: bool) -> (Slot, String) {
    if vec {
        (Slot::InputVec4(dtype), SCALAR_SHIM.to_string())
    } else {
        (Slot::Input(dtype), VEC4_SHIM.to_string())
    }
}

fn kind_code(kind: ReduceKind) -> u32 {
    match kind {
        ReduceKind::Sum => 0,
        ReduceKind::Mean => 1,
        ReduceKind::Max => 2,
        ReduceKind::Min => 3,
        ReduceKind::ArgMax => 4,
        ReduceKind::ArgMin => 5,
        ReduceKind::LogSumExp => 6,
    }
}

/// The tree operation of a reduction: 0 add, 1 max, 2 min.
fn op_code(kind: ReduceKind) -> u32 {
    match kind {
        ReduceKind::Max | ReduceKind::LogSumExp => 1,
        ReduceKind::Min => 2,
        _ => 0,
    }
}

fn norm_code(kind: NormKind) -> u32 {
    match kind {
        NormKind::Softmax => 0,
        NormKind::LogSoftmax => 1,
        NormKind::RmsNorm { .. } => 2,
    }
}

/// Every phase binds the input `x`, the partial states `part` (phase 2 reads them; the
/// other phases bind `x` there, unused) and the output words `out`.
fn reduce_bindings(dtype: DType, vec: bool) -> [(&'static str, Slot); 3] {
    [
        ("x", x_slot(dtype, vec).0),
        ("part", Slot::Words),
        ("out", Slot::OutWords),
    ]
}

fn norm_bindings(dtype: DType, vec: bool) -> [(&'static str, Slot); 3] {
    [
        ("x", x_slot(dtype, vec).0),
        ("w", Slot::Input(dtype)),
        ("out", if vec { Slot::OutVec4 } else { Slot::OutF32 }),
    ]
}

/// Stores to `out` as the kernel's own binding allows, plus the other width for the
/// path it compiles but never takes.
fn store_shim(vec: bool) -> &'static str {
    if vec {
        "fn store(i: u32, y: f32) { out[i / 4u][i % 4u] = y; }\nfn store4(q: u32, y: vec4<f32>) { out[q] = y; }"
    } else {
        "fn store(i: u32, y: f32) { out[i] = y; }\nfn store4(q: u32, y: vec4<f32>) { out[4u * q] = y.x; out[4u * q + 1u] = y.y; out[4u * q + 2u] = y.z; out[4u * q + 3u] = y.w; }"
    }
}

/// Softmax and log-softmax of rows longer than this take the three-phase path
/// (`long_row_softmax`): the register cache's limit, past which one workgroup per row
/// would stream the row three times on its own.
const LONG_ROW: usize = 4 * 128 * CACHE_MAX;
/// Invocations of the elementwise phase of the long-row softmax (one element each).
const APPLY_WG: usize = 256;
const APPLY_WGSL: &str = include_str!("norm_apply.wgsl");

/// The input, the rows' logsumexp (f32 bits) and the output of the elementwise phase.
fn apply_bindings(dtype: DType) -> [(&'static str, Slot); 3] {
    [
        ("x", Slot::Input(dtype)),
        ("lse", Slot::Words),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of the long-row softmax's elementwise phase (also used by the naga tests).
pub(crate) fn apply_source(dtype: DType, log: bool) -> String {
    assemble(
        APPLY_WGSL,
        &apply_bindings(dtype),
        &[
            ("LOG", u32::from(log).to_string()),
            ("WG", APPLY_WG.to_string()),
        ],
    )
}

/// Most `vec4`s one invocation of the register-cached normalisation keeps (rows of up
/// to 4 · 128 · 16 = 8192 elements): 64 registers of cache, which leaves room for the
/// rest on every GPU class; longer rows take the streaming path.
const CACHE_MAX: usize = 16;

/// The WGSL of `cached_row` with `cache` vec4s per invocation, unrolled: slot r of
/// invocation `lid` holds the row's vec4 `r · 128 + lid` (coalesced loads and stores).
fn cached_row(cache: usize) -> String {
    let mut s = String::from(
        "fn cached_row(g: u32, lid: u32) {\n    let n4 = P.axis_len / 4u;\n    let base = (P.offset + g * P.axis_len) / 4u;\n    let o0 = g * n4;\n    var acc = neg_inf_f32();\n    if (KIND == 2u) { acc = 0.0; }\n",
    );
    for r in 0..cache {
        s += &format!(
            "    let q{r} = {r}u * WG + lid;\n    var c{r} = vec4<f32>(0.0);\n    if (q{r} < n4) {{ c{r} = load4_x(base + q{r}); acc = fold_in(acc, c{r}); }}\n"
        );
    }
    s += "    var m = 0.0;\n    var total = 0.0;\n    if (KIND == 2u) {\n        total = tree_op(lid, acc, 0u);\n    } else {\n        m = tree_op(lid, acc, 1u);\n        var e = 0.0;\n";
    for r in 0..cache {
        s += &format!("        if (q{r} < n4) {{ e = e + exp_sum(c{r}, m); }}\n");
    }
    s += "        total = tree_op(lid, e, 0u);\n    }\n    let lse = log(total);\n    let rs = 1.0 / sqrt(total / f32(P.axis_len) + P.eps);\n";
    for r in 0..cache {
        s += &format!(
            "    if (q{r} < n4) {{ store4(o0 + q{r}, normed(c{r}, q{r}, m, total, lse, rs)); }}\n"
        );
    }
    s += "}\n";
    s
}

/// The `vec4`s per invocation of the cached path for rows of `axis_len` with `wg`
/// invocations (a power of two covering the row, so few variants compile), or 0 for the
/// streaming path.
fn cache_len(vec: bool, axis_len: usize, wg: usize) -> usize {
    if !vec {
        return 0;
    }
    let need = axis_len.div_ceil(4 * wg).next_power_of_two();
    if need <= CACHE_MAX { need } else { 0 }
}

/// The WGSL of one single-pass reduction (for the naga tests).
#[cfg(test)]
pub(crate) fn reduce_source(dtype: DType, kind: ReduceKind, subgroups: bool) -> String {
    reduce_phase_source(dtype, kind, 0, subgroups, false, CHUNK, 0)
}

/// The WGSL of one reduction phase: 0 single pass, 1 partial states of long rows'
/// chunks, 2 merge of the partials; with subgroup trees or workgroup-memory trees; on
/// `vec4` loads where `vec` (phases 0 and 1); the column kernel with `cols` columns per
/// workgroup where `cols` > 0 (phases 0 and 1, inner > 1).
pub(crate) fn reduce_phase_source(
    dtype: DType,
    kind: ReduceKind,
    phase: u32,
    subgroups: bool,
    vec: bool,
    chunk: usize,
    cols: usize,
) -> String {
    let mut constants = tree_constants(subgroups).to_vec();
    constants.extend([
        ("KIND", kind_code(kind).to_string()),
        ("OP", op_code(kind).to_string()),
        ("PHASE", phase.to_string()),
        ("CHUNK", chunk.to_string()),
        ("VEC", u32::from(vec).to_string()),
        ("COLS", u32::from(cols > 0).to_string()),
        ("CX", cols.max(1).to_string()),
        ("LOAD_SHIM", x_slot(dtype, vec).1),
    ]);
    assemble(REDUCE_WGSL, &reduce_bindings(dtype, vec), &constants)
}

/// The WGSL of one normalisation (also used by the naga tests): `cache` vec4s per
/// invocation on the register-cached path, 0 for the streaming one; `wg` invocations
/// per workgroup (128 or 256).
pub(crate) fn normalize_source(
    dtype: DType,
    kind: NormKind,
    weight: bool,
    subgroups: bool,
    cache: usize,
    wg: usize,
) -> String {
    let vec = cache > 0;
    let mut constants = tree_constants(subgroups).to_vec();
    constants.extend([
        ("KIND", norm_code(kind).to_string()),
        ("WEIGHT", u32::from(weight).to_string()),
        ("CACHE", cache.to_string()),
        ("WG", wg.to_string()),
        ("CACHED_ROW", cached_row(cache)),
        ("LOAD_SHIM", x_slot(dtype, vec).1),
        ("STORE_SHIM", store_shim(vec).to_string()),
    ]);
    assemble(NORMALIZE_WGSL, &norm_bindings(dtype, vec), &constants)
}

impl WgpuBackend {
    /// [`xkern_core::Backend::reduce`].
    pub(crate) fn reduce_impl(&self, spec: &ReduceSpec, x: &WgpuStorage) -> Result<WgpuStorage> {
        self.check_dtype(spec.kind.name(), spec.dtype)?;
        let rows = spec.outer * spec.inner;
        let out_dtype = spec.kind.output_dtype(spec.dtype);
        self.record(|rec| {
            let out = self.record_reduce(rec, spec, x)?;
            if out_dtype == DType::U32 {
                Ok(out)
            } else {
                self.finish_f32(rec, out, out_dtype, rows)
            }
        })
    }

    /// Records the reduction of `spec` into `rec`: one word per output row, f32 bits for
    /// float results, u32 for indices (before any rounding to a 16-bit dtype).
    fn record_reduce(
        &self,
        rec: &mut Recording<'_>,
        spec: &ReduceSpec,
        x: &WgpuStorage,
    ) -> Result<WgpuStorage> {
        let rows = spec.outer * spec.inner;
        let sg = self.subgroup_trees();
        let vec = vec4_rows(spec.inner, spec.axis_len, spec.offset);
        // The column kernel for inner > 1: `cols` columns per workgroup.
        let cols = if spec.inner > 1 {
            col_lanes(spec.inner)
        } else {
            0
        };
        let (chunk, split) = if cols > 0 {
            (col_chunk(cols), spec.axis_len > col_chunk(cols))
        } else {
            (
                chunk_of(vec, rows, spec.axis_len, self.gpu().reduce_big_chunk),
                spec.axis_len > SPLIT_MIN,
            )
        };
        let kernel_for = |phase: u32| {
            // The merge phase reads only partial states: one kernel for every layout.
            let v = vec && phase != 2;
            let cx = if phase == 2 { 0 } else { cols };
            let c = if phase == 2 { CHUNK } else { chunk };
            let key = format!(
                "reduce/{}/{}/{phase}/{}/{}/{c}/{cx}",
                spec.dtype,
                kind_code(spec.kind),
                u8::from(sg),
                u8::from(v)
            );
            self.kernel(&key, &reduce_bindings(spec.dtype, v), || {
                reduce_phase_source(spec.dtype, spec.kind, phase, sg, v, c, cx)
            })
        };
        // Workgroups per chunk of the axis: a row each, or a block of `cols` columns.
        let per_chunk = if cols > 0 {
            spec.outer * spec.inner.div_ceil(cols)
        } else {
            rows
        };
        // Float results are written as f32 bits, indices as u32.
        let wide = if spec.kind.output_dtype(spec.dtype) == DType::U32 {
            DType::U32
        } else {
            DType::F32
        };
        let out = self.alloc_storage(wide, rows)?;
        let chunks = if split {
            spec.axis_len.div_ceil(chunk)
        } else {
            1
        };
        let params = || -> Result<Params> {
            Params::default()
                .u(spec.axis_len)?
                .u(spec.inner.max(1))?
                .u(spec.offset)?
                .u(chunks)
        };
        if split {
            let partial = kernel_for(1)?;
            let merge = kernel_for(2)?;
            let overflow = || Error::Backend {
                backend: "wgpu",
                message: format!("{rows} rows of {chunks} chunks overflow"),
            };
            let groups = per_chunk.checked_mul(chunks).ok_or_else(overflow)?;
            let states = rows.checked_mul(2 * chunks).ok_or_else(overflow)?;
            let part = self.alloc_storage(DType::U32, states)?;
            rec.dispatch(&partial, &[x, x, &part], groups, params()?)?;
            rec.dispatch(&merge, &[x, &part, &out], rows, params()?)?;
        } else {
            let single = kernel_for(0)?;
            rec.dispatch(&single, &[x, x, &out], per_chunk, params()?)?;
        }
        Ok(out)
    }

    /// Softmax or log-softmax of rows longer than the register cache, in three phases
    /// over the whole GPU: the row's logsumexp by the split reduction (partial states per
    /// chunk, then a merge per row), then `exp(x − lse)` or `x − lse` elementwise. A
    /// long row otherwise streams through one workgroup (a 128K-entry vocabulary, batch
    /// 1: one workgroup busy, the GPU idle). A row whose logsumexp is ±∞ or NaN (its max
    /// is, or its sum is) gives NaN everywhere, as in the reference.
    fn long_row_softmax(&self, spec: &NormSpec, x: &WgpuStorage) -> Result<WgpuStorage> {
        let len = spec.outer * spec.axis_len * spec.inner;
        let log = matches!(spec.kind, NormKind::LogSoftmax);
        let key = format!("norm-apply/{}/{}", spec.dtype, u8::from(log));
        let apply = self.kernel(&key, &apply_bindings(spec.dtype), || {
            apply_source(spec.dtype, log)
        })?;
        let lse_spec = ReduceSpec {
            kind: ReduceKind::LogSumExp,
            dtype: spec.dtype,
            outer: spec.outer,
            axis_len: spec.axis_len,
            inner: spec.inner,
            offset: spec.offset,
        };
        self.record(|rec| {
            let lse = self.record_reduce(rec, &lse_spec, x)?;
            let out = self.alloc_storage(DType::F32, len)?;
            let params = Params::default()
                .u(len)?
                .u(spec.axis_len)?
                .u(spec.inner.max(1))?
                .u(spec.offset)?;
            rec.dispatch(&apply, &[x, &lse, &out], len.div_ceil(APPLY_WG), params)?;
            self.finish_f32(rec, out, spec.dtype, len)
        })
    }

    /// [`xkern_core::Backend::normalize`].
    pub(crate) fn normalize_impl(
        &self,
        spec: &NormSpec,
        x: &WgpuStorage,
        weight: Option<&WgpuStorage>,
    ) -> Result<WgpuStorage> {
        self.check_dtype(spec.kind.name(), spec.dtype)?;
        let rows = spec.outer * spec.inner;
        let len = rows * spec.axis_len;
        if spec.axis_len > LONG_ROW && !matches!(spec.kind, NormKind::RmsNorm { .. }) {
            return self.long_row_softmax(spec, x);
        }
        let has_w = weight.is_some();
        let sg = self.subgroup_trees();
        let wg = self.gpu().norm_wg;
        let cache = cache_len(
            vec4_rows(spec.inner, spec.axis_len, spec.offset),
            spec.axis_len,
            wg,
        );
        let key = format!(
            "normalize/{}/{}/{}/{}/{cache}/{wg}",
            spec.dtype,
            norm_code(spec.kind),
            u32::from(has_w),
            u8::from(sg)
        );
        let kernel = self.kernel(&key, &norm_bindings(spec.dtype, cache > 0), || {
            normalize_source(spec.dtype, spec.kind, has_w, sg, cache, wg)
        })?;
        let eps = match spec.kind {
            NormKind::RmsNorm { eps } => eps,
            _ => 0.0,
        };
        let (w_off, w_stride) = spec
            .weight
            .as_ref()
            .map_or((0, 0), |v| (v.offset, v.stride));
        self.record(|rec| {
            let out = self.alloc_storage(DType::F32, len)?;
            let groups = if len == 0 { 0 } else { rows };
            let params = Params::default()
                .u(spec.axis_len)?
                .u(spec.inner.max(1))?
                .u(spec.offset)?
                .f(eps)
                .u(w_off)?
                .u(w_stride)?;
            rec.dispatch(&kernel, &[x, weight.unwrap_or(x), &out], groups, params)?;
            self.finish_f32(rec, out, spec.dtype, len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::reduce_phase_source;
    use crate::wgsl_tests::validate_with;
    use xkern_core::{DType, ReduceKind};

    #[test]
    fn long_row_softmax_apply_validates() {
        for dtype in DType::FLOATS {
            for log in [false, true] {
                validate_with(
                    &format!("norm-apply {dtype} log={log}"),
                    &super::apply_source(dtype, log),
                    false,
                );
            }
        }
    }

    #[test]
    fn split_phases_validate() {
        for dtype in DType::FLOATS {
            for kind in ReduceKind::ALL {
                for phase in [0, 1, 2] {
                    for sg in [false, true] {
                        for (vec, chunk, cols) in [
                            (false, super::CHUNK, 0),
                            (true, super::CHUNK_VEC, 0),
                            (true, super::CHUNK_VEC_BIG, 0),
                            (false, super::col_chunk(2), 2),
                            (false, super::col_chunk(8), 8),
                            (false, super::col_chunk(32), 32),
                        ] {
                            validate_with(
                                &format!(
                                    "{dtype} {kind:?} phase {phase} subgroups={sg} vec4={vec} chunk={chunk} cols={cols}"
                                ),
                                &reduce_phase_source(dtype, kind, phase, sg, vec, chunk, cols),
                                sg,
                            );
                        }
                    }
                }
            }
        }
    }
}
