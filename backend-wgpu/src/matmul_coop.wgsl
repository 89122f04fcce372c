// matmul_coop.wgsl: batched C = act(A·B + bias) for f16 operands on cooperative
// matrices (tensor cores), accumulating in f32. A workgroup of 8 subgroups of SG lanes
// computes one BM × BN = 128 × 128 block of C; the subgroups form a 2 × 4 grid and each
// owns a 64 × 32 part, i.e. FM × FN = 4 × 2 fragments of 16 × 16 f32 accumulators
// (`c<i><j>`). K is walked BK = 32 at a time: both operands are staged as f16 into
// workgroup memory in their own layout (rows along the operand's contiguous axis, padded
// by 8 halves so that the 16-byte rows a fragment load reads fall in distinct banks), then
// each subgroup loads its A and B fragments from there (row-major `coopLoadT` or
// column-major `coopLoad`, whichever reads the staged layout) and multiplies them in two
// 16-deep steps. At the end each fragment goes through a per-subgroup 16 × 16 f32 patch
// of workgroup memory, from which the subgroup's lanes apply the epilogue (bounds, bias,
// activation) and store to the f32 output. Ragged edges: staging writes zeros outside
// the matrix, the epilogue stores only inside it. matmul.rs generates the unrolled parts
// and says which bounds the host guarantees.
struct Params {
    groups: u32, m: u32, n: u32, k: u32,
    a_rs: u32, a_cs: u32, b_rs: u32, b_cs: u32,
    bias_off: u32, bias_stride: u32, tiles_m: u32, tiles_n: u32,
}
//!BINDINGS
// 0 none, 1 relu, 2 gelu (erf form), 3 silu.
const ACT: u32 = {{ACT}}u;
const HAS_BIAS: u32 = {{BIAS}}u;
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 32u;
// Lanes per subgroup (the adapter's fixed subgroup size) and invocations per workgroup.
const SG: u32 = {{SG}}u;
const THREADS: u32 = 8u * {{SG}}u;
// Row strides (in halves) of the staged tiles.
const SA: u32 = {{SA}}u;
const SB: u32 = {{SB}}u;

var<workgroup> ta: array<f16, {{TA_LEN}}>;
var<workgroup> tb: array<f16, {{TB_LEN}}>;
// One 16 × 16 f32 patch per subgroup for the write-back.
var<workgroup> tc: array<f32, 2048>;

{{EPILOGUE}}

{{STAGE_A}}

{{STAGE_B}}

{{BLOCK}}

// Stores the patch of subgroup `s` (rows row0.., columns col0..), if `live`: lane l takes the
// elements l, l + SG, ... of the row-major 16 × 16 patch, so each pass writes whole
// 16-column row segments.
fn store_patch(live: bool, batch: u32, row0: u32, col0: u32, s: u32, lane: u32) {
    for (var e = lane; live && e < 256u; e = e + SG) {
        store(batch, row0 + e / 16u, col0 + e % 16u, tc[s * 256u + e]);
    }
}

@compute @workgroup_size({{THREADS}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32,
        @builtin(subgroup_id) sgid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    // Groups past the grid (folding) redo the last group and store nothing: an early
    // return would leave the cooperative operations below in non-uniform control flow.
    let live = group_index(wid, nwg) < P.groups;
    let g = min(group_index(wid, nwg), P.groups - 1u);
    let blk = block_at(g);
    let batch = blk.batch;
    let m0 = blk.m0;
    let n0 = blk.n0;
    let a0 = blk.a0;
    let b0 = blk.b0;
    // The subgroup's part of the block: rows sm .. sm + 63, columns sn .. sn + 31.
    let sm = (sgid / 4u) * 64u;
    let sn = (sgid % 4u) * 32u;
{{INIT}}
    for (var k0 = 0u; k0 < P.k; k0 = k0 + BK) {
        stage_a(a0, m0, k0, P.a_rs, P.a_cs, P.m, t);
        stage_b(b0, n0, k0, P.b_cs, P.b_rs, P.n, t);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 16u) {
{{MMA}}
        }
        workgroupBarrier();
    }
{{WRITE}}
}
