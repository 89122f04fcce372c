// attention_decode.wgsl: split-KV attention for few queries (decode). One workgroup of WG
// invocations per (batch, kv head, block of R rows, split of the keys); a row is one
// (query head of the kv head's GQA group, query position) pair, so the query heads of a
// group share every K/V read. The workgroup walks its split's keys T = WG / R at a time
// and keeps the next tile's K and V in registers while it computes the current one
// (software pipelining: the loads of tile i + 1 are in flight during the math of tile i;
// the host may leave V out of it, loading a tile's V at the tile's start: fewer registers).
// K: invocation t loads vec4s t + WG·i of the tile (key e / DP4, features 4·(e % DP4) ..;
// neighbouring invocations read neighbouring vec4s of a row: coalesced) and stages them
// in workgroup memory; invocation (r, j) = (t / T, t % T) computes score (r, j) into the
// key-major `ws` (key j's R rows are RQ = R / 4 vec4s). Or, where the host splits the dot
// products (SPLIT_DOT), invocation (f, j) computes part f of the features (FC vec4s) of
// key j for all R rows, reading each staged K vec4 once instead of R times, into the
// partial-score block f of `ws`; the V invocations sum the R partials, scale and mask. V: invocation t = (vg, vc) =
// (t / CW, t % CW) loads columns 4·vc .. 4·vc + 3 of keys vg + KG·i (one vec4 each,
// neighbouring invocations contiguous) and accumulates them for all R rows in registers.
// The online softmax (in f32) runs per key group: key group vg keeps its own running max
// m and sum l per row over its keys, read from `ws` as vec4s (four rows each), so a tile
// costs two workgroup barriers (K staged; scores written) and no loop over the tile's
// keys. At the end the KG key groups are combined by the log-sum-exp rule through
// workgroup memory (`wml`: each group's m and l; the accumulators through `wk`, free
// after the last tile, RPR rows at a time), and each workgroup writes its unnormalised
// partial (m, l, O) per row; attention_merge.wgsl combines the splits. Masking, NaN and
// −∞ follow attention_flash.wgsl: masked keys contribute nothing (even an ∞ or NaN
// value), a running max of −∞ subtracts 0. The running max is a plain `max`: a NaN score
// need not win it, since its probability exp(NaN − m) is NaN anyway and turns the row's
// sum and output NaN, as in the reference.
struct Params {
    groups: u32, hq: u32, hkv: u32, group: u32, sq: u32, skv: u32, scale: f32, causal: u32,
    splits: u32, chunk: u32, hblocks: u32, ml_base: u32,
    q_off: u32, q_sb: u32, q_sh: u32, q_ss: u32, q_sd: u32,
    k_off: u32, k_sb: u32, k_sh: u32, k_ss: u32, k_sd: u32,
    v_off: u32, v_sb: u32, v_sh: u32, v_ss: u32, v_sd: u32,
}
//!BINDINGS
const D: u32 = {{D}}u;
const DV: u32 = {{DV}}u;
const R: u32 = {{R}}u;
const RQ: u32 = {{RQ}}u;
const T: u32 = {{T}}u;
const WG: u32 = {{WG}}u;
// Staged Q and K rows as vec4s: DP4 = ⌈D/4⌉ of them hold the features (zero-filled past
// D), and the row stride SD4 is DP4 made odd, so neighbouring rows hit distinct banks.
const DP4: u32 = {{DP4}}u;
const SD4: u32 = {{SD4}}u;
// V: CV = ⌈DV/4⌉ vec4 columns, CW ≥ CV invocations per key group, KG = WG / CW groups.
const CV: u32 = {{CV}}u;
const CW: u32 = {{CW}}u;
const KG: u32 = {{KG}}u;

var<workgroup> wq: array<vec4<f32>, {{WQ_LEN}}>;
var<workgroup> wk: array<vec4<f32>, {{WK_LEN}}>;
var<workgroup> ws: array<vec4<f32>, {{WS_LEN}}>;
// Per key group u: its running max (vec4s u·RQ ..) and sum (vec4s (KG + u)·RQ ..).
var<workgroup> wml: array<vec4<f32>, {{WML_LEN}}>;
{{WO_DECL}}

fn visible(i: u32) -> u32 {
    if (P.causal == 0u) { return P.skv; }
    return min(select(0u, i + 1u + P.skv - P.sq, i + 1u + P.skv > P.sq), P.skv);
}

fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}

// m, or 0 where m is −∞: the reference a running max subtracts.
fn ref4(m: vec4<f32>) -> vec4<f32> {
    return select(m, vec4<f32>(0.0), bitcast<vec4<u32>>(m) == vec4<u32>(0xff800000u));
}

{{KV_FNS}}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let split = g % P.splits;
    let rest = g / P.splits;
    let hb = rest % P.hblocks;
    let bk = rest / P.hblocks;
    let kvh = bk % P.hkv;
    let b = bk / P.hkv;
    let rows = P.group * P.sq;
    // Visible keys per row (vis_r, unrolled by attention.rs); rows past the group see
    // every key (they are not written).
    var vis_min = P.skv;
{{ROWS}}
    let kbase = P.k_off + b * P.k_sb + kvh * P.k_sh;
    let vbase = P.v_off + b * P.v_sb + kvh * P.v_sh;
    let k_lo = split * P.chunk;
    let k_hi = min(k_lo + P.chunk, P.skv);
    // Score invocation: row pr, key pj of the tile.
    let pr = t / T;
    let pj = t % T;
    // V invocation: key group vg, vec4 column vc.
    let vg = t / CW;
    let vc = t % CW;
    var p_vis = P.skv;
    if (hb * R + pr < rows) { p_vis = visible((hb * R + pr) % P.sq); }
    // The key group's running max and sum of rows 4q .. 4q + 3 (m{q}, l{q}).
{{ML_DECL}}
    var acc: array<vec4<f32>, {{R}}>;
    // The first tile's K and V (zero past the split).
    var t1 = k_lo;
{{KV_DECL}}
{{PRO_LOAD}}
    // Q, loads first (in flight with the first tile's), then the stores.
{{Q_STAGE}}
    for (var t0 = k_lo; t0 < k_hi; t0 = t0 + T) {
        let cnt = min(T, k_hi - t0);
        // Stage this tile's K, keep its V, and start loading the next tile's. The
        // previous tile's readers of wk and ws have all passed the barrier after the
        // scores (wk) or read ws before this tile's first barrier.
{{K_STORE}}
{{V_KEEP}}
        t1 = t0 + T;
{{NEXT_LOAD}}
        workgroupBarrier();
{{SCORES}}
        workgroupBarrier();
        // The key group's scores of this tile, its new running max, the rescale of its
        // sums and accumulators, then the probabilities.
{{SOFTMAX}}
        // Keys past the split have zero V and probability; only a key some row does not
        // see needs the mask (its V may be ∞ or NaN).
        if (t0 + cnt <= vis_min) {
{{PV_FULL}}
        } else {
{{PV_MASKED}}
        }
    }
    // Combine the key groups (log-sum-exp rule) and write the partials.
{{STORE}}
}
