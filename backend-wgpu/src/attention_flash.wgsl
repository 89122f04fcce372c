// attention_flash.wgsl: FlashAttention-2 style prefill. One workgroup of 16 × 16
// invocations per (batch, query head, block of BR query rows); the block walks the keys
// it can see in tiles of BC. Per tile: S = Q·Kᵀ (BR × BC) register-tiled, each invocation
// a TM × TN micro-tile at keys TN·tx + j and rows TM·ty + i (one vector load of each per
// feature; at TM = 8 rows 4·ty + i%4 + 64·(i/4), two vec4 loads), with Q and K staged
// k-major BK features at a time (in `stage`, or in `ps` for the 128-row tilings); S goes
// to `ps` (key-major), where SPLIT invocations per row find the tile's row maximum and turn the
// scores into probabilities (online softmax in f32: running max m, running sum l,
// rescale by exp(m_old − m_new)); then O += P·V with V staged BKV keys at a time and O
// (the same TM rows × NJ columns per invocation) held in registers. Causal masking is
// bottom-right aligned (query i sees keys j < visible(i) = i + 1 + Skv − Sq, clamped to
// [0, Skv]); tiles no row of the block sees are never visited, and only tiles some row
// sees partly take the masked P·V loop, so a masked key contributes nothing even where
// its value is ∞ or NaN. A query that sees no key writes 0; NaN scores propagate through
// nan_max into every output of the query; a row whose visible scores are all −∞ gets
// 0/0 = NaN, like the f64 reference. Staging is register-prefetched: the loads of the
// next Q/K feature step and of the next V rows are issued before the current step's math
// and stored after its closing barrier, and the last V step of a tile loads the next
// tile's first Q/K step; with vec4 bindings (aligned rows) each load is four features or
// columns. Sizes and the unrolled code (ROWS, QK_*, V_*,
// MICRO, WRITE_S, RESCALE, PV, PV_MASKED, STORE) come from attention_wgsl.rs.
struct Params {
    groups: u32, hq: u32, group: u32, sq: u32, skv: u32, scale: f32, causal: u32,
    q_blocks: u32,
    q_off: u32, q_sb: u32, q_sh: u32, q_ss: u32, q_sd: u32,
    k_off: u32, k_sb: u32, k_sh: u32, k_ss: u32, k_sd: u32,
    v_off: u32, v_sb: u32, v_sh: u32, v_ss: u32, v_sd: u32,
}
//!BINDINGS
const D: u32 = {{D}}u;
const DV: u32 = {{DV}}u;
const BR: u32 = {{BR}}u;
const BC: u32 = {{BC}}u;
const BK: u32 = {{BK}}u;
const BKV: u32 = {{BKV}}u;
// DV rounded up to a multiple of 16 (columns per invocation NJ = DVP / 16).
const DVP: u32 = {{DVP}}u;
// Row strides (words) of the staged Q and K chunks, k-major and padded to keep rows
// vec4-aligned, and of ps (P transposed: one row of BR probabilities per key, padded
// the same way).
const SQ: u32 = {{BR}}u + 4u;
const SK: u32 = {{BC}}u + 4u;
const SPT: u32 = {{BR}}u + 4u;
const TK: u32 = {{BK}}u * ({{BR}}u + 4u);
// Invocations per row in the softmax step, and the keys each scans.
const SPLIT: u32 = 256u / {{BR}}u;
const SEG: u32 = {{BC}}u / (256u / {{BR}}u);

// Q and K chunks, then V rows: vec4s, so that the score micro-kernel reads an
// invocation's 4 (or 2) rows and keys with one load each; scalars go through
// stage_set / stage_get.
var<workgroup> stage: array<vec4<f32>, {{STAGE_LEN4}}>;
// ps[key·SPT + row]: the tile's scores, then probabilities, key-major so that the P·V
// step reads an invocation's rows of one key with one vector load.
var<workgroup> ps: array<vec4<f32>, {{PS_LEN4}}>;
var<workgroup> wred: array<f32, 256>;
var<workgroup> wsum: array<f32, 256>;

fn visible(i: u32) -> u32 {
    if (P.causal == 0u) { return P.skv; }
    return min(select(0u, i + 1u + P.skv - P.sq, i + 1u + P.skv > P.sq), P.skv);
}

fn stage_set(i: u32, x: f32) {
    stage[i >> 2u][i & 3u] = x;
}

// The Q and K chunks live in `stage` (with V), or in `ps` (the 128-row tilings, where V
// has `stage` to itself).
fn qk_set(i: u32, x: f32) {
    {{QK}}[i >> 2u][i & 3u] = x;
}

fn stage_get(i: u32) -> f32 {
    return stage[i >> 2u][i & 3u];
}

fn ps_set(i: u32, x: f32) {
    ps[i >> 2u][i & 3u] = x;
}

fn ps_get(i: u32) -> f32 {
    return ps[i >> 2u][i & 3u];
}

fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    // Last query blocks first: under a causal mask they see the most keys.
    let qb = P.q_blocks - 1u - g % P.q_blocks;
    let bh = g / P.q_blocks;
    let h = bh % P.hq;
    let b = bh / P.hq;
    let kvh = h / P.group;
    let q0 = qb * BR;
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    let qbase = P.q_off + b * P.q_sb + h * P.q_sh;
    let kbase = P.k_off + b * P.k_sb + kvh * P.k_sh;
    let vbase = P.v_off + b * P.v_sb + kvh * P.v_sh;
    // Keys the last row of the block sees (every row sees a prefix of them), and the
    // fewest any row sees: tiles past it need the masked P·V loop.
    let kv_end = visible(min(q0 + BR, P.sq) - 1u);
    let vis_min = visible(q0);
    // Softmax step: row sr, keys sp·SEG .. sp·SEG + SEG − 1 of the tile (rows fastest:
    // neighbouring invocations read neighbouring words of ps).
    let sr = t % BR;
    let sp = t / BR;
    let s_vis = visible(q0 + sr);
    var s_m = neg_inf_f32();
    // This invocation's rows (TM·ty + i, or at TM = 8 4·ty + i%4 + 64·(i/4)): visible
    // keys vis_i, running max m_i and sum l_i (scalars, unrolled by attention_wgsl.rs,
    // so that nothing is indexed dynamically).
{{ROWS}}
    var acc: array<f32, {{TM_NJ}}>;
{{QK_DECL}}
{{V_DECL}}
    // Keys of the Q/K feature step in the staging registers: this tile's, or (after
    // the tile's last V step) the next tile's first step, in flight across the loop.
    var kq = 0u;
    var dl = 0u;
{{QK_LOAD}}
    let ra0 = ({{TQ}}u * ty) >> 2u;
    let rb0 = (TK + {{TN}}u * tx) >> 2u;
    for (var kv0 = 0u; kv0 < kv_end; kv0 = kv0 + BC) {
        var s: array<f32, {{TM_TN}}>;
        // Q and K of feature step dl into registers: every load of a step is issued
        // before any store (all in flight together), and the next step's loads are issued
        // before this step's math (in flight during it).
        for (var d0 = 0u; d0 < D; d0 = d0 + BK) {
{{QK_STORE}}
            workgroupBarrier();
            dl = d0 + BK;
            if (dl < D) {
{{QK_LOAD}}
            }
            // Features d0 .. d0 + BK − 1, unrolled: rows TM·ty.. and keys TN·tx.. of
            // feature kk are the vec4s ra0 + kk·SQ/4 and rb0 + kk·SK/4.
{{MICRO}}
            workgroupBarrier();
        }
        // The first V rows of the tile into registers, in flight during the softmax step
        // (`stage` is free: the last feature step ended with a barrier).
        var kl = 0u;
{{V_LOAD}}
        // Scaled scores, masked keys −∞.
{{WRITE_S}}
        workgroupBarrier();
        let pcol = sp * SEG * SPT + sr;
        var pm = neg_inf_f32();
        for (var u = 0u; u < SEG; u = u + 1u) { pm = nan_max(pm, ps_get(pcol + u * SPT)); }
        wred[t] = pm;
        workgroupBarrier();
        var tmax = neg_inf_f32();
        for (var u = 0u; u < SPLIT; u = u + 1u) { tmax = nan_max(tmax, wred[u * BR + sr]); }
        let s_new = nan_max(s_m, tmax);
        // Against a max of −∞ (every visible score −∞ so far) subtract 0, not −∞.
        let s_use = select(s_new, 0.0, is_neg_inf(s_new));
        var psum = 0.0;
        for (var u = 0u; u < SEG; u = u + 1u) {
            let key = kv0 + sp * SEG + u;
            let p = select(0.0, exp(ps_get(pcol + u * SPT) - s_use), key < s_vis);
            ps_set(pcol + u * SPT, p);
            psum = psum + p;
        }
        wsum[t] = psum;
        s_m = s_new;
        workgroupBarrier();
        // The same max (same partials, same order) for this invocation's rows; rescale.
{{RESCALE}}
        let masked = kv0 + BC > vis_min;
        for (var k0 = 0u; k0 < BC; k0 = k0 + BKV) {
{{V_STORE}}
            workgroupBarrier();
            // The next V rows, in flight during this step's P·V; after the last, the
            // next tile's first Q/K step.
            kl = k0 + BKV;
            if (kl < BC) {
{{V_LOAD}}
            } else {
                kq = kv0 + BC;
                dl = 0u;
{{QK_LOAD}}
            }
            let rp0 = (k0 * SPT) >> 2u;
            if (masked) {
                for (var kk = 0u; kk < BKV; kk = kk + 1u) {
                    let key = kv0 + k0 + kk;
                    let rp = ((k0 + kk) * SPT) >> 2u;
                    let rv = kk * DVP + tx;
                    let rv4 = kk * (DVP / 4u) + tx;
{{PV_MASKED}}
                }
            } else {
{{PV}}
            }
            workgroupBarrier();
        }
    }
{{STORE}}
}
