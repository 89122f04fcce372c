//! The WGSL of the attention kernels: each `.wgsl` file with its sizes baked in as
//! constants and its hot loops unrolled into straight-line code (as in `matmul.rs`), so
//! that register arrays are only ever indexed by constants. `attention.rs` says which
//! kernel runs when and why these sizes.

use crate::attention::{DECODE_WG, FlashTiles, decode_sd4, decode_t};
use crate::pipelines::{Slot, assemble};
use std::fmt::Write as _;
use xkern_core::DType;

const ATTENTION_WGSL: &str = include_str!("attention.wgsl");
const FLASH_WGSL: &str = include_str!("attention_flash.wgsl");
const DECODE_WGSL: &str = include_str!("attention_decode.wgsl");
const MERGE_WGSL: &str = include_str!("attention_merge.wgsl");

/// Bindings of the three attention kernels: q, k, v decoded by `load_q` etc., and the
/// f32 output (the decode kernel's partials).
pub(crate) fn bindings(dtype: DType) -> [(&'static str, Slot); 4] {
    [
        ("q", Slot::Input(dtype)),
        ("k", Slot::Input(dtype)),
        ("v", Slot::Input(dtype)),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of the fallback kernel for `dtype` (also used by the naga tests).
pub(crate) fn attention_source(dtype: DType) -> String {
    assemble(ATTENTION_WGSL, &bindings(dtype), &[])
}

/// The `n` (4 or 2) consecutive values of workgroup array `arr` from vec4 `idx`, e.g.
/// `stage[ra]` for 4 and `select(stage[ra].xy, stage[ra].zw, (ty & 1u) == 1u)` for 2
/// (rows 2·ty, 2·ty + 1).
fn vec_of(arr: &str, idx: &str, n: usize, lane: &str) -> String {
    if n == 4 {
        format!("{arr}[{idx}]")
    } else {
        format!("select({arr}[{idx}].xy, {arr}[{idx}].zw, ({lane} & 1u) == 1u)")
    }
}

/// Rows of an invocation's micro-tile per vector: 4 (the 8-row tiles are two fours).
fn flash_tq(tm: usize) -> usize {
    tm.min(4)
}

/// The block row of the invocation's `i`-th row: tm·ty + i for tm ≤ 4, and for tm = 8
/// 4·ty + i % 4 + 64·(i / 4), so that each four is one aligned vec4 (as in
/// `matmul_wide.wgsl`).
fn flash_row(tm: usize, i: usize) -> String {
    let tq = flash_tq(tm);
    format!("{tq}u * ty + {}u", i % tq + 16 * tq * (i / tq))
}

/// The unrolled score micro-kernel of one feature step: one vector load of each four (or
/// two) of the invocation's `tm` rows of Q from `qk` and one of its `tn` keys, then
/// `tm·tn` FMAs, e.g. for 4 × 4 `let a0 = stage[ra]; let b = stage[rb]; s[0] = fma(a0[0],
/// b[0], s[0]); ..`
fn flash_micro(tm: usize, tn: usize, qk: &str) -> String {
    let tq = flash_tq(tm);
    let mut s = String::new();
    for g in 0..tm / tq {
        let idx = if g == 0 {
            "ra".to_string()
        } else {
            // 64 rows on: 16 vec4s.
            format!("ra + {}u", 16 * g)
        };
        let _ = writeln!(
            s,
            "                let a{g} = {};",
            vec_of(qk, &idx, tq, "ty")
        );
    }
    let _ = writeln!(s, "                let b = {};", vec_of(qk, "rb", tn, "tx"));
    for i in 0..tm {
        for j in 0..tn {
            let q = i * tn + j;
            let _ = writeln!(
                s,
                "                s[{q}] = fma(a{}[{}], b[{j}], s[{q}]);",
                i / tq,
                i % tq
            );
        }
    }
    s
}

/// The scaled, masked scores of key tn·tx + j and the invocation's rows into the
/// key-major `ps`: one vec4 store per key and four rows, scalar stores for 2.
fn flash_write_s(tm: usize, tn: usize) -> String {
    let tq = flash_tq(tm);
    let mut s = String::new();
    for j in 0..tn {
        let score = |i: usize| {
            format!(
                "select(neg_inf_f32(), s[{q}] * P.scale, kv0 + {tn}u * tx + {j}u < vis{i})",
                q = i * tn + j
            )
        };
        if tq == 4 {
            for g in 0..tm / 4 {
                let idx = format!("({tn}u * tx + {j}u) * SPT + {}", flash_row(tm, 4 * g));
                let v: Vec<String> = (4 * g..4 * g + 4).map(score).collect();
                let _ = writeln!(
                    s,
                    "        ps[({idx}) >> 2u] = vec4<f32>({});",
                    v.join(", ")
                );
            }
        } else {
            for i in 0..tm {
                let idx = format!("({tn}u * tx + {j}u) * SPT + {}", flash_row(tm, i));
                let _ = writeln!(s, "        ps_set({idx}, {});", score(i));
            }
        }
    }
    s
}

/// Whether the P·V step reads V as vec4s: for Dv a multiple of 64, an invocation's
/// columns are 64g + 4·tx + c (c < 4), one vec4 load per group g; otherwise they are
/// tx + 16j, one scalar load each (no columns wasted past Dv).
fn flash_vec_v(dv: usize) -> bool {
    dv.is_multiple_of(64)
}

/// The output column of accumulator column `j` (see [`flash_vec_v`]).
fn flash_col(j: usize, vec_v: bool) -> String {
    if vec_v {
        format!("{}u + 4u * tx + {}u", 64 * (j / 4), j % 4)
    } else {
        format!("tx + {}u", 16 * j)
    }
}

/// The unrolled P·V step of one key: `p_i` of the invocation's rows (one vector load
/// per four), the V
/// values of the invocation's columns; `masked` keeps a key's term only for rows that see it.
fn flash_pv(tm: usize, nj: usize, vec_v: bool, masked: bool) -> String {
    let tq = flash_tq(tm);
    let mut s = String::new();
    for g in 0..tm / tq {
        let _ = writeln!(
            s,
            "                    let pv{g} = {};",
            vec_of(
                "ps",
                &format!(
                    "rp + {}{}",
                    if tq == 4 { "ty" } else { "(ty >> 1u)" },
                    if g == 0 {
                        String::new()
                    } else {
                        format!(" + {}u", 16 * g)
                    }
                ),
                tq,
                "ty"
            )
        );
    }
    for i in 0..tm {
        let _ = writeln!(
            s,
            "                    let p{i} = pv{}[{}];",
            i / tq,
            i % tq
        );
    }
    for j in 0..nj {
        if !vec_v {
            let _ = writeln!(
                s,
                "                    let v{j} = stage_get(rv + {}u);",
                16 * j
            );
        } else if j % 4 == 0 {
            let _ = writeln!(
                s,
                "                    let w{g} = stage[rv4 + {}u];",
                16 * (j / 4),
                g = j / 4
            );
        }
    }
    for i in 0..tm {
        for j in 0..nj {
            let q = i * nj + j;
            let v = if vec_v {
                format!("w{}[{}]", j / 4, j % 4)
            } else {
                format!("v{j}")
            };
            if masked {
                let _ = writeln!(
                    s,
                    "                    acc[{q}] = select(acc[{q}], fma(p{i}, {v}, acc[{q}]), key < vis{i});"
                );
            } else {
                let _ = writeln!(
                    s,
                    "                    acc[{q}] = fma(p{i}, {v}, acc[{q}]);"
                );
            }
        }
    }
    s
}

/// The score micro-kernel of a whole feature step, unrolled over its `bk` features
/// (constant offsets from `ra0`, `rb0`: the driver's compiler can schedule the workgroup
/// loads of later features ahead of the FMAs of earlier ones, as in `matmul_wide.wgsl`).
fn flash_micro_step(t: FlashTiles, qk: &str) -> String {
    let (tm, tn) = (t.br / 16, t.bc / 16);
    let body = flash_micro(tm, tn, qk);
    let mut s = String::new();
    for kk in 0..t.bk {
        let _ = writeln!(
            s,
            "            {{
                let ra = ra0 + {}u;
                let rb = rb0 + {}u;
{body}            }}",
            kk * (t.br + 4) / 4,
            kk * (t.bc + 4) / 4
        );
    }
    s
}

/// The unmasked P·V of a whole V step, unrolled over its `bkv` keys (constant offsets
/// from `rp0`).
fn flash_pv_step(t: FlashTiles, dv: usize) -> String {
    let tm = t.br / 16;
    let dvp = FlashTiles::dvp(dv);
    let vec_v = flash_vec_v(dv);
    let body = flash_pv(tm, dvp / 16, vec_v, false);
    let mut s = String::new();
    for kk in 0..t.bkv(dv) {
        let col = if vec_v {
            format!("let rv4 = {}u + tx;", kk * dvp / 4)
        } else {
            format!("let rv = {}u + tx;", kk * dvp)
        };
        let _ = writeln!(
            s,
            "                {{
                    let rp = rp0 + {}u;
                    {col}
{body}                }}",
            kk * (t.br + 4) / 4
        );
    }
    s
}

