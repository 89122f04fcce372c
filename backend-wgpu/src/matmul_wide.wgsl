// matmul_wide.wgsl: batched C = act(A·B + bias), the large-block register-tiled kernel
// (128 × 128 or 128 × 64 blocks; matmul.rs chooses it for large products). Each
// workgroup of WX × WY invocations computes one BM × BN block of C; each invocation a
// TM × TN micro-tile in registers (`acc`) made of 4 × 4 squares: rows ty·4 + r + 4·WY·i
// and columns tx·4 + c + 4·WX·j, so that every operand fragment the micro-kernel needs is
// one aligned `vec4` of workgroup memory. K is walked BK at a time: both operands are
// staged k-major in workgroup memory as vec4 words (`ta[(k·SA + m) / 4]`, `tb[(k·SB +
// n) / 4]`), and the next k-step's global values are fetched into registers (`pa`, `pb`)
// before the current step's arithmetic, so global latency hides behind it. The fetch,
// the stores into workgroup memory, the BK-step micro-kernel and the write-back are
// unrolled by matmul.rs with every constant baked in (FETCH, PUT, MICRO, WRITE); its
// module doc says why these sizes, and which bounds the host guarantees.
struct Params {
    groups: u32, m: u32, n: u32, k: u32,
    a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32,
    bias_off: u32, bias_stride: u32, tiles_m: u32, tiles_n: u32,
}
//!BINDINGS
// 0 none, 1 relu, 2 gelu (erf form), 3 silu.
const ACT: u32 = {{ACT}}u;
const HAS_BIAS: u32 = {{BIAS}}u;
const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;
// Invocations along n and along m.
const WX: u32 = {{WX}}u;
const WY: u32 = {{WY}}u;
const THREADS: u32 = {{WX}}u * {{WY}}u;

var<workgroup> ta: array<vec4<f32>, {{TA4}}>;
var<workgroup> tb: array<vec4<f32>, {{TB4}}>;

{{EPILOGUE}}

{{STAGE_A}}

{{STAGE_B}}

{{BLOCK}}

@compute @workgroup_size({{WX}}, {{WY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wid, nwg);
    if (g >= P.groups) { return; }
    let blk = block_at(g);
    let batch = blk.batch;
    let m0 = blk.m0;
    let n0 = blk.n0;
    let a0 = blk.a0;
    let b0 = blk.b0;
    let t = lid.y * WX + lid.x;
    let tx = lid.x;
    let ty = lid.y;
    var acc: array<f32, {{TM_TN}}>;
    var pa: array<vec4<f32>, {{RA}}>;
    var pb: array<vec4<f32>, {{RB}}>;
    {
        let kf = 0u;
{{FETCH}}
    }
    for (var k0 = 0u; k0 < P.k; k0 = k0 + BK) {
        // Every invocation is done reading the previous step's tiles.
        workgroupBarrier();
{{PUT}}
        workgroupBarrier();
        let kf = k0 + BK;
        if (kf < P.k) {
{{FETCH}}
        }
{{MICRO}}
    }
    let row = m0 + ty * 4u;
    let col = n0 + tx * 4u;
{{WRITE}}
}
