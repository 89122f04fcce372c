// strided.wgsl: gathers a strided view into a contiguous buffer, bit for bit.
// view_meta holds the view's shape (rank words) then its strides (rank words), in elements.
// 16-bit dtypes: one invocation per output word (two elements).
struct Params { groups: u32, len: u32, rank: u32, offset: u32 }
//!BINDINGS
// 1 = 32-bit elements, 0 = 16-bit elements.
const WIDE: u32 = {{WIDE}}u;
const WG: u32 = 256u;

fn src_index(i: u32) -> u32 {
    var rem = i;
    var off = P.offset;
    var d = P.rank;
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let n = view_meta[d];
        off = off + (rem % n) * view_meta[P.rank + d];
        rem = rem / n;
    }
    return off;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let t = g * WG + lid;
    if (WIDE == 1u) {
        if (t >= P.len) { return; }
        dst[t] = src[src_index(t)];
    } else {
        let i = 2u * t;
        if (i >= P.len) { return; }
        let a = src_index(i);
        var w = half_bits(src[a >> 1u], a);
        if (i + 1u < P.len) {
            let b = src_index(i + 1u);
            w = w | (half_bits(src[b >> 1u], b) << 16u);
        }
        dst[t] = w;
    }
}
