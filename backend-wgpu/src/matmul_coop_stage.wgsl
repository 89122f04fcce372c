// Stages the {{X}} × BK tile of operand {{op}} whose corner is (x0, k0) into t{{op}} as
// f16, in the operand's own layout: contiguous along K ({{op}}_K), element (x, k) goes to
// t{{op}}[x·{{S}} + k], else to t{{op}}[k·{{S}} + x]; zeros outside the matrix (x ≥ xlen
// or k ≥ K). Element (x, k) lies at base + x·xs + k·ks. Invocation t reads PER
// consecutive elements along the contiguous axis (one vec4 load when PER is 4; the host
// guarantees alignment and that a vector lies wholly inside or wholly outside the matrix),
// so neighbouring invocations read neighbouring addresses and write neighbouring halves.
const {{op}}_K: bool = {{KCONT}};
fn stage_{{op}}(base: u32, x0: u32, k0: u32, xs: u32, ks: u32, xlen: u32, t: u32) {
    // Elements per load, and loads per staged row.
    let per = {{PER}}u;
    let row_loads = {{C}}u / per;
    for (var r = 0u; r < {{X}}u * BK / per / THREADS; r = r + 1u) {
        let q = r * THREADS + t;
        let o = q / row_loads;
        let c = (q % row_loads) * per;
        var x = c;
        var k = o;
        if ({{op}}_K) {
            x = o;
            k = c;
        }
        let gx = x0 + x;
        let gk = k0 + k;
        let at = o * {{S}}u + c;
        let inside = gx < xlen && gk < P.k;
        let gi = base + gx * xs + gk * ks;
{{BODY}}
    }
}
