// tree.wgsl: workgroup-wide reductions of one value per invocation, on every adapter
// (appended to reduce.wgsl and normalize.wgsl when subgroups are off or not offered).
// Every invocation of the 128 calls them in uniform control flow and reads the result.
// op: 0 add, 1 max (NaN wins), 2 min (NaN wins). Fixed pairing, so the result depends
// only on the inputs: a log2(128) = 7 level tree in workgroup memory.

var<workgroup> sv: array<f32, 128>;
var<workgroup> si: array<u32, 128>;

fn tree_op(lid: u32, v: f32, op: u32) -> f32 {
    sv[lid] = v;
    workgroupBarrier();
    for (var st = 64u; st > 0u; st = st / 2u) {
        if (lid < st) { sv[lid] = op_combine(sv[lid], sv[lid + st], op); }
        workgroupBarrier();
    }
    let r = sv[0];
    workgroupBarrier();
    return r;
}

// The best (value, index) candidate of the workgroup under arg_better (argmax when
// want_max, else argmin).
fn tree_arg(lid: u32, v: f32, i: u32, want_max: bool) -> Arg {
    sv[lid] = v;
    si[lid] = i;
    workgroupBarrier();
    for (var st = 64u; st > 0u; st = st / 2u) {
        if (lid < st && arg_better(sv[lid + st], si[lid + st], sv[lid], si[lid], want_max)) {
            sv[lid] = sv[lid + st];
            si[lid] = si[lid + st];
        }
        workgroupBarrier();
    }
    let r = Arg(sv[0], si[0]);
    workgroupBarrier();
    return r;
}