/// Per row i of the invocation (see [`flash_row`]): `vis{i}`, `m{i}`, `l{i}`.
fn flash_rows(tm: usize) -> String {
    let mut s = String::new();
    for i in 0..tm {
        let _ = writeln!(s, "    let vis{i} = visible(q0 + {});", flash_row(tm, i));
        let _ = writeln!(s, "    var m{i} = neg_inf_f32();");
        let _ = writeln!(s, "    var l{i} = 0.0;");
    }
    s
}

/// Per row: the tile's max and sum from the softmax step's partials, the new running
/// max and sum, and the rescale of the row's accumulators by exp(m_old − m_new).
fn flash_rescale(tm: usize, nj: usize) -> String {
    let mut s = String::new();
    for i in 0..tm {
        let row = flash_row(tm, i);
        let _ = write!(
            s,
            "        {{
            let r = {row};
            var rmax = neg_inf_f32();
            var rsum = 0.0;
            for (var u = 0u; u < SPLIT; u = u + 1u) {{
                rmax = nan_max(rmax, wred[u * BR + r]);
                rsum = rsum + wsum[u * BR + r];
            }}
            let mn = nan_max(m{i}, rmax);
            let alpha = exp(m{i} - select(mn, 0.0, is_neg_inf(mn)));
            l{i} = l{i} * alpha + rsum;
            m{i} = mn;
"
        );
        for j in 0..nj {
            let q = i * nj + j;
            let _ = writeln!(s, "            acc[{q}] = acc[{q}] * alpha;");
        }
        let _ = writeln!(s, "        }}");
    }
    s
}

/// The normalised rows into `out` (rows < Sq, columns < Dv; 0 for a query that sees
/// no key).
fn flash_store(tm: usize, nj: usize, vec_v: bool) -> String {
    let mut s = String::new();
    for i in 0..tm {
        let _ = writeln!(
            s,
            "    if (q0 + {row} < P.sq) {{
        let obase = ((b * P.hq + h) * P.sq + q0 + {row}) * DV;",
            row = flash_row(tm, i)
        );
        for j in 0..nj {
            let q = i * nj + j;
            let _ = writeln!(
                s,
                "        if ({c} < DV) {{ out[obase + {c}] = select(0.0, acc[{q}] / l{i}, vis{i} > 0u); }}",
                c = flash_col(j, vec_v)
            );
        }
        let _ = writeln!(s, "    }}");
    }
    s
}

