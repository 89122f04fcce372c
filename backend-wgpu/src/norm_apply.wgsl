// norm_apply.wgsl: the last phase of the long-row softmax / log-softmax (reduce.rs,
// `long_row_softmax`): element e of the contiguous [outer, axis, inner] output is
// exp(x − lse) (softmax) or x − lse (log-softmax) with lse the logsumexp of its row
// (o, i), from the split reduction. A row whose lse is ±∞ or NaN (its max is ±∞ or NaN)
// is NaN throughout, as the reference's exp(x − max) / Σ gives.
struct Params { groups: u32, total: u32, axis_len: u32, inner: u32, offset: u32 }
//!BINDINGS
const LOG: u32 = {{LOG}}u;
const WG: u32 = {{WG}}u;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let e = g * WG + lid;
    if (e >= P.total) { return; }
    let i = e % P.inner;
    let o = e / (P.inner * P.axis_len);
    let l = bitcast<f32>(lse[o * P.inner + i]);
    let x = load_x(P.offset + e);
    var y = x - l;
    if (LOG == 0u) { y = exp(y); }
    if (is_nan(l) || is_inf(l)) { y = nan_f32(); }
    out[e] = y;
}
