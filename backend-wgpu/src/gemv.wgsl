// gemv.wgsl: batched matrix-vector product y = act(W·x + bias), the matmul of M = 1
// (x = the row of A, W = B) and of N = 1 (x = the column of B, W = Aᵀ). W's element
// (k, j) lies at w0 + k·w_ks + j·w_js, x's element k at x0 + k·x_s; per-batch (x0, w0)
// pairs come from `offs`. One workgroup of 64 × 4 invocations per block of outputs, W
// read once, along its contiguous axis:
//   DOT (W contiguous along k: each output is a dot product of contiguous runs, as for
//       x @ Wᵀ with W row-major [N, K]): 4 outputs per workgroup, 64 lanes each striding
//       K, then a tree over the lanes in workgroup memory;
//   column (W contiguous along j, as for x @ W with W row-major [K, N]): 64 outputs per
//       workgroup, one per invocation column, K split into 4 interleaved slices whose
//       partial sums are added in a fixed order.
// Both orders are fixed, so results repeat run to run.
struct Params {
    groups: u32, j: u32, k: u32, x_s: u32, w_ks: u32, w_js: u32,
    bias_off: u32, bias_stride: u32, blocks: u32,
}
//!BINDINGS
// 0 none, 1 relu, 2 gelu (erf form), 3 silu.
const ACT: u32 = {{ACT}}u;
const HAS_BIAS: u32 = {{BIAS}}u;
const DOT: bool = {{DOT}};

var<workgroup> red: array<f32, 256>;

{{EPILOGUE}}

@compute @workgroup_size(64, 4)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let blk = g % P.blocks;
    let batch = g / P.blocks;
    let x0 = offs[2u * batch];
    let w0 = offs[2u * batch + 1u];
    var j: u32;
    var lane: u32;
    var lanes: u32;
    if (DOT) {
        j = blk * 4u + lid.y;
        lane = lid.x;
        lanes = 64u;
    } else {
        j = blk * 64u + lid.x;
        lane = lid.y;
        lanes = 4u;
    }
    var s = 0.0;
    if (j < P.j) {
        let wj = w0 + j * P.w_js;
        for (var k = lane; k < P.k; k = k + lanes) {
            s = fma(load_x(x0 + k * P.x_s), load_w(wj + k * P.w_ks), s);
        }
    }
    red[lid.y * 64u + lid.x] = s;
    workgroupBarrier();
    if (DOT) {
        for (var h = 32u; h > 0u; h = h >> 1u) {
            if (lid.x < h) { red[lid.y * 64u + lid.x] += red[lid.y * 64u + lid.x + h]; }
            workgroupBarrier();
        }
        s = red[lid.y * 64u];
    } else {
        s = ((red[lid.x] + red[64u + lid.x]) + red[128u + lid.x]) + red[192u + lid.x];
    }
    if (j < P.j && lane == 0u) {
        var v = s;
        if (HAS_BIAS == 1u) { v = v + load_bias(P.bias_off + j * P.bias_stride); }
        out[batch * P.j + j] = activate(v);
    }
}
