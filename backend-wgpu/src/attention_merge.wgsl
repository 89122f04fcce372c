// attention_merge.wgsl: combines the split-KV partials of attention_decode.wgsl. For one
// output row, split s holds (m_s, l_s, O_s) with O_s and l_s relative to exp(−m_s) (or to
// exp(0) where m_s = −∞); with M the NaN-propagating max of the m_s and M' = M, or 0 where
// M = −∞, the row is Σ O_s·exp(m_s − M') / Σ l_s·exp(m_s − M') (the log-sum-exp rule). A
// query that sees no key writes 0. One workgroup per output row and block of 128 columns.
// The loops over the splits take four at a time with independent loads and partial sums,
// so that four loads are in flight instead of one (the splits are many, e.g. 64).
struct Params {
    groups: u32, sq: u32, skv: u32, causal: u32, splits: u32, dv: u32, ml_base: u32,
    col_blocks: u32,
}
//!BINDINGS

fn visible(i: u32) -> u32 {
    if (P.causal == 0u) { return P.skv; }
    return min(select(0u, i + 1u + P.skv - P.sq, i + 1u + P.skv > P.sq), P.skv);
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let row = g / P.col_blocks;
    let c = (g % P.col_blocks) * 128u + t;
    if (c >= P.dv) { return; }
    let first = row * P.splits;
    let ml = P.ml_base + 2u * first;
    let n4 = P.splits & ~3u;
    var mx4 = vec4<f32>(neg_inf_f32());
    for (var s = 0u; s < n4; s = s + 4u) {
        let a = vec4<f32>(part[ml + 2u * s], part[ml + 2u * s + 2u], part[ml + 2u * s + 4u],
            part[ml + 2u * s + 6u]);
        mx4 = vec4<f32>(nan_max(mx4.x, a.x), nan_max(mx4.y, a.y), nan_max(mx4.z, a.z),
            nan_max(mx4.w, a.w));
    }
    var mx = nan_max(nan_max(mx4.x, mx4.y), nan_max(mx4.z, mx4.w));
    for (var s = n4; s < P.splits; s = s + 1u) {
        mx = nan_max(mx, part[ml + 2u * s]);
    }
    let mu = select(mx, 0.0, bitcast<u32>(mx) == 0xff800000u);
    var l4 = vec4<f32>(0.0);
    var o4 = vec4<f32>(0.0);
    for (var s = 0u; s < n4; s = s + 4u) {
        let m = vec4<f32>(part[ml + 2u * s], part[ml + 2u * s + 2u], part[ml + 2u * s + 4u],
            part[ml + 2u * s + 6u]);
        let l = vec4<f32>(part[ml + 2u * s + 1u], part[ml + 2u * s + 3u],
            part[ml + 2u * s + 5u], part[ml + 2u * s + 7u]);
        let o = vec4<f32>(part[(first + s) * P.dv + c], part[(first + s + 1u) * P.dv + c],
            part[(first + s + 2u) * P.dv + c], part[(first + s + 3u) * P.dv + c]);
        let w = exp(m - mu);
        l4 = fma(l, w, l4);
        o4 = fma(o, w, o4);
    }
    var l = (l4.x + l4.y) + (l4.z + l4.w);
    var o = (o4.x + o4.y) + (o4.z + o4.w);
    for (var s = n4; s < P.splits; s = s + 1u) {
        let w = exp(part[ml + 2u * s] - mu);
        l = l + part[ml + 2u * s + 1u] * w;
        o = o + part[(first + s) * P.dv + c] * w;
    }
    var y = 0.0;
    if (visible(row % P.sq) > 0u) { y = o / l; }
    out[row * P.dv + c] = y;
}
