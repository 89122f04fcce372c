// matmul.wgsl: batched C = act(A·B + bias), the general strided kernel (the fallback of
// matmul.rs for operands with no unit stride): 16×16 output tile per workgroup, one output
// per invocation, A and B staged through workgroup memory 16 columns of K at a time.
// Operands are read through (offset, row stride, col stride) views, so transposed inputs
// need no copy; per-batch offsets come from `offs` (a, b pairs computed on the host).
struct Params {
    groups: u32, m: u32, n: u32, k: u32,
    a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32,
    bias_off: u32, bias_stride: u32, tiles_m: u32, tiles_n: u32,
}
//!BINDINGS
// 0 none, 1 relu, 2 gelu (erf form), 3 silu.
const ACT: u32 = {{ACT}}u;
const HAS_BIAS: u32 = {{BIAS}}u;
const T: u32 = 16u;

var<workgroup> ta: array<f32, 256>;
var<workgroup> tb: array<f32, 256>;

{{EPILOGUE}}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let tn = g % P.tiles_n;
    let rest = g / P.tiles_n;
    let tm = rest % P.tiles_m;
    let batch = rest / P.tiles_m;
    let row = tm * T + lid.y;
    let col = tn * T + lid.x;
    let a0 = offs[2u * batch];
    let b0 = offs[2u * batch + 1u];
    var acc = 0.0;
    for (var k0 = 0u; k0 < P.k; k0 = k0 + T) {
        let ka = k0 + lid.x;
        var va = 0.0;
        if (row < P.m && ka < P.k) { va = load_a(a0 + row * P.a_rs + ka * P.a_cs); }
        ta[lid.y * T + lid.x] = va;
        let kb = k0 + lid.y;
        var vb = 0.0;
        if (kb < P.k && col < P.n) { vb = load_b(b0 + kb * P.b_rs + col * P.b_cs); }
        tb[lid.y * T + lid.x] = vb;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk = kk + 1u) {
            acc = acc + ta[lid.y * T + kk] * tb[kk * T + lid.x];
        }
        workgroupBarrier();
    }
    if (row < P.m && col < P.n) {
        var v = acc;
        if (HAS_BIAS == 1u) { v = v + load_bias(P.bias_off + col * P.bias_stride); }
        out[(batch * P.m + row) * P.n + col] = activate(v);
    }
}
