// Stages the BK × {{X}} tile of operand {{op}} whose corner is (x0, k0) into workgroup
// memory t{{op}}, k-major (t{{op}}[k·{{S}} + x]), with zeros outside the matrix (x ≥ xlen
// or k ≥ K), so ragged edges need no test in the micro-kernel. Element (x, k) lies at
// base + x·xs + k·ks. Invocation t loads along the operand's contiguous axis (K when
// {{op}}_K, else x) so that neighbouring invocations read neighbouring addresses; with
// {{op}}_VEC each load is one vector of four (the host guarantees alignment and that a
// vector lies wholly inside or wholly outside the matrix).
const {{op}}_K: bool = {{KCONT}};
const {{op}}_VEC: bool = {{VEC}};
fn stage_{{op}}(base: u32, x0: u32, k0: u32, xs: u32, ks: u32, xlen: u32, t: u32) {
    if ({{op}}_VEC) {
        for (var r = 0u; r < {{X}}u * BK / 4u / THREADS; r = r + 1u) {
            let q = r * THREADS + t;
            var x: u32;
            var k: u32;
            if ({{op}}_K) {
                x = q / (BK / 4u);
                k = (q % (BK / 4u)) * 4u;
            } else {
                k = q / ({{X}}u / 4u);
                x = (q % ({{X}}u / 4u)) * 4u;
            }
            let gx = x0 + x;
            let gk = k0 + k;
            var v = vec4<f32>(0.0);
            if (gx < xlen && gk < P.k) { v = load4_{{op}}((base + gx * xs + gk * ks) / 4u); }
            if ({{op}}_K) {
                t{{op}}[k * {{S}}u + x] = v.x;
                t{{op}}[(k + 1u) * {{S}}u + x] = v.y;
                t{{op}}[(k + 2u) * {{S}}u + x] = v.z;
                t{{op}}[(k + 3u) * {{S}}u + x] = v.w;
            } else {
                t{{op}}[k * {{S}}u + x] = v.x;
                t{{op}}[k * {{S}}u + x + 1u] = v.y;
                t{{op}}[k * {{S}}u + x + 2u] = v.z;
                t{{op}}[k * {{S}}u + x + 3u] = v.w;
            }
        }
    } else {
        for (var r = 0u; r < {{X}}u * BK / THREADS; r = r + 1u) {
            let q = r * THREADS + t;
            var x: u32;
            var k: u32;
            if ({{op}}_K) {
                x = q / BK;
                k = q % BK;
            } else {
                k = q / {{X}}u;
                x = q % {{X}}u;
            }
            let gx = x0 + x;
            let gk = k0 + k;
            var v = 0.0;
            if (gx < xlen && gk < P.k) { v = load_{{op}}(base + gx * xs + gk * ks); }
            t{{op}}[k * {{S}}u + x] = v;
        }
    }
}