/// Loads per invocation of one feature step of Q (`BR × BK`) and of K (`BC × BK`):
/// scalars, or (`vec`) four features each.
fn flash_qk_loads(t: FlashTiles, vec: bool) -> (usize, usize) {
    let w = if vec { 4 } else { 1 };
    (
        (t.br * t.bk).div_ceil(256 * w),
        (t.bc * t.bk).div_ceil(256 * w),
    )
}

/// The staging registers of Q (`x = q`, `n = BR`) and K (`x = k`, `n = BC`): scalar
/// element e = t + 256·i of a step is (row e / BK, feature e % BK). A vec4 (`vec`) e
/// holds features 4·c .. 4·c + 3 of row r, where a warp's 32 vec4s are rows
/// 16·(e / 32 % (n/16)) + e % 16 and columns c = 2·(e / (2n)) + e / 16 % 2: 16 rows × 2
/// columns, so that the four k-major stores of each, at words (4c + j)·S + r with S ≡ 4
/// (mod 32), hit 32 distinct banks, and each row's two vec4s are one 16- or 32-byte
/// global read.
fn flash_x_decl(x: &str, n: &str, count: usize, vec: bool) -> String {
    let mut s = String::new();
    for i in 0..count {
        let o = 256 * i;
        if vec {
            let _ = writeln!(
                s,
                "    let e{x}{i} = t + {o}u;
    let r{x}{i} = 16u * ((e{x}{i} / 32u) % ({n} / 16u)) + e{x}{i} % 16u;
    let c{x}{i} = 2u * (e{x}{i} / (2u * {n})) + (e{x}{i} / 16u) % 2u;
    var x{x}{i} = vec4<f32>(0.0);"
            );
        } else {
            let _ = writeln!(
                s,
                "    let e{x}{i} = t + {o}u;
    let r{x}{i} = e{x}{i} / BK;
    let c{x}{i} = e{x}{i} % BK;
    var x{x}{i} = 0.0;"
            );
        }
    }
    s
}

fn flash_qk_decl(t: FlashTiles, vec: bool) -> String {
    let (nq, nk) = flash_qk_loads(t, vec);
    flash_x_decl("q", "BR", nq, vec) + &flash_x_decl("k", "BC", nk, vec)
}

/// The loads of feature step `dl` of Q (rows from q0) and K (keys from `kq`) into the
/// staging registers (zero past Sq, Skv and D), all issued before any is used. A vec4
/// lies wholly inside or outside D (the host takes `vec` only for D a multiple of 4,
/// unit feature stride and 4-aligned rows).
fn flash_qk_load(t: FlashTiles, vec: bool) -> String {
    let (nq, nk) = flash_qk_loads(t, vec);
    let mut s = String::new();
    for (x, n, rows, first, base, count) in [
        ("q", "BR", "P.sq", "q0", "qbase", nq),
        ("k", "BC", "P.skv", "kq", "kbase", nk),
    ] {
        for i in 0..count {
            if vec {
                let _ = writeln!(
                    s,
                    "            x{x}{i} = vec4<f32>(0.0);
            if (e{x}{i} < {n} * BK / 4u && {first} + r{x}{i} < {rows} && dl + 4u * c{x}{i} < D) {{
                x{x}{i} = load4_{x}(({base} + ({first} + r{x}{i}) * P.{x}_ss + dl + 4u * c{x}{i}) / 4u);
            }}"
                );
            } else {
                let _ = writeln!(
                    s,
                    "            x{x}{i} = 0.0;
            if (e{x}{i} < {n} * BK && {first} + r{x}{i} < {rows} && dl + c{x}{i} < D) {{
                x{x}{i} = load_{x}({base} + ({first} + r{x}{i}) * P.{x}_ss + (dl + c{x}{i}) * P.{x}_sd);
            }}"
                );
            }
        }
    }
    s
}

/// The staging registers into the Q/K chunks (k-major: Q at word k·SQ + row, K at
/// TK + k·SK + key).
fn flash_qk_store(t: FlashTiles, vec: bool) -> String {
    let (nq, nk) = flash_qk_loads(t, vec);
    let mut s = String::new();
    for (x, n, base, stride, count) in [("q", "BR", "", "SQ", nq), ("k", "BC", "TK + ", "SK", nk)] {
        for i in 0..count {
            if vec {
                let _ = writeln!(
                    s,
                    "            if (e{x}{i} < {n} * BK / 4u) {{
                let w = {base}4u * c{x}{i} * {stride} + r{x}{i};
                qk_set(w, x{x}{i}.x);
                qk_set(w + {stride}, x{x}{i}.y);
                qk_set(w + 2u * {stride}, x{x}{i}.z);
                qk_set(w + 3u * {stride}, x{x}{i}.w);
            }}"
                );
            } else {
                let _ = writeln!(
                    s,
                    "            if (e{x}{i} < {n} * BK) {{ qk_set({base}c{x}{i} * {stride} + r{x}{i}, x{x}{i}); }}"
                );
            }
        }
    }
    s
}

/// Loads per invocation of one V step (`BKV` rows of `DVP` columns): scalars, or
/// (`vec`) vec4s.
fn flash_v_loads(t: FlashTiles, dv: usize, vec: bool) -> usize {
    let w = if vec { 4 } else { 1 };
    (t.bkv(dv) * FlashTiles::dvp(dv)).div_ceil(256 * w)
}

