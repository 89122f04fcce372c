// tree_subgroup.wgsl: the same workgroup-wide reductions as tree.wgsl, on subgroup
// shuffles (adapters with the SUBGROUP feature and subgroups of at most WG lanes, WG
// being the including kernel's workgroup size).
// Three workgroup barriers instead of eight, and no assumption on how invocations map to
// subgroups:
//   1. each subgroup combines its lanes with an XOR butterfly (log2 size shuffles);
//      a butterfly gives every lane the same value, since a + b == b + a bit for bit;
//   2. every invocation writes the identity to sv[lid]; after a barrier each subgroup's
//      lane 0 writes the subgroup's value at its own lid: slots are unique and fixed;
//   3. after a barrier, each subgroup folds all WG slots, lane s taking the slots
//      s, s + size, ... in order, then a second butterfly: every subgroup computes the
//      same value, so no third round of workgroup memory is needed.
// The order of operations depends only on the subgroup size and the lane mapping, which
// are fixed for one pipeline on one adapter, so results repeat run to run.

var<workgroup> sv: array<f32, WG>;
var<workgroup> si: array<u32, WG>;
var<private> sg_lane: u32;
var<private> sg_size: u32;

fn butterfly(v: f32, op: u32) -> f32 {
    var x = v;
    for (var o = sg_size / 2u; o > 0u; o = o / 2u) {
        x = op_combine(x, subgroupShuffleXor(x, o), op);
    }
    return x;
}

fn tree_op(lid: u32, v: f32, op: u32) -> f32 {
    let mine = butterfly(v, op);
    sv[lid] = op_identity(op);
    workgroupBarrier();
    if (sg_lane == 0u) { sv[lid] = mine; }
    workgroupBarrier();
    var acc = op_identity(op);
    for (var k = sg_lane; k < WG; k = k + sg_size) {
        acc = op_combine(acc, sv[k], op);
    }
    let r = butterfly(acc, op);
    workgroupBarrier();
    return r;
}

fn butterfly_arg(v: f32, i: u32, want_max: bool) -> Arg {
    var bv = v;
    var bi = i;
    for (var o = sg_size / 2u; o > 0u; o = o / 2u) {
        let ov = subgroupShuffleXor(bv, o);
        let oi = subgroupShuffleXor(bi, o);
        if (arg_better(ov, oi, bv, bi, want_max)) {
            bv = ov;
            bi = oi;
        }
    }
    return Arg(bv, bi);
}

fn tree_arg(lid: u32, v: f32, i: u32, want_max: bool) -> Arg {
    let mine = butterfly_arg(v, i, want_max);
    si[lid] = NONE;
    workgroupBarrier();
    if (sg_lane == 0u) {
        sv[lid] = mine.v;
        si[lid] = mine.i;
    }
    workgroupBarrier();
    var bv = 0.0;
    var bi = NONE;
    for (var k = sg_lane; k < WG; k = k + sg_size) {
        if (arg_better(sv[k], si[k], bv, bi, want_max)) {
            bv = sv[k];
            bi = si[k];
        }
    }
    let r = butterfly_arg(bv, bi, want_max);
    workgroupBarrier();
    return r;
}
