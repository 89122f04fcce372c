// attention_merge.wgsl: combines the split-KV partials of attention_decode.wgsl. For one
// output row, split s holds (m_s, l_s, O_s) with O_s and l_s relative to exp(−m_s) (or to
// exp(0) where m_s = −∞); with M the NaN-propagating max of the m_s and M' = M, or 0 where
// M = −∞, the row is Σ O_s·exp(m_s − M') / Σ l_s·exp(m_s − M') (the log-sum-exp rule). A
// query that sees no key writes 0. One workgroup per output row and block of 128 columns.
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
    var mx = neg_inf_f32();
    for (var s = 0u; s < P.splits; s = s + 1u) {
        mx = nan_max(mx, part[P.ml_base + 2u * (first + s)]);
    }
    let mu = select(mx, 0.0, bitcast<u32>(mx) == 0xff800000u);
    var l = 0.0;
    var o = 0.0;
    for (var s = 0u; s < P.splits; s = s + 1u) {
        let w = exp(part[P.ml_base + 2u * (first + s)] - mu);
        l = l + part[P.ml_base + 2u * (first + s) + 1u] * w;
        o = o + part[(first + s) * P.dv + c] * w;
    }
    var y = 0.0;
    if (visible(row % P.sq) > 0u) { y = o / l; }
    out[row * P.dv + c] = y;
}
