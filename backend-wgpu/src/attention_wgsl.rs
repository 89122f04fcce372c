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

/// Bindings of the split-KV merge: the partials and the output.
pub(crate) fn merge_bindings() -> [(&'static str, Slot); 2] {
    [("part", Slot::Input(DType::F32)), ("out", Slot::OutF32)]
}

/// The WGSL of the fallback kernel for `dtype` (also used by the naga tests).
pub(crate) fn attention_source(dtype: DType) -> String {
    assemble(ATTENTION_WGSL, &bindings(dtype), &[])
}

/// The `n` (4 or 2) consecutive staged values from vec4 `idx`, e.g. `stage[ra]` for 4 and
/// `select(stage[ra].xy, stage[ra].zw, (ty & 1u) == 1u)` for 2 (rows 2·ty, 2·ty + 1).
fn stage_vec(idx: &str, n: usize, lane: &str) -> String {
    vec_of("stage", idx, n, lane)
}

/// [`stage_vec`] of workgroup array `arr`.
fn vec_of(arr: &str, idx: &str, n: usize, lane: &str) -> String {
    if n == 4 {
        format!("{arr}[{idx}]")
    } else {
        format!("select({arr}[{idx}].xy, {arr}[{idx}].zw, ({lane} & 1u) == 1u)")
    }
}

/// The unrolled score micro-kernel of one feature step: one vector load of the
/// invocation's `tm` rows of Q and one of its `tn` keys, then `tm·tn` FMAs, e.g. for
/// 4 × 4 `let a = stage[ra]; let b = stage[rb]; s[0] = fma(a[0], b[0], s[0]); ..`
fn flash_micro(tm: usize, tn: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "                let a = {};", stage_vec("ra", tm, "ty"));
    let _ = writeln!(s, "                let b = {};", stage_vec("rb", tn, "tx"));
    for i in 0..tm {
        for j in 0..tn {
            let q = i * tn + j;
            let _ = writeln!(s, "                s[{q}] = fma(a[{i}], b[{j}], s[{q}]);");
        }
    }
    s
}

