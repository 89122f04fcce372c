// attention_merge.wgsl: combines the split-KV partials of attention_decode.wgsl and writes
// the output in its dtype (no separate cast). For one output row, split s holds
// (m_s, l_s, O_s) with O_s and l_s relative to exp(−m_s) (or to exp(0) where m_s = −∞);
// with M the NaN-propagating max of the m_s and M' = M, or 0 where M = −∞, the row is
// Σ O_s·exp(m_s − M') / Σ l_s·exp(m_s − M') (the log-sum-exp rule). A query that sees no
// key writes 0. One workgroup of EB × SG invocations per block of EB consecutive output
// elements (of the flattened [rows, Dv] output, so a block may span rows): invocation
// (u, e) = (t / EB, t % EB) takes splits u + SG·i (+ 64·round), NPER per round, with every load of a
// round issued before any is used (EB·SG·NPER·3 loads in flight per workgroup, the
// partials come from L2), combines them, and the SG split groups are combined in a fixed
// order through workgroup memory (deterministic). 16-bit outputs are written as words of
// two elements by the first EB / 2 invocations, with the same exact round-to-nearest-even
// conversion as cast.wgsl.
struct Params {
    groups: u32, sq: u32, skv: u32, causal: u32, splits: u32, dv: u32, ml_base: u32,
    len: u32,
}
//!BINDINGS
const EB: u32 = {{EB}}u;
const SG: u32 = {{SG}}u;
const NPER: u32 = {{NPER}}u;

var<workgroup> wm: array<f32, {{WG}}>;
var<workgroup> wl: array<f32, {{WG}}>;
var<workgroup> wo: array<f32, {{WG}}>;
var<workgroup> wy: array<f32, {{EB}}>;

fn visible(i: u32) -> u32 {
    if (P.causal == 0u) { return P.skv; }
    return min(select(0u, i + 1u + P.skv - P.sq, i + 1u + P.skv > P.sq), P.skv);
}

// m, or 0 where m is −∞.
fn ref_max(m: f32) -> f32 {
    return select(m, 0.0, bitcast<u32>(m) == 0xff800000u);
}

// A running (m, l, o) and another, combined by the log-sum-exp rule.
struct Part { m: f32, l: f32, o: f32 }

fn combine(a: Part, b: Part) -> Part {
    let m = nan_max(a.m, b.m);
    let r = ref_max(m);
    let wa = exp(a.m - r);
    let wb = exp(b.m - r);
    return Part(m, fma(a.l, wa, b.l * wb), fma(a.o, wa, b.o * wb));
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let el = t % EB;
    let u = t / EB;
    let e = g * EB + el;
    let ok = e < P.len;
    let row = e / P.dv;
    let c = e % P.dv;
    var acc = Part(neg_inf_f32(), 0.0, 0.0);
    for (var first = 0u; first < P.splits; first = first + SG * NPER) {
{{LOADS}}
{{COMBINE}}
    }
    wm[t] = acc.m;
    wl[t] = acc.l;
    wo[t] = acc.o;
    workgroupBarrier();
    if (u == 0u) {
        for (var v = 1u; v < SG; v = v + 1u) {
            acc = combine(acc, Part(wm[v * EB + el], wl[v * EB + el], wo[v * EB + el]));
        }
        var y = 0.0;
        if (ok && visible(row % P.sq) > 0u) { y = acc.o / acc.l; }
{{STORE}}
}
