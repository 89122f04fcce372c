// normalize.wgsl: softmax, log-softmax and RMS norm along the axis of [outer, axis,
// inner], one workgroup of WG invocations (128, or 256 where chosen) per row. Two workgroup-wide reductions (tree.wgsl, or
// tree_subgroup.wgsl with subgroups): max, then Σ exp(x − max);
// or Σ x² for RMS norm, then every invocation writes its slice of the row.
// Softmax/log-softmax use exp(x − max) exactly as the reference does, so a row whose max
// is ±∞ or NaN gives NaN; RMS norm is x / sqrt(mean(x²) + eps) · weight.
// R > 0 (contiguous rows, inner = 1, starts and length multiples of 4, at most
// 4 · WG · R elements): the row is read once, as vec4s kept in registers (R per
// invocation), instead of two or three times from memory; vec4 stores.
struct Params { groups: u32, axis_len: u32, inner: u32, offset: u32, eps: f32, w_off: u32, w_stride: u32 }
//!BINDINGS
// 0 softmax, 1 log-softmax, 2 RMS norm.
const KIND: u32 = {{KIND}}u;
const HAS_W: u32 = {{WEIGHT}}u;
const WG: u32 = {{WG}}u;
// vec4s per invocation of the register-cached path (0: the streaming path).
const R: u32 = {{CACHE}}u;
{{LOAD_SHIM}}
{{STORE_SHIM}}

// Helpers of the register-cached row g (see the header); `cached_row` itself is
// generated in Rust with one named vec4 per cached slot (c0, c1, ...), unrolled, so the
// cache stays in registers (an indexed array may be placed in local memory).
fn fold_in(acc: f32, v: vec4<f32>) -> f32 {
    if (KIND == 2u) { return acc + (((v.x * v.x + v.y * v.y) + v.z * v.z) + v.w * v.w); }
    return nan_max(acc, nan_max(nan_max(v.x, v.y), nan_max(v.z, v.w)));
}

fn exp_sum(v: vec4<f32>, m: f32) -> f32 {
    let x = exp(v - vec4<f32>(m));
    return ((x.x + x.y) + x.z) + x.w;
}

fn normed(x: vec4<f32>, q: u32, m: f32, total: f32, lse: f32, rs: f32) -> vec4<f32> {
    if (KIND == 0u) { return exp(x - vec4<f32>(m)) / total; }
    if (KIND == 1u) { return x - vec4<f32>(m + lse); }
    var y = x * rs;
    if (HAS_W == 1u) {
        let a = 4u * q;
        y = y * vec4<f32>(load_w(P.w_off + a * P.w_stride),
            load_w(P.w_off + (a + 1u) * P.w_stride),
            load_w(P.w_off + (a + 2u) * P.w_stride),
            load_w(P.w_off + (a + 3u) * P.w_stride));
    }
    return y;
}

{{CACHED_ROW}}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{{SG_BUILTINS}}) {
    {{SG_INIT}}
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    if (R > 0u) {
        cached_row(g, lid);
        return;
    }
    let o = g / P.inner;
    let i = g % P.inner;
    let row = o * P.axis_len * P.inner + i;
    let base = P.offset + row;
    var m = 0.0;
    if (KIND != 2u) {
        var acc = neg_inf_f32();
        for (var a = lid; a < P.axis_len; a = a + WG) {
            acc = nan_max(acc, load_x(base + a * P.inner));
        }
        m = tree_op(lid, acc, 1u);
    }
    var acc = 0.0;
    for (var a = lid; a < P.axis_len; a = a + WG) {
        let x = load_x(base + a * P.inner);
        if (KIND == 2u) { acc = acc + x * x; } else { acc = acc + exp(x - m); }
    }
    let total = tree_op(lid, acc, 0u);
    let lse = log(total);
    let r = 1.0 / sqrt(total / f32(P.axis_len) + P.eps);
    for (var a = lid; a < P.axis_len; a = a + WG) {
        let x = load_x(base + a * P.inner);
        var y = 0.0;
        if (KIND == 0u) { y = exp(x - m) / total; }
        if (KIND == 1u) { y = x - m - lse; }
        if (KIND == 2u) {
            y = x * r;
            if (HAS_W == 1u) { y = y * load_w(P.w_off + a * P.w_stride); }
        }
        store(row + a * P.inner, y);
    }
}
{{TREE}}