/// The staging registers of V: element (or vec4) e = t + 256·i of a step, row-major.
fn flash_v_decl(t: FlashTiles, dv: usize, vec: bool) -> String {
    let mut s = String::new();
    let zero = if vec { "vec4<f32>(0.0)" } else { "0.0" };
    for i in 0..flash_v_loads(t, dv, vec) {
        let _ = writeln!(
            s,
            "    let ev{i} = t + {}u;\n    var xv{i} = {zero};",
            256 * i
        );
    }
    s
}

/// The loads of the V rows from tile key `kl` into the staging registers (zero past Skv
/// and Dv), all issued before any is used.
fn flash_v_load(t: FlashTiles, dv: usize, vec: bool) -> String {
    let mut s = String::new();
    for i in 0..flash_v_loads(t, dv, vec) {
        if vec {
            let _ = writeln!(
                s,
                "            xv{i} = vec4<f32>(0.0);
            if (ev{i} < BKV * DVP / 4u && kv0 + kl + ev{i} / (DVP / 4u) < P.skv && 4u * (ev{i} % (DVP / 4u)) < DV) {{
                xv{i} = load4_v((vbase + (kv0 + kl + ev{i} / (DVP / 4u)) * P.v_ss + 4u * (ev{i} % (DVP / 4u))) / 4u);
            }}"
            );
        } else {
            let _ = writeln!(
                s,
                "            xv{i} = 0.0;
            if (ev{i} < BKV * DVP && kv0 + kl + ev{i} / DVP < P.skv && ev{i} % DVP < DV) {{
                xv{i} = load_v(vbase + (kv0 + kl + ev{i} / DVP) * P.v_ss + (ev{i} % DVP) * P.v_sd);
            }}"
            );
        }
    }
    s
}

/// The V staging registers into `stage` (row-major, `DVP` columns).
fn flash_v_store(t: FlashTiles, dv: usize, vec: bool) -> String {
    let mut s = String::new();
    for i in 0..flash_v_loads(t, dv, vec) {
        if vec {
            let _ = writeln!(
                s,
                "            if (ev{i} < BKV * DVP / 4u) {{ stage[ev{i}] = xv{i}; }}"
            );
        } else {
            let _ = writeln!(
                s,
                "            if (ev{i} < BKV * DVP) {{ stage_set(ev{i}, xv{i}); }}"
            );
        }
    }
    s
}

/// Bindings of the prefill kernel: Q, K and V as vec4s where `vec`.
pub(crate) fn flash_bindings(dtype: DType, vec: bool) -> [(&'static str, Slot); 4] {
    let slot = if vec {
        Slot::InputVec4(dtype)
    } else {
        Slot::Input(dtype)
    };
    [("q", slot), ("k", slot), ("v", slot), ("out", Slot::OutF32)]
}

/// The WGSL of the prefill kernel (also used by the naga tests); `vec` reads Q, K and V
/// as vec4s (the host checks alignment: see `attention::flash_vec`).
pub(crate) fn flash_source(dtype: DType, d: usize, dv: usize, t: FlashTiles, vec: bool) -> String {
    let (tm, tn) = (t.br / 16, t.bc / 16);
    let qk = if t.vk > 0 { "ps" } else { "stage" };
    let dvp = FlashTiles::dvp(dv);
    let nj = dvp / 16;
    let vec_v = flash_vec_v(dv);
    assemble(
        FLASH_WGSL,
        &flash_bindings(dtype, vec),
        &[
            ("ROWS", flash_rows(tm)),
            ("QK_DECL", flash_qk_decl(t, vec)),
            ("QK_LOAD", flash_qk_load(t, vec)),
            ("QK_STORE", flash_qk_store(t, vec)),
            ("V_DECL", flash_v_decl(t, dv, vec)),
            ("V_LOAD", flash_v_load(t, dv, vec)),
            ("V_STORE", flash_v_store(t, dv, vec)),
            ("RESCALE", flash_rescale(tm, nj)),
            ("STORE", flash_store(tm, nj, vec_v)),
            ("MICRO", flash_micro_step(t, qk)),
            ("QK", qk.to_string()),
            ("TQ", flash_tq(tm).to_string()),
            ("WRITE_S", flash_write_s(tm, tn)),
            ("PV_MASKED", flash_pv(tm, nj, vec_v, true)),
            ("PV", flash_pv_step(t, dv)),
            ("D", d.to_string()),
            ("DV", dv.to_string()),
            ("BR", t.br.to_string()),
            ("BC", t.bc.to_string()),
            ("BK", t.bk.to_string()),
            ("BKV", t.bkv(dv).to_string()),
            ("DVP", dvp.to_string()),
            ("STAGE_LEN4", t.stage_words(dv).div_ceil(4).to_string()),
            ("TN", tn.to_string()),
            ("PS_LEN4", t.ps_words().div_ceil(4).to_string()),
            ("TM_TN", (tm * tn).to_string()),
            ("TM_NJ", (tm * nj).to_string()),
            ("TM", tm.to_string()),
            ("NJ", nj.to_string()),
        ],
    )
}

/// Sizes of the decode kernel for D, Dv and R rows (see `attention_decode.wgsl`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodeShape {
    /// Keys per tile (one score per invocation).
    pub(crate) t: usize,
    /// vec4s per staged K row (D / 4 rounded up).
    pub(crate) dp4: usize,
    /// vec4 columns of V (Dv / 4 rounded up).
    pub(crate) cv: usize,
    /// Invocations per V key group: a power of two at least `cv` and R.
    pub(crate) cw: usize,
    /// V key groups (DECODE_WG / cw; a power of two at most `t`).
    pub(crate) kg: usize,
    /// K vec4 loads per invocation per tile.
    pub(crate) nkl: usize,
    /// V vec4 loads (keys) per invocation per tile.
    pub(crate) nvj: usize,
}

