// cast.wgsl: dtype conversion of a contiguous range, bit-exact round-to-nearest-even.
// One invocation per output element for 32-bit outputs, per output word (two elements)
// for 16-bit outputs, so no two invocations write one word.
struct Params { groups: u32, offset: u32, len: u32 }
//!BINDINGS
// 0 = raw 32-bit words (f32 or u32 copied as is), 1 = f16, 2 = bf16, 3 = u32 to float.
const FROM: u32 = {{FROM}}u;
// 0 = 32-bit output, 1 = f16, 2 = bf16.
const TO: u32 = {{TO}}u;
const WG: u32 = 256u;

// The f32 bits of source element i (raw bits when FROM == 0).
fn src_bits(i: u32) -> u32 {
    let j = P.offset + i;
    if (FROM == 0u) { return src[j]; }
    if (FROM == 3u) { return bitcast<u32>(f32(src[j])); }
    let h = half_bits(src[j >> 1u], j);
    if (FROM == 1u) { return f16_bits_to_f32_bits(h); }
    return h << 16u;
}

fn encode(bits: u32) -> u32 {
    if (TO == 1u) { return f32_bits_to_f16_bits(bits); }
    return f32_bits_to_bf16_bits(bits);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let t = g * WG + lid;
    if (TO == 0u) {
        if (t >= P.len) { return; }
        dst[t] = src_bits(t);
    } else {
        let i = 2u * t;
        if (i >= P.len) { return; }
        var w = encode(src_bits(i));
        if (i + 1u < P.len) { w = w | (encode(src_bits(i + 1u)) << 16u); }
        dst[t] = w;
    }
}
