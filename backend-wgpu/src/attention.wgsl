// attention.wgsl: fused attention, one workgroup per (query row, chunk of 256 output
// features). Keys are visited in tiles of 64 (one score per invocation); an online
// softmax (running max m, running sum l, rescale by exp(m_old − m_new)) keeps memory
// linear in the sequence: no score matrix is ever stored. Causal masking is aligned
// bottom-right (query i sees keys j ≤ i + Skv − Sq); a query that sees no key writes 0.
// NaN scores propagate through nan_max into every output of the query.
struct Params {
    groups: u32, hq: u32, group: u32, sq: u32, skv: u32, d: u32, dv: u32, scale: f32,
    causal: u32, dv_chunks: u32,
    q_off: u32, q_sb: u32, q_sh: u32, q_ss: u32, q_sd: u32,
    k_off: u32, k_sb: u32, k_sh: u32, k_ss: u32, k_sd: u32,
    v_off: u32, v_sb: u32, v_sh: u32, v_ss: u32, v_sd: u32,
}
//!BINDINGS
const WG: u32 = 64u;
const PER: u32 = 4u;

var<workgroup> s: array<f32, 64>;
var<workgroup> p: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let chunk = g % P.dv_chunks;
    let row = g / P.dv_chunks;
    let i = row % P.sq;
    let bh = row / P.sq;
    let h = bh % P.hq;
    let b = bh / P.hq;
    let kvh = h / P.group;
    var visible = P.skv;
    if (P.causal == 1u) {
        visible = min(select(0u, i + 1u + P.skv - P.sq, i + 1u + P.skv > P.sq), P.skv);
    }
    let qbase = P.q_off + b * P.q_sb + h * P.q_sh + i * P.q_ss;
    let kbase = P.k_off + b * P.k_sb + kvh * P.k_sh;
    let vbase = P.v_off + b * P.v_sb + kvh * P.v_sh;
    var m = neg_inf_f32();
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var t0 = 0u; t0 < visible; t0 = t0 + WG) {
        let j = t0 + lid;
        var sc = neg_inf_f32();
        if (j < visible) {
            var dot = 0.0;
            for (var d = 0u; d < P.d; d = d + 1u) {
                dot = dot + load_q(qbase + d * P.q_sd) * load_k(kbase + j * P.k_ss + d * P.k_sd);
            }
            sc = dot * P.scale;
        }
        s[lid] = sc;
        workgroupBarrier();
        let cnt = min(WG, visible - t0);
        var mt = m;
        for (var jj = 0u; jj < cnt; jj = jj + 1u) { mt = nan_max(mt, s[jj]); }
        let alpha = exp(m - mt);
        p[lid] = select(0.0, exp(sc - mt), j < visible);
        workgroupBarrier();
        var psum = 0.0;
        for (var jj = 0u; jj < cnt; jj = jj + 1u) { psum = psum + p[jj]; }
        l = l * alpha + psum;
        for (var e = 0u; e < PER; e = e + 1u) {
            let dd = chunk * WG * PER + e * WG + lid;
            if (dd < P.dv) {
                var a = acc[e] * alpha;
                for (var jj = 0u; jj < cnt; jj = jj + 1u) {
                    a = a + p[jj] * load_v(vbase + (t0 + jj) * P.v_ss + dd * P.v_sd);
                }
                acc[e] = a;
            }
        }
        m = mt;
        workgroupBarrier();
    }
    for (var e = 0u; e < PER; e = e + 1u) {
        let dd = chunk * WG * PER + e * WG + lid;
        if (dd < P.dv) {
            var o = 0.0;
            if (visible > 0u) { o = acc[e] / l; }
            out[row * P.dv + dd] = o;
        }
    }
}
