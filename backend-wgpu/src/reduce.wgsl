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
// Workgroup trees: tree.wgsl, or tree_subgroup.wgsl on adapters with subgroups.
// VEC = 1 (contiguous rows, inner = 1, every row start and length a multiple of 4):
// phases 0 and 1 read `vec4`s (load4_x), each invocation keeping one accumulator per
// lane, combined x, y, z, w in that order before the tree; argmax/argmin visit the four
// lanes in index order. Sequential depth per accumulator: CHUNK / (4 · 128).
// COLS = 1 (inner > 1, the axis is not the contiguous one): phases 0 and 1 read with
// coalesced loads instead (fold_cols): a workgroup covers CX neighbouring columns
// (positions along `inner`) × AY = WG / CX lanes of the axis, so the CX · AY elements a
// step reads are whole runs of memory (for inner ≥ 32, a warp reads 32 neighbouring
// elements; for smaller inner, several neighbouring axis rows that are themselves
// contiguous). Each invocation folds axis positions a0 + ay + AY·j of its column in
// order into four accumulators (loads four at a time), then a tree over the AY lanes of
// each column (col_op / col_arg) combines them. A workgroup folds at most CHUNK = 64 · AY
// axis positions (at most 16 elements per accumulator); longer axes are split into
// chunks whose partial states phase 2 merges, as for long rows.
// Partial states: sum/mean (partial sum, 0); max/min (extreme, 0); argmax/argmin
// (value bits, absolute index); logsumexp (m, Σ exp(x − m)) with the sum 0 when m is
// not finite, merged as M = max m, S = Σ s·exp(m − M) over the chunks with m > −∞.
struct Params { groups: u32, axis_len: u32, inner: u32, offset: u32, chunks: u32 }
//!BINDINGS
{{LOAD_SHIM}}
// 0 sum, 1 mean, 2 max, 3 min, 4 argmax, 5 argmin, 6 logsumexp.
const KIND: u32 = {{KIND}}u;
const PHASE: u32 = {{PHASE}}u;
const CHUNK: u32 = {{CHUNK}}u;
const VEC: u32 = {{VEC}}u;
const WG: u32 = 128u;
// 0 add, 1 max, 2 min: the tree operation of this KIND (logsumexp's first pass is a max).
const OP: u32 = {{OP}}u;
const WANT_MAX: bool = KIND == 4u;
const COLS: u32 = {{COLS}}u;
const CX: u32 = {{CX}}u;
const AY: u32 = WG / CX;

fn combine(a: f32, b: f32) -> f32 {
    return op_combine(a, b, OP);
}

fn combine4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (OP == 0u) { return a + b; }
    return vec4<f32>(combine(a.x, b.x), combine(a.y, b.y), combine(a.z, b.z), combine(a.w, b.w));
}

fn lanes(a: vec4<f32>) -> f32 {
    return combine(combine(combine(a.x, a.y), a.z), a.w);
}

fn identity() -> f32 {
    return op_identity(OP);
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
            if (arg_better(v, ix, bv, bi, WANT_MAX)) { bv = v; bi = ix; }
        }
        let best = tree_arg(lid, bv, bi, WANT_MAX);
        if (lid == 0u) { out[g] = best.i; }
        return;
    }
    var acc = identity();
    for (var c = lid; c < P.chunks; c = c + WG) {
        acc = combine(acc, bitcast<f32>(part[2u * (pb + c)]));
    }
    let r = tree_op(lid, acc, OP);
    var s = 0.0;
    if (KIND == 6u) {
        var e = 0.0;
        for (var c = lid; c < P.chunks; c = c + WG) {
            let m = bitcast<f32>(part[2u * (pb + c)]);
            if (m > neg_inf_f32()) {
                e = e + bitcast<f32>(part[2u * (pb + c) + 1u]) * exp(m - r);
            }
        }
        s = tree_op(lid, e, 0u);
    }
    if (lid == 0u) { out[g] = bitcast<u32>(finish(r, s)); }
}

// Phase 1 writes workgroup g's partial state, phase 0 the row's result.
fn write_arg(g: u32, best: Arg) {
    if (PHASE == 1u) {
        out[2u * g] = bitcast<u32>(best.v);
        out[2u * g + 1u] = best.i;
    } else {
        out[g] = best.i;
    }
}

fn write_value(g: u32, r: f32, s: f32) {
    if (PHASE == 1u) {
        out[2u * g] = bitcast<u32>(r);
        out[2u * g + 1u] = select(0u, bitcast<u32>(s), KIND == 6u && !is_nan(r) && !is_inf(r));
    } else {
        out[g] = bitcast<u32>(finish(r, s));
    }
}

