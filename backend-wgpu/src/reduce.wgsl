// reduce.wgsl: reductions of the canonical [outer, axis, inner] problem, in three phases
// chosen from Rust (PHASE):
//   0  one workgroup per output row (rows of at most SPLIT_MIN elements);
//   1  long rows: workgroup g folds chunk g % chunks (CHUNK elements) of row g / chunks
//      and writes a two-word partial state to out[2g], out[2g + 1];
//   2  long rows: one workgroup per row folds that row's `chunks` partials in order.
// In each, the 128 invocations fold strided slices in order, then a workgroup tree
// (log2 128 = 7 steps) combines them: never serial per row.
// NaN propagates (max/min); argmax/argmin prefer NaN, then the better value, then the
// lower index, so ties and NaN go to the first index. logsumexp = m + log Σ exp(x − m),
// or m itself when m is ±∞ or NaN; an empty axis gives 0 (sum), NaN (mean), −∞ (lse).
// Partial states: sum/mean (partial sum, 0); max/min (extreme, 0); argmax/argmin
// (value bits, absolute index); logsumexp (m, Σ exp(x − m)) with the sum 0 when m is
// not finite, merged as M = max m, S = Σ s·exp(m − M) over the chunks with m > −∞.
struct Params { groups: u32, axis_len: u32, inner: u32, offset: u32, chunks: u32 }
//!BINDINGS
// 0 sum, 1 mean, 2 max, 3 min, 4 argmax, 5 argmin, 6 logsumexp.
const KIND: u32 = {{KIND}}u;
const PHASE: u32 = {{PHASE}}u;
const CHUNK: u32 = {{CHUNK}}u;
const WG: u32 = 128u;
const NONE: u32 = 0xffffffffu;

var<workgroup> sv: array<f32, 128>;
var<workgroup> si: array<u32, 128>;

struct Arg { v: f32, i: u32 }

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

// Combines every invocation's `v` with combine() (add when `add`); the result is read by
// all. Called in uniform control flow.
fn tree(lid: u32, v: f32, add: bool) -> f32 {
    sv[lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st / 2u) {
        if (lid < st) {
            if (add) {
                sv[lid] = sv[lid] + sv[lid + st];
            } else {
                sv[lid] = combine(sv[lid], sv[lid + st]);
            }
        }
        workgroupBarrier();
    }
    let r = sv[0];
    workgroupBarrier();
    return r;
}

// The best (value, index) of every invocation's candidate, for argmax/argmin.
fn tree_arg(lid: u32, bv: f32, bi: u32) -> Arg {
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
    return Arg(sv[0], si[0]);
}

// The final value of a float reduction from its reduced value `r` and exp-sum `s`.
fn finish(r: f32, s: f32) -> f32 {
    if (KIND == 6u) {
        if (is_nan(r) || is_inf(r)) { return r; }
        return r + log(s);
    }
    if (KIND == 1u) {
        return select(r / f32(P.axis_len), nan_f32(), P.axis_len == 0u);
    }
    return r;
}

// Phase 2: folds the `chunks` partial states of row g.
fn merge_partials(g: u32, lid: u32) {
    let pb = g * P.chunks;
    if (KIND == 4u || KIND == 5u) {
        var bv = 0.0;
        var bi = NONE;
        for (var c = lid; c < P.chunks; c = c + WG) {
            let v = bitcast<f32>(part[2u * (pb + c)]);
            let ix = part[2u * (pb + c) + 1u];
            if (arg_better(v, ix, bv, bi)) { bv = v; bi = ix; }
        }
        let best = tree_arg(lid, bv, bi);
        if (lid == 0u) { out[g] = best.i; }
        return;
    }
    var acc = identity();
    for (var c = lid; c < P.chunks; c = c + WG) {
        acc = combine(acc, bitcast<f32>(part[2u * (pb + c)]));
    }
    let r = tree(lid, acc, false);
    var s = 0.0;
    if (KIND == 6u) {
        var e = 0.0;
        for (var c = lid; c < P.chunks; c = c + WG) {
            let m = bitcast<f32>(part[2u * (pb + c)]);
            if (m > neg_inf_f32()) {
                e = e + bitcast<f32>(part[2u * (pb + c) + 1u]) * exp(m - r);
            }
        }
        s = tree(lid, e, true);
    }
    if (lid == 0u) { out[g] = bitcast<u32>(finish(r, s)); }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    if (PHASE == 2u) {
        merge_partials(g, lid);
        return;
    }
    // This workgroup folds axis positions [a0, a1) of `row`.
    var row = g;
    var a0 = 0u;
    var a1 = P.axis_len;
    if (PHASE == 1u) {
        row = g / P.chunks;
        a0 = (g % P.chunks) * CHUNK;
        a1 = min(a0 + CHUNK, P.axis_len);
    }
    let o = row / P.inner;
    let i = row % P.inner;
    let base = P.offset + o * P.axis_len * P.inner + i;
    if (KIND == 4u || KIND == 5u) {
        var bv = 0.0;
        var bi = NONE;
        for (var a = a0 + lid; a < a1; a = a + WG) {
            let v = load_x(base + a * P.inner);
            if (arg_better(v, a, bv, bi)) { bv = v; bi = a; }
        }
        let best = tree_arg(lid, bv, bi);
        if (lid == 0u) {
            if (PHASE == 1u) {
                out[2u * g] = bitcast<u32>(best.v);
                out[2u * g + 1u] = best.i;
            } else {
                out[g] = best.i;
            }
        }
        return;
    }
    var acc = identity();
    for (var a = a0 + lid; a < a1; a = a + WG) {
        acc = combine(acc, load_x(base + a * P.inner));
    }
    let r = tree(lid, acc, false);
    var s = 0.0;
    if (KIND == 6u) {
        var e = 0.0;
        for (var a = a0 + lid; a < a1; a = a + WG) {
            e = e + exp(load_x(base + a * P.inner) - r);
        }
        s = tree(lid, e, true);
    }
    if (lid == 0u) {
        if (PHASE == 1u) {
            out[2u * g] = bitcast<u32>(r);
            out[2u * g + 1u] = select(0u, bitcast<u32>(s), KIND == 6u && !is_nan(r) && !is_inf(r));
        } else {
            out[g] = bitcast<u32>(finish(r, s));
        }
    }
}
