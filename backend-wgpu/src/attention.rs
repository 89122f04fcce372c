//! Fused attention: flash-style online softmax with memory linear in the sequence
//! lengths, causal (bottom-right), GQA/MQA, decode. Three kernels, chosen by [`plan`]:
//!
//! - **Prefill** (`attention_flash.wgsl`, FlashAttention-2 style; Dao 2023,
//!   arXiv:2307.08691): one workgroup of 16 × 16 invocations per (batch, query head,
//!   block of `br` query rows). Per tile of `bc` keys, S = Q·Kᵀ is register-tiled like
//!   the tiled matmul (each invocation a (br/16) × (bc/16) micro-tile, Q and K staged
//!   k-major `bk` features at a time; the micro-tile's rows and keys are contiguous, so
//!   each feature costs one vec4 (or vec2) workgroup load of each operand instead of
//!   four scalar ones), the softmax runs in f32 over S in workgroup
//!   memory (running max and sum, rescale by exp(m_old − m_new)), and O = P·V accumulates
//!   in registers (each invocation the same br/16 rows × ⌈Dv/16⌉ columns; P is stored
//!   key-major so that a key's probabilities for those rows are one vector load, and for
//!   Dv a multiple of 64 the columns come in contiguous fours read as one vec4), V staged
//!   `bkv` keys at a time. Causal tiles no row of the block sees are skipped, each head's query blocks run
//!   last-first (the heaviest first, so the grid's tail is light blocks), and only tiles
//!   that some row sees partly pay for the masked P·V loop (a masked key must contribute
//!   nothing even where its value is ∞ or NaN, as in the reference). Tile variants, first that fits `max_compute_workgroup_storage_size` wins
//!   ([`FLASH_TILES`]): 64 × 64 keys with 32-feature steps (36 KiB, e.g. the H100's
//!   48 KiB), 64 × 64 with 16-feature steps (27.5 KiB, the common 32 KiB), 32 × 32 with
//!   16-feature steps (11 KiB, WebGPU's guaranteed 16 KiB). 256 invocations are
//!   WebGPU's guaranteed maximum; a 4 × 4 micro-tile gives each workgroup-memory read 4
//!   FMAs as in the matmul, and 16 + 4·⌈Dv/16⌉ accumulators (48 at Dv = 128) stay in
//!   registers.
//! - **Split-KV decode** (`attention_decode.wgsl` + `attention_merge.wgsl`) for
//!   `Sq ≤ 4`: few queries leave a prefill grid nearly empty, so the keys are split
//!   across workgroups (at least [`DECODE_MIN_CHUNK`] keys each, about
//!   [`DECODE_TARGET_GROUPS`] workgroups in all). A workgroup takes one kv head and 8
//!   (query head of its group, query) rows, or 4 where a kv head has at most 4 (the
//!   common GQA group of 4 at Sq = 1: no idle rows), so a GQA group reads K/V once; it
//!   writes an unnormalised partial (m, l, O) per row, and the merge combines the splits
//!   by the log-sum-exp rule. Why these sizes: 128 invocations compute the R rows ×
//!   128/R keys of a tile's scores one each, the dot products on vec4s of Q and K staged
//!   with coalesced loads (rows padded to an odd count of vec4s: no bank conflicts). At
//!   D = 128, R = 8 needs ≈ 13.4 KiB (within WebGPU's 16 KiB), R = 4 ≈ 19.6 KiB (taken
//!   where it fits, else R = 8). V is read straight from global memory, one column per
//!   invocation, and on full tiles the V loads are issued with the K loads so that the
//!   two latencies overlap. The benchmark decode (Hq 32, Hkv 8, Sq 1, Skv 8192, D 128)
//!   runs R = 4 in 64 splits of 128 keys: 512 workgroups.
//! - **Fallback** (`attention.wgsl`): one workgroup per query row, any size. Taken for
//!   `D` or `Dv` above [`MAX_FAST_DIM`], empty outputs, and when a fast kernel's
//!   workgroup memory exceeds the device's limit.
//!
//! Paths: Sq ≤ 4 → decode (if D ≤ 256, Dv ≤ 256); larger Sq → prefill with the largest
//! tiling that fits (the H100, 48 KiB: 64 × 64 × 32; lavapipe, 32 KiB: 64 × 64 × 16);
//! D or Dv > 256 or no output → fallback. Any strides, offsets and dtype (f32, f16
//! through `shader-f16`, bf16 as packed words) take the same paths.
//!
//! Head dims are baked into the fast kernels (one pipeline per (dtype, D, Dv, tiles),
//! each compiled once); loads go through the views' strides, so every layout takes the
//! fast paths (unit stride along D makes their loads coalesced). Bounds the host
//! guarantees: every element index of q, k, v, the output and the decode scratch fits u32
//! (`fit_u32` on the strides, the lengths, and `Sq + Skv + 64` for the causal bound), the
//! bindings hold at most `max_storage_buffer_binding_size` bytes, and the kernels check
//! every load against Sq, Skv, D and Dv (zero-filling ragged tiles) and every store
//! against Sq and Dv, so no size must be a multiple of a tile.