// Phases 0 and 1 on vec4 loads: axis positions [a0, a1) of the row starting at `base`
// (all multiples of 4; inner = 1).
fn fold_vec4(g: u32, lid: u32, base: u32, a0: u32, a1: u32) {
    let q0 = (base + a0) / 4u;
    let q1 = (base + a1) / 4u;
    if (KIND == 4u || KIND == 5u) {
        var bv = 0.0;
        var bi = NONE;
        for (var q = q0 + lid; q < q1; q = q + WG) {
            let v = load4_x(q);
            let a = q * 4u - base;
            if (arg_better(v.x, a, bv, bi, WANT_MAX)) { bv = v.x; bi = a; }
            if (arg_better(v.y, a + 1u, bv, bi, WANT_MAX)) { bv = v.y; bi = a + 1u; }
            if (arg_better(v.z, a + 2u, bv, bi, WANT_MAX)) { bv = v.z; bi = a + 2u; }
            if (arg_better(v.w, a + 3u, bv, bi, WANT_MAX)) { bv = v.w; bi = a + 3u; }
        }
        let best = tree_arg(lid, bv, bi, WANT_MAX);
        if (lid == 0u) { write_arg(g, best); }
        return;
    }
    // Eight loads in flight per step, folded into four accumulators (loads j and j + 4
    // of a step into accumulator j), which are combined in a fixed order at the end: a
    // chunk of CHUNK elements gives each accumulator lane CHUNK / (4 · 128 · 4) · 2 ≤ 32
    // elements in order (the tail loop adds at most 7 more to the first).
    var k0 = vec4<f32>(identity());
    var k1 = k0;
    var k2 = k0;
    var k3 = k0;
    var q = q0 + lid;
    for (; q + 7u * WG < q1; q = q + 8u * WG) {
        let v0 = load4_x(q);
        let v1 = load4_x(q + WG);
        let v2 = load4_x(q + 2u * WG);
        let v3 = load4_x(q + 3u * WG);
        let v4 = load4_x(q + 4u * WG);
        let v5 = load4_x(q + 5u * WG);
        let v6 = load4_x(q + 6u * WG);
        let v7 = load4_x(q + 7u * WG);
        k0 = combine4(combine4(k0, v0), v4);
        k1 = combine4(combine4(k1, v1), v5);
        k2 = combine4(combine4(k2, v2), v6);
        k3 = combine4(combine4(k3, v3), v7);
    }
    for (; q < q1; q = q + WG) {
        k0 = combine4(k0, load4_x(q));
    }
    let acc4 = combine4(combine4(k0, k1), combine4(k2, k3));
    let r = tree_op(lid, lanes(acc4), OP);
    var s = 0.0;
    if (KIND == 6u) {
        var e = vec4<f32>(0.0);
        for (var q = q0 + lid; q < q1; q = q + WG) {
            e = e + exp(load4_x(q) - vec4<f32>(r));
        }
        s = tree_op(lid, ((e.x + e.y) + e.z) + e.w, 0u);
    }
    if (lid == 0u) { write_value(g, r, s); }
}

// The combine of `v` over the AY axis lanes of each column (fixed pairing; every
// invocation calls it in uniform control flow and reads its column's result). Invocation
// lid = ay · CX + cx; the tree's workgroup memory `sv`, `si` comes with TREE.
fn col_op(lid: u32, v: f32, op: u32) -> f32 {
    sv[lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st >= CX; st = st / 2u) {
        if (lid < st) { sv[lid] = op_combine(sv[lid], sv[lid + st], op); }
        workgroupBarrier();
    }
    let r = sv[lid % CX];
    workgroupBarrier();
    return r;
}

fn col_arg(lid: u32, v: f32, i: u32) -> Arg {
    sv[lid] = v;
    si[lid] = i;
    workgroupBarrier();
    for (var st = WG / 2u; st >= CX; st = st / 2u) {
        if (lid < st && arg_better(sv[lid + st], si[lid + st], sv[lid], si[lid], WANT_MAX)) {
            sv[lid] = sv[lid + st];
            si[lid] = si[lid + st];
        }
        workgroupBarrier();
    }
    let r = Arg(sv[lid % CX], si[lid % CX]);
    workgroupBarrier();
    return r;
}

// Axis positions a, a + AY, a + 2·AY, a + 3·AY of the column starting at `base`: the
// four loads of one step of fold_cols, issued together.
fn col_step(base: u32, a: u32) -> vec4<f32> {
    return vec4<f32>(load_x(base + a * P.inner), load_x(base + (a + AY) * P.inner),
        load_x(base + (a + 2u * AY) * P.inner), load_x(base + (a + 3u * AY) * P.inner));
}

// What workgroup g folds: its unit (a row, or a column block of one outer index) and
// the axis positions [a0, a1) — chunk g % chunks of unit g / chunks in phase 1, the whole
// axis of unit g otherwise.
struct Span { unit: u32, a0: u32, a1: u32 }