impl DecodeShape {
    pub(crate) fn new(d: usize, dv: usize, rows: usize) -> Self {
        let t = decode_t(rows);
        let dp4 = d.div_ceil(4).max(1);
        let cv = dv.div_ceil(4).max(1);
        let cw = cv.next_power_of_two().max(rows).min(DECODE_WG);
        let kg = DECODE_WG / cw;
        Self {
            t,
            dp4,
            cv,
            cw,
            kg,
            nkl: (t * dp4).div_ceil(DECODE_WG),
            nvj: t.div_ceil(kg),
        }
    }
}

/// `kvec(i, c)` and `vvec(i, c)`: features 4c .. 4c + 3 of the K row and V row starting
/// at element `i`, as one vec4 load (`vec`: unit feature stride, 4-aligned rows, D and Dv
/// multiples of 4) or four scalar ones (zero past D or Dv).
fn decode_kv_fns(vec: bool) -> String {
    if vec {
        return "fn kvec(i: u32, c: u32) -> vec4<f32> { return load4_k(i / 4u + c); }\n\
                fn vvec(i: u32, c: u32) -> vec4<f32> { return load4_v(i / 4u + c); }\n"
            .to_string();
    }
    let mut s = String::new();
    for (f, x, n) in [("kvec", "k", "D"), ("vvec", "v", "DV")] {
        let _ = writeln!(
            s,
            "fn {f}(i: u32, c: u32) -> vec4<f32> {{\n    var x = vec4<f32>(0.0);"
        );
        for (comp, name) in ["x", "y", "z", "w"].iter().enumerate() {
            let _ = writeln!(
                s,
                "    if (4u * c + {comp}u < {n}) {{ x.{name} = load_{x}(i + (4u * c + {comp}u) * P.{x}_sd); }}"
            );
        }
        let _ = writeln!(s, "    return x;\n}}");
    }
    s
}

/// The staging of the block's R query rows (zero past the group and past D): every load,
/// then every store.
fn decode_q_stage(d: usize, rows: usize) -> String {
    let n = (rows * d.div_ceil(4).max(1) * 4).div_ceil(DECODE_WG);
    let mut s = String::new();
    for i in 0..n {
        let _ = writeln!(
            s,
            "    let eq{i} = t + {o}u;
    var xq{i} = 0.0;
    {{
        let local = hb * R + eq{i} / (DP4 * 4u);
        let d = eq{i} % (DP4 * 4u);
        if (eq{i} < R * DP4 * 4u && local < rows && d < D) {{
            let h = kvh * P.group + local / P.sq;
            xq{i} = load_q(P.q_off + b * P.q_sb + h * P.q_sh + (local % P.sq) * P.q_ss + d * P.q_sd);
        }}
    }}",
            o = i * DECODE_WG
        );
    }
    for i in 0..n {
        let _ = writeln!(
            s,
            "    if (eq{i} < R * DP4 * 4u) {{
        wq[(eq{i} / (DP4 * 4u)) * SD4 + (eq{i} % (DP4 * 4u)) / 4u][eq{i} % 4u] = xq{i};
    }}"
        );
    }
    s
}

/// The registers of the prefetched tile: `kn{i}` (K) and, where V is prefetched too,
/// `vn{i}` (V).
fn decode_kv_decl(sh: DecodeShape, prefetch_v: bool) -> String {
    let mut s = String::new();
    for i in 0..sh.nkl {
        let _ = writeln!(s, "    var kn{i} = vec4<f32>(0.0);");
    }
    if prefetch_v {
        for i in 0..sh.nvj {
            let _ = writeln!(s, "    var vn{i} = vec4<f32>(0.0);");
        }
    }
    s
}

/// The K loads of the tile starting at key `t1` into `kn{i}` (zero past the split).
fn decode_k_load(sh: DecodeShape) -> String {
    let mut s = String::new();
    for i in 0..sh.nkl {
        let _ = writeln!(
            s,
            "        {{
            let e = t + {o}u;
            let key = t1 + e / DP4;
            kn{i} = vec4<f32>(0.0);
            if (e < T * DP4 && key < k_hi) {{ kn{i} = kvec(kbase + key * P.k_ss, e % DP4); }}
        }}",
            o = i * DECODE_WG
        );
    }
    s
}

/// The V loads of the tile starting at key `base` into `{dst}{i}` (zero past the split),
/// declaring them first where `decl`.
fn decode_v_load(sh: DecodeShape, base: &str, dst: &str, decl: bool) -> String {
    let mut s = String::new();
    for i in 0..sh.nvj {
        if decl {
            let _ = writeln!(s, "        var {dst}{i} = vec4<f32>(0.0);");
        } else {
            let _ = writeln!(s, "        {dst}{i} = vec4<f32>(0.0);");
        }
        let _ = writeln!(
            s,
            "        if (vc < CV && {base} + vg + {o}u < k_hi) {{ {dst}{i} = vvec(vbase + ({base} + vg + {o}u) * P.v_ss, vc); }}",
            o = i * sh.kg
        );
    }
    s
}

/// The staging of the current tile's K (`kn{i}`) into `wk`.
fn decode_k_store(sh: DecodeShape) -> String {
    let mut s = String::new();
    for i in 0..sh.nkl {
        let _ = writeln!(
            s,
            "        {{ let e = t + {o}u; if (e < T * DP4) {{ wk[(e / DP4) * SD4 + e % DP4] = kn{i}; }} }}",
            o = i * DECODE_WG
        );
    }
    s
}

/// The current tile's V `vk{i}`: kept from the prefetch while the next tile's loads
/// overwrite `vn{i}`, or loaded now (without the V prefetch: fewer registers, the loads
/// in flight during the K staging and the scores only).
fn decode_v_keep(sh: DecodeShape, prefetch_v: bool) -> String {
    if !prefetch_v {
        return decode_v_load(sh, "t0", "vk", true);
    }
    let mut s = String::new();
    for i in 0..sh.nvj {
        let _ = writeln!(s, "        let vk{i} = vn{i};");
    }
    s
}

