// reduce.wgsl: one workgroup per output of the canonical [outer, axis, inner] problem.
// Each of the 128 invocations folds a strided slice of the axis in order, then a
// workgroup tree (log2 128 = 7 steps) combines the partials: never serial per row.
// NaN propagates (max/min); argmax/argmin prefer NaN, then the better value, then the
// lower index, so ties and NaN go to the first index. logsumexp = m + log Σ exp(x − m),
// or m itself when m is ±∞ or NaN; an empty axis gives 0 (sum), NaN (mean), −∞ (lse).
struct Params { groups: u32, axis_len: u32, inner: u32, offset: u32 }
//!BINDINGS
// 0 sum, 1 mean, 2 max, 3 min, 4 argmax, 5 argmin, 6 logsumexp.
const KIND: u32 = {{KIND}}u;
const WG: u32 = 128u;
const NONE: u32 = 0xffffffffu;

var<workgroup> sv: array<f32, 128>;
var<workgroup> si: array<u32, 128>;

// True when (va, ia) should win over (vb, ib) for argmax/argmin.
fn arg_better(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    if (ia == NONE) { return false; }
    if (ib == NONE) { return true; }
    let na = is_nan(va);
    let nb = is_nan(vb);
    if (na || nb) {
        if (na && nb) { return ia < ib; }
        return na;
    }
    if (KIND == 4u && va > vb) { return true; }
    if (KIND == 5u && va < vb) { return true; }
    if (va == vb) { return ia < ib; }
    return false;
}

fn combine(a: f32, b: f32) -> f32 {
    if (KIND == 3u) { return nan_min(a, b); }
    if (KIND == 2u || KIND == 6u) { return nan_max(a, b); }
    return a + b;
}

fn identity() -> f32 {
    if (KIND == 2u || KIND == 6u) { return neg_inf_f32(); }
    if (KIND == 3u) { return -neg_inf_f32(); }
    return 0.0;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let o = g / P.inner;
    let i = g % P.inner;
    let base = P.offset + o * P.axis_len * P.inner + i;
    if (KIND == 4u || KIND == 5u) {
        var bv = 0.0;
        var bi = NONE;
        for (var a = lid; a < P.axis_len; a = a + WG) {
            let v = load_x(base + a * P.inner);
            if (arg_better(v, a, bv, bi)) { bv = v; bi = a; }
        }
        sv[lid] = bv;
        si[lid] = bi;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st = st / 2u) {
            if (lid < st && arg_better(sv[lid + st], si[lid + st], sv[lid], si[lid])) {
                sv[lid] = sv[lid + st];
                si[lid] = si[lid + st];
            }
            workgroupBarrier();
        }
        if (lid == 0u) { out[g] = si[0]; }
        return;
    }
    var acc = identity();
    for (var a = lid; a < P.axis_len; a = a + WG) {
        acc = combine(acc, load_x(base + a * P.inner));
    }
    sv[lid] = acc;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st / 2u) {
        if (lid < st) { sv[lid] = combine(sv[lid], sv[lid + st]); }
        workgroupBarrier();
    }
    let r = sv[0];
    if (KIND == 6u) {
        workgroupBarrier();
        var e = 0.0;
        for (var a = lid; a < P.axis_len; a = a + WG) {
            e = e + exp(load_x(base + a * P.inner) - r);
        }
        sv[lid] = e;
        workgroupBarrier();
        for (var st = WG / 2u; st > 0u; st = st / 2u) {
            if (lid < st) { sv[lid] = sv[lid] + sv[lid + st]; }
            workgroupBarrier();
        }
        if (lid == 0u) {
            var v = r + log(sv[0]);
            if (is_nan(r) || is_inf(r)) { v = r; }
            out[g] = bitcast<u32>(v);
        }
        return;
    }
    if (lid == 0u) {
        var v = r;
        if (KIND == 1u) {
            v = select(r / f32(P.axis_len), nan_f32(), P.axis_len == 0u);
        }
        out[g] = bitcast<u32>(v);
    }
}
