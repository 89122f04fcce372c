// tree.wgsl: workgroup-wide reductions of one value per invocation, on every adapter
// (appended to reduce.wgsl and normalize.wgsl when subgroups are off or not offered).
// Every invocation of the WG (the including kernel's workgroup size, a power of two)
// calls them in uniform control flow and reads the result.
// op: 0 add, 1 max (NaN wins), 2 min (NaN wins). Fixed pairing, so the result depends
// only on the inputs: a log2(WG) level tree in workgroup memory (7 at 128).

var<workgroup> sv: array<f32, WG>;
var<workgroup> si: array<u32, WG>;

fn tree_op(lid: u32, v: f32, op: u32) -> f32 {
    sv[lid] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st / 2u) {
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
    for (var st = WG / 2u; st > 0u; st = st / 2u) {
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