use crate::WgpuBackend;
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, Slot, assemble, fit_u32};
use std::fmt::Write as _;
use xkern_core::{AttentionSpec, DType, Result, View4};

const ATTENTION_WGSL: &str = include_str!("attention.wgsl");
const FLASH_WGSL: &str = include_str!("attention_flash.wgsl");
const DECODE_WGSL: &str = include_str!("attention_decode.wgsl");
const MERGE_WGSL: &str = include_str!("attention_merge.wgsl");
/// Output features per workgroup of the fallback: 64 invocations × 4 accumulators.
const DV_CHUNK: usize = 256;
/// Largest D and Dv of the fast kernels (their accumulators and staged rows grow with Dv).
pub(crate) const MAX_FAST_DIM: usize = 256;
/// Largest Sq taken by the split-KV decode kernel.
pub(crate) const DECODE_MAX_SQ: usize = 4;
/// Invocations of a decode workgroup; its rows (query head × query) R are 8, or 4 where
/// a kv head has at most 4 rows (then tiles of 128 / R = 32 keys, no idle rows).
const DECODE_WG: usize = 128;
/// Fewest keys per split: below this the merge's traffic outweighs the parallelism.
pub(crate) const DECODE_MIN_CHUNK: usize = 64;
/// Workgroups the decode aims at (a few per SM of a large GPU).
pub(crate) const DECODE_TARGET_GROUPS: usize = 512;

const _: () = assert!(DECODE_MIN_CHUNK.is_multiple_of(DECODE_WG / 4));

/// Keys per decode tile for `rows` rows: one score per invocation.
fn decode_t(rows: usize) -> usize {
    DECODE_WG / rows
}

/// Row stride, in vec4s, of the staged Q and K of the decode kernel: D rounded up to 4,
/// then to an odd count of vec4s so that the 8 invocations of a quarter warp reading
/// neighbouring rows hit distinct banks.
fn decode_sd4(d: usize) -> usize {
    d.div_ceil(4) | 1
}

/// Tile sizes of the prefill kernel: query rows, keys and features per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlashTiles {
    pub(crate) br: usize,
    pub(crate) bc: usize,
    pub(crate) bk: usize,
}

/// The prefill variants, largest first (see the module doc).
pub(crate) const FLASH_TILES: [FlashTiles; 3] = [
    FlashTiles {
        br: 64,
        bc: 64,
        bk: 32,
    },
    FlashTiles {
        br: 64,
        bc: 64,
        bk: 16,
    },
    FlashTiles {
        br: 32,
        bc: 32,
        bk: 16,
    },
];

// 16 × 16 invocations: rows and keys split evenly, and the softmax step's invocations
// per row divide the keys.
const _: () = {
    let mut rest: &[FlashTiles] = &FLASH_TILES;
    while let [t, tail @ ..] = rest {
        // Micro-tiles of 2 or 4 rows and keys: one vec2 or vec4 load each.
        assert!(t.br == 32 || t.br == 64);
        assert!(t.bc == 32 || t.bc == 64);
        assert!(t.bc.is_multiple_of(256 / t.br));
        rest = tail;
    }
};

impl FlashTiles {
    /// Dv rounded up to the 16 columns of the invocation grid.
    fn dvp(dv: usize) -> usize {
        dv.div_ceil(16).max(1) * 16
    }
    /// Words of the staged Q and K chunks (rows padded by 4: vec4-aligned).
    fn qk_words(self) -> usize {
        self.bk * (self.br + 4) + self.bk * (self.bc + 4)
    }
    /// Keys of V staged per step: the largest power of two up to `bc` whose rows fit the
    /// space of the Q and K chunks.
    fn bkv(self, dv: usize) -> usize {
        let mut n = self.bc;
        while n > 1 && n * Self::dvp(dv) > self.qk_words() {
            n /= 2;
        }
        n
    }
    fn stage_words(self, dv: usize) -> usize {
        self.qk_words().max(self.bkv(dv) * Self::dvp(dv))
    }
    /// Workgroup memory in bytes.
    pub(crate) fn bytes(self, dv: usize) -> usize {
        4 * (self.stage_words(dv) + self.bc * (self.br + 4) + 2 * 256)
    }
}