/// Feature vec4s per part of a split dot product (R parts).
fn decode_fc(d: usize, rows: usize) -> usize {
    d.div_ceil(4).max(1).div_ceil(rows)
}

/// The score step. Whole dot products: invocation (r, j) computes score (r, j) and
/// writes it scaled and masked. Split (`split_dot`): invocation (f, j) computes the
/// partial dot products of key j over feature vec4s f·FC .. for every row and writes them
/// to block f of `ws` (one vec4 per four rows); [`decode_softmax`] sums, scales, masks.
fn decode_scores(d: usize, rows: usize, split_dot: bool) -> String {
    if !split_dot {
        return "        var dot4 = vec4<f32>(0.0);
        for (var c = 0u; c < DP4; c = c + 1u) {
            dot4 = fma(wq[pr * SD4 + c], wk[pj * SD4 + c], dot4);
        }
        let dot = (dot4.x + dot4.y) + (dot4.z + dot4.w);
        let seen = pj < cnt && t0 + pj < p_vis;
        ws[pj * RQ + pr / 4u][pr % 4u] = select(neg_inf_f32(), dot * P.scale, seen);
"
        .to_string();
    }
    let fc = decode_fc(d, rows);
    let mut s = String::new();
    for r in 0..rows {
        let _ = writeln!(s, "        var dd{r} = vec4<f32>(0.0);");
    }
    let _ = writeln!(
        s,
        "        let c_hi = min(pr * {fc}u + {fc}u, DP4);
        for (var c = pr * {fc}u; c < c_hi; c = c + 1u) {{
            let kv = wk[pj * SD4 + c];"
    );
    for r in 0..rows {
        let _ = writeln!(
            s,
            "            dd{r} = fma(wq[{}u + c], kv, dd{r});",
            r * decode_sd4(d)
        );
    }
    let _ = writeln!(s, "        }}");
    for q in 0..rows / 4 {
        let h: Vec<String> = (4 * q..4 * q + 4)
            .map(|r| format!("(dd{r}.x + dd{r}.y) + (dd{r}.z + dd{r}.w)"))
            .collect();
        let _ = writeln!(
            s,
            "        ws[(pr * T + pj) * RQ + {q}u] = vec4<f32>({});",
            h.join(", ")
        );
    }
    s
}

/// The key group's running max `m{q}` and sum `l{q}` of rows 4q .. 4q + 3.
fn decode_ml_decl(rows: usize) -> String {
    let mut s = String::new();
    for q in 0..rows / 4 {
        let _ = writeln!(
            s,
            "    var m{q} = vec4<f32>(neg_inf_f32());\n    var l{q} = vec4<f32>(0.0);"
        );
    }
    s
}

/// The online softmax of one tile for the invocation's key group: its keys' scores
/// `s{i}_{q}` (one vec4 of four rows each), the new running max, the rescale of the sums
/// and accumulators by exp(m_old − m_new), and the probabilities `p{i}_{q}`.
fn decode_softmax(sh: DecodeShape, rows: usize, split_dot: bool) -> String {
    let keys: Vec<usize> = (0..sh.nvj).filter(|i| i * sh.kg < sh.t).collect();
    let mut s = String::new();
    for q in 0..rows / 4 {
        if split_dot {
            let _ = writeln!(
                s,
                "        let visq{q} = vec4<u32>(vis{}, vis{}, vis{}, vis{});",
                4 * q,
                4 * q + 1,
                4 * q + 2,
                4 * q + 3
            );
        }
        for &i in &keys {
            let o = i * sh.kg;
            if !split_dot {
                let _ = writeln!(s, "        let s{i}_{q} = ws[(vg + {o}u) * RQ + {q}u];");
                continue;
            }
            // The R partial dot products of the key, summed in a fixed order.
            let parts: Vec<String> = (0..rows)
                .map(|f| format!("ws[({}u + vg + {o}u) * RQ + {q}u]", f * sh.t))
                .collect();
            let _ = writeln!(
                s,
                "        let seen{i}_{q} = vec4<bool>(vg + {o}u < cnt) & (vec4<u32>(t0 + vg + {o}u) < visq{q});
        let s{i}_{q} = select(vec4<f32>(neg_inf_f32()), ({}) * P.scale, seen{i}_{q});",
                parts.join(" + ")
            );
        }
        let mut tmax = format!("m{q}");
        for &i in &keys {
            tmax = format!("max({tmax}, s{i}_{q})");
        }
        let _ = writeln!(s, "        let mn{q} = {tmax};");
        let _ = writeln!(s, "        let mu{q} = ref4(mn{q});");
        let _ = writeln!(s, "        let al{q} = exp(m{q} - mu{q});");
        let _ = writeln!(s, "        m{q} = mn{q};");
        let mut sum = String::new();
        for &i in &keys {
            let _ = writeln!(s, "        let p{i}_{q} = exp(s{i}_{q} - mu{q});");
            sum = if sum.is_empty() {
                format!("p{i}_{q}")
            } else {
                format!("{sum} + p{i}_{q}")
            };
        }
        if sum.is_empty() {
            sum = "vec4<f32>(0.0)".to_string();
        }
        let _ = writeln!(s, "        l{q} = fma(l{q}, al{q}, {sum});");
        for c in 0..4 {
            let r = 4 * q + c;
            let _ = writeln!(s, "        acc[{r}] = acc[{r}] * al{q}[{c}];");
        }
    }
    s
}

/// The P·V of the invocation's keys vg + kg·i for every row; `masked` keeps a key's
/// term only for rows that see it.
fn decode_pv(sh: DecodeShape, rows: usize, masked: bool) -> String {
    let mut s = String::new();
    for i in 0..sh.nvj {
        let o = i * sh.kg;
        if o >= sh.t {
            continue;
        }
        if masked {
            let _ = writeln!(s, "            let key{i} = t0 + vg + {o}u;");
        }
        for r in 0..rows {
            let term = format!(
                "fma(vec4<f32>(p{i}_{q}[{c}]), vk{i}, acc[{r}])",
                q = r / 4,
                c = r % 4
            );
            if masked {
                let _ = writeln!(
                    s,
                    "            acc[{r}] = select(acc[{r}], {term}, key{i} < vis{r});"
                );
            } else {
                let _ = writeln!(s, "            acc[{r}] = {term};");
            }
        }
    }
    s
}

/// Per row r of the block: `vis{r}` (and the block's minimum).
fn decode_rows(rows: usize) -> String {
    let mut s = String::new();
    for r in 0..rows {
        let _ = writeln!(
            s,
            "    var vis{r} = P.skv;
    if (hb * R + {r}u < rows) {{ vis{r} = visible((hb * R + {r}u) % P.sq); }}
    vis_min = min(vis_min, vis{r});"
        );
    }
    s
}

/// Blocks of scores in `ws`: one, or R of partial scores where the dot products are split.
pub(crate) fn decode_ws_parts(rows: usize, split_dot: bool) -> usize {
    if split_dot { rows } else { 1 }
}

/// Rows per round of the final combine, and whether it goes through `wk` (free after the
/// last tile: no extra workgroup memory) rather than its own `wo` of one row.
pub(crate) fn decode_rows_per_round(d: usize, rows: usize) -> (usize, bool) {
    let wk = decode_t(rows) * decode_sd4(d);
    let n = (wk / DECODE_WG).min(rows);
    if n >= 1 { (n, true) } else { (1, false) }
}

/// The partials of every row of the block: each key group publishes its running max and
/// sum (`wml`) and its accumulators (`wk` or `wo`, a round of rows at a time); invocation
/// (0, vc) of each row combines the groups by the log-sum-exp rule and writes O (columns
/// 4·vc ..), and (0, 0) also m and l.
fn decode_store(d: usize, rows: usize) -> String {
    let (rpr, in_wk) = decode_rows_per_round(d, rows);
    let buf = if in_wk { "wk" } else { "wo" };
    let mut s = String::new();
    let _ = writeln!(s, "    if (vc == 0u) {{");
    for q in 0..rows / 4 {
        let _ = writeln!(
            s,
            "        wml[vg * RQ + {q}u] = m{q};\n        wml[(KG + vg) * RQ + {q}u] = l{q};"
        );
    }
    let _ = writeln!(s, "    }}");
    for r0 in (0..rows).step_by(rpr) {
        let r1 = (r0 + rpr).min(rows);
        if r0 > 0 {
            let _ = writeln!(s, "    workgroupBarrier();");
        }
        for r in r0..r1 {
            let _ = writeln!(s, "    {buf}[{}u + t] = acc[{r}];", (r - r0) * DECODE_WG);
        }
        let _ = writeln!(s, "    workgroupBarrier();");
        for r in r0..r1 {
            let (q, c) = (r / 4, r % 4);
            let _ = writeln!(
                s,
                "    if (hb * R + {r}u < rows && vg == 0u && vc < CV) {{
        let local = hb * R + {r}u;
        let h = kvh * P.group + local / P.sq;
        let part = ((b * P.hq + h) * P.sq + local % P.sq) * P.splits + split;
        var mx = neg_inf_f32();
        for (var u = 0u; u < KG; u = u + 1u) {{ mx = nan_max(mx, wml[u * RQ + {q}u][{c}]); }}
        let mu = select(mx, 0.0, is_neg_inf(mx));
        var o = vec4<f32>(0.0);
        var l = 0.0;
        for (var u = 0u; u < KG; u = u + 1u) {{
            let w = exp(wml[u * RQ + {q}u][{c}] - mu);
            o = fma(vec4<f32>(w), {buf}[{off}u + u * CW + vc], o);
            l = fma(wml[(KG + u) * RQ + {q}u][{c}], w, l);
        }}
        let ob = part * DV + 4u * vc;
        out[ob] = o.x;
        if (4u * vc + 1u < DV) {{ out[ob + 1u] = o.y; }}
        if (4u * vc + 2u < DV) {{ out[ob + 2u] = o.z; }}
        if (4u * vc + 3u < DV) {{ out[ob + 3u] = o.w; }}
        if (vc == 0u) {{
            out[P.ml_base + 2u * part] = mx;
            out[P.ml_base + 2u * part + 1u] = l;
        }}
    }}",
                off = (r - r0) * DECODE_WG
            );
        }
    }
    s
}