/// The scaled, masked scores of key tn·tx + j, rows tm·ty + i, into the key-major `ps`:
/// one vec4 store per key for 4 rows, scalar stores for 2.
fn flash_write_s(tm: usize, tn: usize) -> String {
    let mut s = String::new();
    for j in 0..tn {
        let score = |i: usize| {
            format!(
                "select(neg_inf_f32(), s[{q}] * P.scale, kv0 + {tn}u * tx + {j}u < vis{i})",
                q = i * tn + j
            )
        };
        let idx = format!("({tn}u * tx + {j}u) * SPT + {tm}u * ty");
        if tm == 4 {
            let v: Vec<String> = (0..4).map(score).collect();
            let _ = writeln!(
                s,
                "        ps[({idx}) >> 2u] = vec4<f32>({});",
                v.join(", ")
            );
        } else {
            for i in 0..tm {
                let _ = writeln!(s, "        ps_set({idx} + {i}u, {});", score(i));
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

/// The unrolled P·V step of one key: `p_i` of rows tm·ty + i (one vector load), the V
/// values of the invocation's columns; `masked` keeps a key's term only for rows that see it.
fn flash_pv(tm: usize, nj: usize, vec_v: bool, masked: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "                    let pv = {};",
        vec_of(
            "ps",
            &format!("rp + {}", if tm == 4 { "ty" } else { "(ty >> 1u)" }),
            tm,
            "ty"
        )
    );
    for i in 0..tm {
        let _ = writeln!(s, "                    let p{i} = pv[{i}];");
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

/// Per row tm·ty + i: `vis{i}`, `m{i}`, `l{i}`.
fn flash_rows(tm: usize) -> String {
    let mut s = String::new();
    for i in 0..tm {
        let _ = writeln!(s, "    let vis{i} = visible(q0 + {tm}u * ty + {i}u);");
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
        let _ = write!(
            s,
            "        {{
            let r = {tm}u * ty + {i}u;
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
            "    if (q0 + {tm}u * ty + {i}u < P.sq) {{
        let obase = ((b * P.hq + h) * P.sq + q0 + {tm}u * ty + {i}u) * DV;"
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

/// The WGSL of the prefill kernel (also used by the naga tests).
pub(crate) fn flash_source(dtype: DType, d: usize, dv: usize, t: FlashTiles) -> String {
    let (tm, tn) = (t.br / 16, t.bc / 16);
    let dvp = FlashTiles::dvp(dv);
    let nj = dvp / 16;
    let vec_v = flash_vec_v(dv);
    assemble(
        FLASH_WGSL,
        &bindings(dtype),
        &[
            ("ROWS", flash_rows(tm)),
            ("RESCALE", flash_rescale(tm, nj)),
            ("STORE", flash_store(tm, nj, vec_v)),
            ("MICRO", flash_micro(tm, tn)),
            ("WRITE_S", flash_write_s(tm, tn)),
            ("PV_MASKED", flash_pv(tm, nj, vec_v, true)),
            ("PV", flash_pv(tm, nj, vec_v, false)),
            ("D", d.to_string()),
            ("DV", dv.to_string()),
            ("BR", t.br.to_string()),
            ("BC", t.bc.to_string()),
            ("BK", t.bk.to_string()),
            ("BKV", t.bkv(dv).to_string()),
            ("DVP", dvp.to_string()),
            ("STAGE_LEN4", t.stage_words(dv).div_ceil(4).to_string()),
            ("TN", tn.to_string()),
            ("PS_LEN4", (t.bc * (t.br + 4) / 4).to_string()),
            ("TM_TN", (tm * tn).to_string()),
            ("TM_NJ", (tm * nj).to_string()),
            ("TM", tm.to_string()),
            ("NJ", nj.to_string()),
        ],
    )
}

/// The V rows of a full, unmasked decode tile into registers `v{j}_{n}` (key j, column
/// t + WG·n), loaded only when `full`. Columns past Dv read column Dv − 1 (in bounds;
/// those accumulators are never stored).
fn decode_pv_load(nc: usize, rows: usize) -> String {
    let t = decode_t(rows);
    let mut s = String::new();
    for j in 0..t {
        for n in 0..nc {
            let _ = writeln!(s, "        var v{j}_{n} = 0.0;");
        }
    }
    let _ = writeln!(s, "        if (full) {{");
    for n in 0..nc {
        let _ = writeln!(
            s,
            "            let c{n} = min(t + {}u, DV - 1u) * P.v_sd;",
            n * DECODE_WG
        );
    }
    for j in 0..t {
        for n in 0..nc {
            let _ = writeln!(
                s,
                "            v{j}_{n} = load_v(vbase + (t0 + {j}u) * P.v_ss + c{n});"
            );
        }
    }
    let _ = writeln!(s, "        }}");
    s
}

/// The FMAs of a full tile: every row's probabilities times the loaded V rows.
fn decode_pv_fma(nc: usize, rows: usize) -> String {
    let t = decode_t(rows);
    let mut s = String::new();
    for j in 0..t {
        for r in 0..rows {
            let _ = writeln!(s, "            let p{j}_{r} = wp[{}u];", r * t + j);
            for n in 0..nc {
                let q = r * nc + n;
                let _ = writeln!(
                    s,
                    "            acc[{q}] = fma(p{j}_{r}, v{j}_{n}, acc[{q}]);"
                );
            }
        }
    }
    s
}

/// The decode P·V of key `key` (tile position `j`) for rows that see it.
fn decode_pv_masked(nc: usize, rows: usize) -> String {
    let mut s = String::new();
    for n in 0..nc {
        let _ = writeln!(
            s,
            "                let v{n} = load_v(vbase + key * P.v_ss + min(t + {}u, DV - 1u) * P.v_sd);",
            n * DECODE_WG
        );
    }
    for r in 0..rows {
        let _ = writeln!(s, "                let p{r} = wp[{r}u * T + j];");
        for n in 0..nc {
            let q = r * nc + n;
            let _ = writeln!(
                s,
                "                acc[{q}] = select(acc[{q}], fma(p{r}, v{n}, acc[{q}]), key < vis{r});"
            );
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

/// Every row's accumulators times its exp(m_old − m_new).
fn decode_rescale(nc: usize, rows: usize) -> String {
    let mut s = String::new();
    for r in 0..rows {
        let _ = writeln!(s, "        let a{r} = walpha[{r}u];");
        for n in 0..nc {
            let q = r * nc + n;
            let _ = writeln!(s, "        acc[{q}] = acc[{q}] * a{r};");
        }
    }
    s
}

/// The partials of every row of the block: O (columns t + WG·n), m (from the score
/// invocation of key 0), l (from invocation r).
fn decode_store(nc: usize, rows: usize) -> String {
    let t = decode_t(rows);
    let mut s = String::new();
    for r in 0..rows {
        let _ = writeln!(
            s,
            "    if (hb * R + {r}u < rows) {{
        let local = hb * R + {r}u;
        let h = kvh * P.group + local / P.sq;
        let part = ((b * P.hq + h) * P.sq + local % P.sq) * P.splits + split;"
        );
        for n in 0..nc {
            let q = r * nc + n;
            let _ = writeln!(
                s,
                "        if (t + {c}u < DV) {{ out[part * DV + t + {c}u] = acc[{q}]; }}",
                c = n * DECODE_WG
            );
        }
        let _ = writeln!(
            s,
            "        if (t == {m}u) {{ out[P.ml_base + 2u * part] = m_r; }}
        if (t == {r}u) {{ out[P.ml_base + 2u * part + 1u] = l_r; }}
    }}",
            m = r * t
        );
    }
    s
}

/// The WGSL of the split-KV decode kernel (also used by the naga tests).
pub(crate) fn decode_source(dtype: DType, d: usize, dv: usize, rows: usize) -> String {
    let t = decode_t(rows);
    let sd4 = decode_sd4(d);
    let nc = dv.div_ceil(DECODE_WG).max(1);
    assemble(
        DECODE_WGSL,
        &bindings(dtype),
        &[
            ("ROWS", decode_rows(rows)),
            ("RESCALE", decode_rescale(nc, rows)),
            ("STORE", decode_store(nc, rows)),
            ("PV_LOAD", decode_pv_load(nc, rows)),
            ("PV_FMA", decode_pv_fma(nc, rows)),
            ("PV_MASKED", decode_pv_masked(nc, rows)),
            ("D", d.to_string()),
            ("DV", dv.to_string()),
            ("R_NC", (rows * nc).to_string()),
            ("RT", (rows * t).to_string()),
            ("R", rows.to_string()),
            ("T", t.to_string()),
            ("WG", DECODE_WG.to_string()),
            ("NC", nc.to_string()),
            ("DP4", d.div_ceil(4).to_string()),
            ("SD4", sd4.to_string()),
            ("WQ_LEN", (rows * sd4).to_string()),
            ("WK_LEN", (t * sd4).to_string()),
        ],
    )
}

/// The WGSL of the split-KV merge (also used by the naga tests).
pub(crate) fn merge_source() -> String {
    assemble(MERGE_WGSL, &merge_bindings(), &[])
}
