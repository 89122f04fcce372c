// matmul_splitk.wgsl: the second pass of a split-K matmul (matmul.rs). The first pass
// wrote SPLITS partial products per batch, `part[((batch · SPLITS + s) · M + row) · N +
// col]`, each over its own range of K; this pass sums them in the order s = 0, 1, ...
// (so results do not depend on scheduling), then adds the bias, applies the activation
// and writes `out[(batch · M + row) · N + col]`. One output per invocation.
struct Params {
    groups: u32, len: u32, mn: u32, n: u32, splits: u32, bias_off: u32, bias_stride: u32,
}
//!BINDINGS
// 0 none, 1 relu, 2 gelu (erf form), 3 silu.
const ACT: u32 = {{ACT}}u;
const HAS_BIAS: u32 = {{BIAS}}u;

{{EPILOGUE}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let i = g * 256u + lid.x;
    if (i >= P.len) { return; }
    let batch = i / P.mn;
    let r = i % P.mn;
    let first = batch * P.splits * P.mn + r;
    var v = 0.0;
    for (var s = 0u; s < P.splits; s = s + 1u) {
        v = v + load_part(first + s * P.mn);
    }
    if (HAS_BIAS == 1u) { v = v + load_bias(P.bias_off + (r % P.n) * P.bias_stride); }
    out[i] = activate(v);
}