/// Bindings of the decode kernel: K and V as vec4s where `vec`.
pub(crate) fn decode_bindings(dtype: DType, vec: bool) -> [(&'static str, Slot); 4] {
    let slot = if vec {
        Slot::InputVec4(dtype)
    } else {
        Slot::Input(dtype)
    };
    [
        ("q", Slot::Input(dtype)),
        ("k", slot),
        ("v", slot),
        ("out", Slot::OutF32),
    ]
}

/// The WGSL of the split-KV decode kernel (also used by the naga tests); `vec` reads K
/// and V as vec4s (the host checks alignment; D and Dv must be multiples of 4); `rows`
/// is 4 or 8; `prefetch_v` loads a tile's V a tile ahead, like its K; `split_dot` splits
/// each score's features over R invocations.
pub(crate) fn decode_source(
    dtype: DType,
    d: usize,
    dv: usize,
    rows: usize,
    vec: bool,
    prefetch_v: bool,
    split_dot: bool,
) -> String {
    let sh = DecodeShape::new(d, dv, rows);
    let mut next_load = decode_k_load(sh);
    if prefetch_v {
        next_load += &decode_v_load(sh, "t1", "vn", false);
    }
    let pro_load = next_load.clone();
    let sd4 = decode_sd4(d);
    let (_, in_wk) = decode_rows_per_round(d, rows);
    let wo = if in_wk {
        String::new()
    } else {
        format!("var<workgroup> wo: array<vec4<f32>, {DECODE_WG}>;")
    };
    assemble(
        DECODE_WGSL,
        &decode_bindings(dtype, vec),
        &[
            ("KV_FNS", decode_kv_fns(vec)),
            ("Q_STAGE", decode_q_stage(d, rows)),
            ("KV_DECL", decode_kv_decl(sh, prefetch_v)),
            ("PRO_LOAD", pro_load),
            ("NEXT_LOAD", next_load),
            ("K_STORE", decode_k_store(sh)),
            ("V_KEEP", decode_v_keep(sh, prefetch_v)),
            ("ML_DECL", decode_ml_decl(rows)),
            ("SOFTMAX", decode_softmax(sh, rows, split_dot)),
            ("SCORES", decode_scores(d, rows, split_dot)),
            ("PV_FULL", decode_pv(sh, rows, false)),
            ("PV_MASKED", decode_pv(sh, rows, true)),
            ("ROWS", decode_rows(rows)),
            ("STORE", decode_store(d, rows)),
            ("WO_DECL", wo),
            ("D", d.to_string()),
            ("DV", dv.to_string()),
            ("RQ", (rows / 4).to_string()),
            ("R", rows.to_string()),
            ("T", sh.t.to_string()),
            ("WG", DECODE_WG.to_string()),
            ("DP4", sh.dp4.to_string()),
            ("SD4", sd4.to_string()),
            ("CV", sh.cv.to_string()),
            ("CW", sh.cw.to_string()),
            ("KG", sh.kg.to_string()),
            ("WQ_LEN", (rows * sd4).to_string()),
            ("WK_LEN", (sh.t * sd4).to_string()),
            (
                "WS_LEN",
                (decode_ws_parts(rows, split_dot) * sh.t * rows / 4).to_string(),
            ),
            ("WML_LEN", (2 * sh.kg * rows / 4).to_string()),
        ],
    )
}

/// Output elements per merge workgroup (even: 16-bit outputs are written in words).
pub(crate) const MERGE_EB: usize = 32;
/// Split groups of a merge workgroup (MERGE_EB × MERGE_SG invocations).
const MERGE_SG: usize = 8;
/// Splits per merge invocation per round: MERGE_SG × MERGE_NPER = 64 splits per round.
const MERGE_NPER: usize = 8;

/// Bindings of the split-KV merge: the partials and the output, f32 or words of two
/// 16-bit elements.
pub(crate) fn merge_bindings(out: DType) -> [(&'static str, Slot); 2] {
    let slot = if out == DType::F32 {
        Slot::OutF32
    } else {
        Slot::OutWords
    };
    [("part", Slot::Input(DType::F32)), ("out", slot)]
}

/// The WGSL of the split-KV merge writing `out` (f32, f16 or bf16; also used by the
/// naga tests).
pub(crate) fn merge_source(out: DType) -> String {
    let mut loads = String::new();
    for i in 0..MERGE_NPER {
        let _ = writeln!(
            loads,
            "        let s{i} = first + u + {o}u;
        var m{i} = neg_inf_f32();
        var l{i} = 0.0;
        var o{i} = 0.0;
        if (ok && s{i} < P.splits) {{
            let p = row * P.splits + s{i};
            m{i} = part[P.ml_base + 2u * p];
            l{i} = part[P.ml_base + 2u * p + 1u];
            o{i} = part[p * P.dv + c];
        }}",
            o = MERGE_SG * i
        );
    }
    let mut combine = String::from("        var mx = m0;\n");
    for i in 1..MERGE_NPER {
        let _ = writeln!(combine, "        mx = nan_max(mx, m{i});");
    }
    let _ = writeln!(combine, "        let r = ref_max(mx);");
    let _ = writeln!(combine, "        var l = 0.0;\n        var o = 0.0;");
    for i in 0..MERGE_NPER {
        let _ = writeln!(
            combine,
            "        let w{i} = exp(m{i} - r);\n        l = fma(l{i}, w{i}, l);\n        o = fma(o{i}, w{i}, o);"
        );
    }
    let _ = writeln!(combine, "        acc = combine(acc, Part(mx, l, o));");
    let store = match out {
        DType::F32 => "        if (ok) { out[e] = y; }\n    }\n".to_string(),
        _ => {
            let enc = if out == DType::F16 {
                "f32_bits_to_f16_bits"
            } else {
                "f32_bits_to_bf16_bits"
            };
            format!(
                "        wy[el] = y;
    }}
    workgroupBarrier();
    if (t < EB / 2u) {{
        let e0 = g * EB + 2u * t;
        if (e0 < P.len) {{
            var w = {enc}(bitcast<u32>(wy[2u * t]));
            if (e0 + 1u < P.len) {{ w = w | ({enc}(bitcast<u32>(wy[2u * t + 1u])) << 16u); }}
            out[e0 / 2u] = w;
        }}
    }}
"
            )
        }
    };
    assemble(
        MERGE_WGSL,
        &merge_bindings(out),
        &[
            ("LOADS", loads),
            ("COMBINE", combine),
            ("STORE", store),
            ("EB", MERGE_EB.to_string()),
            ("SG", MERGE_SG.to_string()),
            ("NPER", MERGE_NPER.to_string()),
            ("WG", (MERGE_EB * MERGE_SG).to_string()),
        ],
    )
}
