// Staging of operand {{op}} for matmul_wide.wgsl: the BK × {{X}} tile whose corner is
// (x0, kf) goes k-major into workgroup memory t{{op}} (word k·{{S}} + x of the vec4
// array), with zeros outside the matrix (x ≥ xlen or k ≥ K), so ragged edges need no test
// in the micro-kernel. Element (x, k) lies at base + x·xs + k·ks. Register slot r of
// invocation t holds four values: with {{op}}_VEC one vector load (pass q = r·THREADS +
// t; the host guarantees alignment and that a vector lies wholly inside or wholly outside
// the matrix), else four scalar loads (passes q = (4r + c)·THREADS + t). Passes run along
// the operand's contiguous axis (K when {{op}}_K, else x) so that neighbouring invocations
// read neighbouring addresses. `r` is a constant at every call (matmul.rs unrolls them).
const {{op}}_K: bool = {{KCONT}};
const {{op}}_VEC: bool = {{VEC}};
// Row stride of t{{op}} in words (a multiple of 4).
const S_{{op}}: u32 = {{S}}u;

// Tile coordinates (x, k) of pass q.
fn at_{{op}}(q: u32) -> vec2<u32> {
    if ({{op}}_VEC) {
        if ({{op}}_K) { return vec2<u32>(q / (BK / 4u), (q % (BK / 4u)) * 4u); }
        return vec2<u32>((q % ({{X}}u / 4u)) * 4u, q / ({{X}}u / 4u));
    }
    if ({{op}}_K) { return vec2<u32>(q / BK, q % BK); }
    return vec2<u32>(q % {{X}}u, q / {{X}}u);
}

fn fetch1_{{op}}(base: u32, x0: u32, kf: u32, xs: u32, ks: u32, xlen: u32, q: u32) -> f32 {
    let p = at_{{op}}(q);
    let gx = x0 + p.x;
    let gk = kf + p.y;
    var v = 0.0;
    if (gx < xlen && gk < P.k) { v = load_{{op}}(base + gx * xs + gk * ks); }
    return v;
}

fn fetch_{{op}}(base: u32, x0: u32, kf: u32, xs: u32, ks: u32, xlen: u32, t: u32, r: u32) -> vec4<f32> {
    if ({{op}}_VEC) {
        let p = at_{{op}}(r * THREADS + t);
        let gx = x0 + p.x;
        let gk = kf + p.y;
        var v = vec4<f32>(0.0);
        if (gx < xlen && gk < P.k) { v = load4_{{op}}((base + gx * xs + gk * ks) / 4u); }
        return v;
    }
    let q = 4u * r * THREADS + t;
    return vec4<f32>(fetch1_{{op}}(base, x0, kf, xs, ks, xlen, q),
        fetch1_{{op}}(base, x0, kf, xs, ks, xlen, q + THREADS),
        fetch1_{{op}}(base, x0, kf, xs, ks, xlen, q + 2u * THREADS),
        fetch1_{{op}}(base, x0, kf, xs, ks, xlen, q + 3u * THREADS));
}

fn put1_{{op}}(q: u32, v: f32) {
    let p = at_{{op}}(q);
    t{{op}}[p.y * (S_{{op}} / 4u) + p.x / 4u][p.x & 3u] = v;
}

fn put_{{op}}(t: u32, r: u32, v: vec4<f32>) {
    if ({{op}}_VEC) {
        let p = at_{{op}}(r * THREADS + t);
        let i = p.y * (S_{{op}} / 4u) + p.x / 4u;
        if ({{op}}_K) {
            // Four consecutive k of one x: one word in each of four rows.
            let c = p.x & 3u;
            t{{op}}[i][c] = v.x;
            t{{op}}[i + S_{{op}} / 4u][c] = v.y;
            t{{op}}[i + 2u * (S_{{op}} / 4u)][c] = v.z;
            t{{op}}[i + 3u * (S_{{op}} / 4u)][c] = v.w;
        } else {
            t{{op}}[i] = v;
        }
        return;
    }
    let q = 4u * r * THREADS + t;
    put1_{{op}}(q, v.x);
    put1_{{op}}(q + THREADS, v.y);
    put1_{{op}}(q + 2u * THREADS, v.z);
    put1_{{op}}(q + 3u * THREADS, v.w);
}