fn span(g: u32) -> Span {
    if (PHASE == 1u) {
        let a0 = (g % P.chunks) * CHUNK;
        return Span(g / P.chunks, a0, min(a0 + CHUNK, P.axis_len));
    }
    return Span(g, 0u, P.axis_len);
}

// Phases 0 and 1 for inner > 1 (COLS = 1): workgroup g takes CX columns of one outer
// index (and, in phase 1, chunk g % chunks of the axis).
fn fold_cols(g: u32, lid: u32) {
    let blocks = (P.inner + CX - 1u) / CX;
    let sp = span(g);
    let rest = sp.unit;
    let a0 = sp.a0;
    let a1 = sp.a1;
    let o = rest / blocks;
    let i = (rest % blocks) * CX + lid % CX;
    let ay = lid / CX;
    let live = i < P.inner;
    let base = P.offset + o * P.axis_len * P.inner + i;
    // Where this column's result (phase 0) or partial state (phase 1) goes.
    var slot = o * P.inner + i;
    if (PHASE == 1u) { slot = slot * P.chunks + g % P.chunks; }
    if (KIND == 4u || KIND == 5u) {
        var bv = 0.0;
        var bi = NONE;
        if (live) {
            var a = a0 + ay;
            for (; a + 3u * AY < a1; a = a + 4u * AY) {
                let v = col_step(base, a);
                if (arg_better(v.x, a, bv, bi, WANT_MAX)) { bv = v.x; bi = a; }
                if (arg_better(v.y, a + AY, bv, bi, WANT_MAX)) { bv = v.y; bi = a + AY; }
                if (arg_better(v.z, a + 2u * AY, bv, bi, WANT_MAX)) { bv = v.z; bi = a + 2u * AY; }
                if (arg_better(v.w, a + 3u * AY, bv, bi, WANT_MAX)) { bv = v.w; bi = a + 3u * AY; }
            }
            for (; a < a1; a = a + AY) {
                let v = load_x(base + a * P.inner);
                if (arg_better(v, a, bv, bi, WANT_MAX)) { bv = v; bi = a; }
            }
        }
        let best = col_arg(lid, bv, bi);
        if (ay == 0u && live) { write_arg(slot, best); }
        return;
    }
    var k0 = identity();
    var k1 = k0;
    var k2 = k0;
    var k3 = k0;
    if (live) {
        var a = a0 + ay;
        for (; a + 3u * AY < a1; a = a + 4u * AY) {
            let v = col_step(base, a);
            k0 = combine(k0, v.x);
            k1 = combine(k1, v.y);
            k2 = combine(k2, v.z);
            k3 = combine(k3, v.w);
        }
        for (; a < a1; a = a + AY) {
            k0 = combine(k0, load_x(base + a * P.inner));
        }
    }
    let r = col_op(lid, combine(combine(k0, k1), combine(k2, k3)), OP);
    var s = 0.0;
    if (KIND == 6u) {
        var e = 0.0;
        if (live) {
            for (var a = a0 + ay; a < a1; a = a + AY) {
                e = e + exp(load_x(base + a * P.inner) - r);
            }
        }
        s = col_op(lid, e, 0u);
    }
    if (ay == 0u && live) { write_value(slot, r, s); }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{{SG_BUILTINS}}) {
    {{SG_INIT}}
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    if (PHASE == 2u) {
        merge_partials(g, lid);
        return;
    }
    if (COLS == 1u) {
        fold_cols(g, lid);
        return;
    }
    // This workgroup folds axis positions [a0, a1) of `row`.
    let sp = span(g);
    let row = sp.unit;
    let a0 = sp.a0;
    let a1 = sp.a1;
    let o = row / P.inner;
    let i = row % P.inner;
    let base = P.offset + o * P.axis_len * P.inner + i;
    if (VEC == 1u) {
        fold_vec4(g, lid, base, a0, a1);
        return;
    }
    if (KIND == 4u || KIND == 5u) {
        var bv = 0.0;
        var bi = NONE;
        for (var a = a0 + lid; a < a1; a = a + WG) {
            let v = load_x(base + a * P.inner);
            if (arg_better(v, a, bv, bi, WANT_MAX)) { bv = v; bi = a; }
        }
        let best = tree_arg(lid, bv, bi, WANT_MAX);
        if (lid == 0u) { write_arg(g, best); }
        return;
    }
    var acc = identity();
    for (var a = a0 + lid; a < a1; a = a + WG) {
        acc = combine(acc, load_x(base + a * P.inner));
    }
    let r = tree_op(lid, acc, OP);
    var s = 0.0;
    if (KIND == 6u) {
        var e = 0.0;
        for (var a = a0 + lid; a < a1; a = a + WG) {
            e = e + exp(load_x(base + a * P.inner) - r);
        }
        s = tree_op(lid, e, 0u);
    }
    if (lid == 0u) { write_value(g, r, s); }
}
{{TREE}}