/// Workgroup memory of the decode kernel with `rows` rows, in bytes.
pub(crate) fn decode_bytes(d: usize, rows: usize) -> usize {
    let t = decode_t(rows);
    4 * (4 * (rows + t) * decode_sd4(d) + 2 * rows * t + rows)
}

/// Which kernel runs an attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The prefill kernel with these tiles.
    Flash(FlashTiles),
    /// Split-KV decode: `rows` (query head, query) rows per workgroup, `splits`
    /// workgroups per (batch, kv head, row block), `chunk` keys each (a multiple of 32).
    Decode {
        rows: usize,
        splits: usize,
        chunk: usize,
    },
    /// The one-row-per-workgroup kernel.
    Fallback,
}

/// Chooses the kernel for `spec` on a device with `wg_bytes` of workgroup memory.
pub(crate) fn plan(spec: &AttentionSpec, wg_bytes: usize) -> Plan {
    let (d, dv) = (spec.head_dim, spec.v_head_dim);
    let rows = spec.batch * spec.q_heads * spec.q_seq;
    if rows == 0 || dv == 0 || d > MAX_FAST_DIM || dv > MAX_FAST_DIM {
        return Plan::Fallback;
    }
    if spec.q_seq <= DECODE_MAX_SQ {
        let group = spec.q_heads / spec.kv_heads.max(1);
        let per_kv = group * spec.q_seq;
        let rows = if per_kv <= 4 && decode_bytes(d, 4) <= wg_bytes {
            4
        } else {
            8
        };
        if decode_bytes(d, rows) > wg_bytes {
            return Plan::Fallback;
        }
        let base = spec.batch * spec.kv_heads * per_kv.div_ceil(rows);
        let most = spec.kv_seq.div_ceil(DECODE_MIN_CHUNK).max(1);
        let want = DECODE_TARGET_GROUPS.div_ceil(base.max(1)).clamp(1, most);
        let chunk = spec.kv_seq.div_ceil(want).div_ceil(32).max(1) * 32;
        let splits = spec.kv_seq.div_ceil(chunk).max(1);
        return Plan::Decode {
            rows,
            splits,
            chunk,
        };
    }
    FLASH_TILES
        .into_iter()
        .find(|t| t.bytes(dv) <= wg_bytes)
        .map_or(Plan::Fallback, Plan::Flash)
}

