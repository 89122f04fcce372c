// common.wgsl: code shared by every xkern kernel (prepended by pipelines.rs).
//
// NaN is tested on the bits, not with `x != x`, which shader compilers may fold away.
// The f16/bf16 conversions are integer code, exact round-to-nearest-even with denormals,
// so casts do not depend on the GPU's float conversion or flush-to-zero modes.

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn is_inf(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}

fn nan_f32() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn neg_inf_f32() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// max that propagates NaN.
fn nan_max(a: f32, b: f32) -> f32 {
    if (is_nan(a)) { return a; }
    if (is_nan(b)) { return b; }
    return select(b, a, a > b);
}

// min that propagates NaN.
fn nan_min(a: f32, b: f32) -> f32 {
    if (is_nan(a)) { return a; }
    if (is_nan(b)) { return b; }
    return select(b, a, a < b);
}

// 16-bit element `i` of the word `w` holding elements 2k (low half) and 2k + 1.
fn half_bits(w: u32, i: u32) -> u32 {
    return select(w & 0xffffu, w >> 16u, (i & 1u) == 1u);
}

fn f16_bits_to_f32_bits(h: u32) -> u32 {
    let s = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        if (m == 0u) { return s; }
        var mm = m;
        var ee = 113u;
        loop {
            if ((mm & 0x400u) != 0u) { break; }
            mm = mm << 1u;
            ee = ee - 1u;
        }
        return s | (ee << 23u) | ((mm & 0x3ffu) << 13u);
    }
    if (e == 31u) { return s | 0x7f800000u | (m << 13u); }
    return s | ((e + 112u) << 23u) | (m << 13u);
}

fn f32_bits_to_f16_bits(x: u32) -> u32 {
    let s = (x >> 16u) & 0x8000u;
    let e = (x >> 23u) & 0xffu;
    let m = x & 0x7fffffu;
    if (e == 255u) {
        if (m != 0u) { return s | 0x7e00u | (m >> 13u); }
        return s | 0x7c00u;
    }
    let ee = i32(e) - 112;
    if (ee >= 31) { return s | 0x7c00u; }
    if (ee <= 0) {
        if (ee < -10) { return s; }
        let mm = m | 0x800000u;
        let shift = u32(14 - ee);
        var r = mm >> shift;
        let rem = mm & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u) == 1u)) { r = r + 1u; }
        return s | r;
    }
    var r = (u32(ee) << 10u) | (m >> 13u);
    let rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) == 1u)) { r = r + 1u; }
    return s | r;
}

fn f32_bits_to_bf16_bits(x: u32) -> u32 {
    if ((x & 0x7fffffffu) > 0x7f800000u) { return (x >> 16u) | 0x40u; }
    return (x + 0x7fffu + ((x >> 16u) & 1u)) >> 16u;
}

// The linear index of this workgroup in a grid of G groups folded into up to three
// dimensions of at most `limit` each (x fastest); groups with index >= G exit at once.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// Reductions shared by reduce.wgsl, normalize.wgsl and the trees (tree*.wgsl).
const NONE: u32 = 0xffffffffu;

// A (value, index) candidate of argmax/argmin; index NONE is no candidate.
struct Arg { v: f32, i: u32 }

// op: 0 add, 1 max (NaN wins), 2 min (NaN wins).
fn op_combine(a: f32, b: f32, op: u32) -> f32 {
    if (op == 1u) { return nan_max(a, b); }
    if (op == 2u) { return nan_min(a, b); }
    return a + b;
}

// The identity of op_combine's op: 0 for add, −∞ for max, +∞ for min.
fn op_identity(op: u32) -> f32 {
    if (op == 1u) { return neg_inf_f32(); }
    if (op == 2u) { return -neg_inf_f32(); }
    return 0.0;
}

// True when (va, ia) should win over (vb, ib) for argmax (want_max) or argmin: NaN
// first, then the better value, then the lower index, so ties and NaN go to the first
// index.
fn arg_better(va: f32, ia: u32, vb: f32, ib: u32, want_max: bool) -> bool {
    if (ia == NONE) { return false; }
    if (ib == NONE) { return true; }
    let na = is_nan(va);
    let nb = is_nan(vb);
    if (na || nb) {
        if (na && nb) { return ia < ib; }
        return na;
    }
    if (want_max && va > vb) { return true; }
    if (!want_max && va < vb) { return true; }
    if (va == vb) { return ia < ib; }
    return false;
}