fn bindings(dtype: DType) -> [(&'static str, Slot); 4] {
    [
        ("q", Slot::Input(dtype)),
        ("k", Slot::Input(dtype)),
        ("v", Slot::Input(dtype)),
        ("out", Slot::OutF32),
    ]
}

fn merge_bindings() -> [(&'static str, Slot); 2] {
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

fn view(p: Params, v: &View4) -> Result<Params> {
    p.u(v.offset)?
        .u(v.strides[0])?
        .u(v.strides[1])?
        .u(v.strides[2])?
        .u(v.strides[3])
}

fn views(p: Params, spec: &AttentionSpec) -> Result<Params> {
    view(view(view(p, &spec.q)?, &spec.k)?, &spec.v)
}

impl WgpuBackend {
    /// The plan of `spec` on this device.
    pub(crate) fn attention_plan(&self, spec: &AttentionSpec) -> Plan {
        let wg = self.gpu().limits.max_compute_workgroup_storage_size;
        plan(spec, usize::try_from(wg).unwrap_or(usize::MAX))
    }

    /// [`xkern_core::Backend::attention`].
    pub(crate) fn attention_impl(
        &self,
        spec: &AttentionSpec,
        q: &WgpuStorage,
        k: &WgpuStorage,
        v: &WgpuStorage,
    ) -> Result<WgpuStorage> {
        self.attention_with(spec, q, k, v, self.attention_plan(spec))
    }

    /// Attention with a chosen plan (tests force every variant). A prefill or decode plan
    /// must come from [`plan`] for this spec, or at least respect its size bounds.
    pub(crate) fn attention_with(
        &self,
        spec: &AttentionSpec,
        q: &WgpuStorage,
        k: &WgpuStorage,
        v: &WgpuStorage,
        plan: Plan,
    ) -> Result<WgpuStorage> {
        self.check_dtype("attention", spec.dtype)?;
        let rows = spec.batch * spec.q_heads * spec.q_seq;
        let len = rows * spec.v_head_dim;
        fit_u32(len)?;
        // The causal bound i + 1 + Skv for i up to a block past Sq.
        fit_u32(spec.q_seq + spec.kv_seq + 64)?;
        let group = (spec.q_heads / spec.kv_heads.max(1)).max(1);
        let (dtype, d, dv) = (spec.dtype, spec.head_dim, spec.v_head_dim);
        match plan {
            Plan::Flash(t) => {
                let key = format!(
                    "attention-flash/{dtype}/{d}/{dv}/{}x{}x{}",
                    t.br, t.bc, t.bk
                );
                let kernel =
                    self.kernel(&key, &bindings(dtype), || flash_source(dtype, d, dv, t))?;
                self.record(|rec| {
                    let out = self.alloc_storage(DType::F32, len)?;
                    let q_blocks = spec.q_seq.div_ceil(t.br);
                    let params = Params::default()
                        .u(spec.q_heads)?
                        .u(group)?
                        .u(spec.q_seq)?
                        .u(spec.kv_seq)?
                        .f(spec.scale)
                        .u(usize::from(spec.causal))?
                        .u(q_blocks)?;
                    let groups = spec.batch * spec.q_heads * q_blocks;
                    rec.dispatch(&kernel, &[q, k, v, &out], groups, views(params, spec)?)?;
                    self.finish_f32(rec, out, dtype, len)
                })
            }
            Plan::Decode {
                rows: r,
                splits,
                chunk,
            } => {
                let key = format!("attention-decode/{dtype}/{d}/{dv}/r{r}");
                let kernel =
                    self.kernel(&key, &bindings(dtype), || decode_source(dtype, d, dv, r))?;
                let merge = self.kernel("attention-merge", &merge_bindings(), merge_source)?;
                let parts = rows * splits;
                let ml_base = parts * dv;
                let scratch_len = ml_base + 2 * parts;
                fit_u32(scratch_len)?;
                self.record(|rec| {
                    let part = self.alloc_storage(DType::F32, scratch_len)?;
                    let hblocks = (group * spec.q_seq).div_ceil(r);
                    let params = Params::default()
                        .u(spec.q_heads)?
                        .u(spec.kv_heads)?
                        .u(group)?
                        .u(spec.q_seq)?
                        .u(spec.kv_seq)?
                        .f(spec.scale)
                        .u(usize::from(spec.causal))?
                        .u(splits)?
                        .u(chunk)?
                        .u(hblocks)?
                        .u(ml_base)?;
                    let groups = spec.batch * spec.kv_heads * hblocks * splits;
                    rec.dispatch(&kernel, &[q, k, v, &part], groups, views(params, spec)?)?;
                    let out = self.alloc_storage(DType::F32, len)?;
                    let col_blocks = dv.div_ceil(128);
                    let params = Params::default()
                        .u(spec.q_seq)?
                        .u(spec.kv_seq)?
                        .u(usize::from(spec.causal))?
                        .u(splits)?
                        .u(dv)?
                        .u(ml_base)?
                        .u(col_blocks)?;
                    rec.dispatch(&merge, &[&part, &out], rows * col_blocks, params)?;
                    rec.keep(&part);
                    self.finish_f32(rec, out, dtype, len)
                })
            }
            Plan::Fallback => {
                let kernel =
                    self.kernel(&format!("attention/{dtype}"), &bindings(dtype), || {
                        attention_source(dtype)
                    })?;
                self.record(|rec| {
                    let out = self.alloc_storage(DType::F32, len)?;
                    let chunks = dv.div_ceil(DV_CHUNK);
                    let params = Params::default()
                        .u(spec.q_heads)?
                        .u(group)?
                        .u(spec.q_seq)?
                        .u(spec.kv_seq)?
                        .u(d)?
                        .u(dv)?
                        .f(spec.scale)
                        .u(usize::from(spec.causal))?
                        .u(chunks)?;
                    rec.dispatch(
                        &kernel,
                        &[q, k, v, &out],
                        rows * chunks,
                        views(params, spec)?,
                    )?;
                    self.finish_f32(rec, out, dtype, len)
                })
            }
        }
    }
}
