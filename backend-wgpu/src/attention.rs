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
//!   nothing even where its value is ∞ or NaN, as in the reference). Staging issues all
//!   of an invocation's loads of a step before its stores (generated straight-line
//!   code), the Q/K loads of the next feature step before the current step's
//!   micro-kernel (register prefetch), the first V rows of a tile during the softmax
//!   step, the next V rows during a V step's P·V, and after a tile's last V step the
//!   next tile's first Q/K step (so only the block's very first load waits). Where Q, K
//!   and V rows are 4-aligned with unit feature stride ([`flash_vec`]) every load is a
//!   vec4 (8 B for f16/bf16, 16 B for f32): a warp's Q/K vec4s are 16 rows × 2 columns,
//!   so that their k-major stores hit 32 distinct banks. The micro-kernels of a feature
//!   step and of an unmasked V step are unrolled with constant offsets (as in
//!   `matmul_wide.wgsl`), so the driver can schedule later workgroup loads ahead of
//!   earlier FMAs.
//!
//!   Tile variants ([`FLASH_TILES`]; the first that fits `max_compute_workgroup_storage_size`
//!   and Dv wins; `XKERN_WGPU_ATTN_TILE=128x64x32|128x64x16|64x64x32|64x64x16|32x32x16|auto`
//!   forces one where it fits; 128 × 64 × 16 ([`FORCED_TILES`]) is taken only so):
//!   - **128 × 64 × 32** (43 KiB; the H100's 48 KiB; Dv ≤ 128): 8 × 4 scores per
//!     invocation (rows 4·ty + i and 64 + 4·ty + i: two vec4 loads of Q and one of K per
//!     feature feed 32 FMAs) and 8 × 8 P·V outputs at Dv = 128 (two vec4 loads of P and
//!     two of V per key feed 64 FMAs), as the 128 × 128 matmul's 8 × 8. P (64 × 132
//!     words, 33 KiB) would not fit beside Q/K chunks and V, so the Q/K chunks (32 ×
//!     (132 + 68) words, 25 KiB) share P's space (S is in registers while they are live)
//!     and V gets 16 keys × 128 columns (8 KiB) of its own. Per tile and invocation at
//!     D = Dv = 128 (counted from the generated code; the last item estimated): 8,192
//!     FMAs, 384 + 256 vec4 workgroup loads, ≈ 150 workgroup stores, 24 + 8 global vec4
//!     loads, ≈ 600 other (softmax: 32 exp; index and bounds arithmetic): ≈ 9.6K
//!     instructions, 85 % FMAs
//!     (the 64-row tiling: ≈ 5.5K for 4,096 FMAs, 75 %). 19 barriers per tile for twice
//!     the work of the 64-row tile's 15. Registers ≈ 165 per invocation (64
//!     accumulators, 32 scores, 24 staged Q/K and 8 staged V words, 24 row states,
//!     addresses): one 256-invocation workgroup (8 warps) per H100 SM, like the 128 ×
//!     128 matmul (37 TFLOP/s); workgroup memory would allow 5. Expected on the H100
//!     (B1 H32 S4096 D128 causal f16, 137 GFLOP useful): 32 blocks of 128 rows per head
//!     see 2, 4, .. 64 tiles: 33.8K tiles (half the 64-row tiling's 66.5K), 142 GFLOP
//!     computed; at the matmul's 55 % of the 67 TFLOP/s FMA peak ≈ 3.9 ms, plus
//!     ≈ 0.4 ms of barrier drains (256 tiles per SM × 19 × ≈ 150 cycles) and the
//!     softmax: ≈ 5–7 ms (20–27 TFLOP/s) against the issue's ≤ 7.7 ms. Above Dv = 128
//!     its 8 × 16 accumulators would spill, so larger Dv take the next tiling.
//!   - **64 × 64 × 32** (36 KiB), **64 × 64 × 16** (27.5 KiB, the common 32 KiB,
//!     lavapipe), **32 × 32 × 16** (11 KiB, WebGPU's guaranteed 16 KiB): 4 × 4 (2 × 2)
//!     score micro-tiles, 16 + 4·⌈Dv/16⌉ accumulators, V sharing the Q/K chunks' space
//!     (as many keys per step as fit). Measured on the H100 at 64 × 64 × 32 before the
//!     vec4 loads, unrolling and next-tile prefetch: 14.2 ms (9.7 TFLOP/s) on the
//!     benchmark, 2 workgroups per SM (≈ 100 registers).
//!
//!   Tests run the 128-row code on lavapipe (32 KiB) through test twins with 32-key tiles
//!   (`TEST_TILES`: 128 × 32 × 32 with 8 V keys a step, 128 × 32 × 16 with 16), every
//!   tiling on aligned (vec4) and unaligned (scalar) rows. Not done (next steps, if
//!   the H100 shows the barriers or staging): Q kept resident as f16 (32 KiB at 128 ×
//!   128: needs P elsewhere), V staged as f16 for f16 inputs (32 keys a step: 4 fewer
//!   barriers), the softmax's row max and sum by subgroup shuffles instead of `wred`.
//! - **Split-KV decode** (`attention_decode.wgsl` + `attention_merge.wgsl`) for
//!   `Sq ≤ 4`: few queries leave a prefill grid nearly empty, so the keys are split
//!   across workgroups (whole tiles of 32 keys, at least [`DECODE_MIN_CHUNK`] keys each,
//!   about [`DECODE_TARGET_GROUPS`] workgroups in all; both tunable, see
//!   [`DecodeTuning`]). A workgroup takes one kv head and 8 (query head of its group,
//!   query) rows, or 4 where a kv head has at most 4 (the common GQA group of 4 at
//!   Sq = 1: no idle rows), so a GQA group reads K/V once; it writes an unnormalised
//!   partial (m, l, O) per row, and the merge combines the splits by the log-sum-exp rule
//!   and writes the output dtype itself (f16/bf16 as words of two elements, the same
//!   exact rounding as the cast kernel): two dispatches per op, where the first version
//!   had three (decode, merge, f32 → f16 cast), each behind a full barrier. Why these
//!   sizes: 128 invocations compute the R rows × T = 128/R keys of a tile's scores one
//!   each, the dot products on vec4s of Q and K staged in workgroup memory (rows padded
//!   to an odd count of vec4s: no bank conflicts). At D = 128, R = 8 needs ≈ 13.9 KiB
//!   (within WebGPU's 16 KiB), R = 4 ≈ 20.1 KiB (taken where it fits and D, Dv ≤ 128,
//!   else R = 8: at 256, R = 4 would hold 48 vec4s of K/V per invocation in registers,
//!   R = 8 holds 24).
//!
//!   Memory-level parallelism is what a decode lives on: it reads every K/V byte once,
//!   so its time is bytes over bandwidth only when enough bytes are in flight to cover
//!   the latency (≈ 3.35 TB/s × ≈ 0.8 µs ≈ 2.7 MB on an H100). The first version staged
//!   K in a loop of dependent load/store pairs, one 2-byte load per invocation in flight
//!   (≈ 130 KB on the whole GPU), and measured 190 GB/s. Now every invocation issues all
//!   its loads of a tile back to back into registers, one vec4 each ([`decode_vec`]:
//!   16 B for f32, 8 B for f16/bf16, where the feature stride is 1 and rows start on a
//!   multiple of 4 elements; else four scalar loads), and issues the *next* tile's loads
//!   before the current tile's math (software pipelining), so a workgroup waits for
//!   memory once rather than once per tile. K: invocation t loads vec4s t + 128·i of the
//!   tile (neighbouring invocations, neighbouring 8/16 B of a row). V: invocation
//!   (vg, vc) loads the vec4 column vc of keys vg + KG·i (CW ≥ ⌈Dv/4⌉ invocations per
//!   key group, KG = 128/CW groups: at Dv = 128, 4 groups of 32, each warp one
//!   contiguous 256 B row) and accumulates R rows × 4 columns.
//!
//!   The softmax runs per key group: each group keeps its own running max and sum per row
//!   over its keys (it reads its keys' scores, stored key-major, as one vec4 per key and
//!   four rows), so a tile costs two workgroup barriers (K staged; scores written) and no
//!   loop over the tile's keys; the second version's per-tile workgroup max and sum cost
//!   a third barrier and two T-long serial loops of workgroup-memory reads per
//!   invocation (≈ 1,000 dependent cycles per tile). The exponentials are computed by
//!   each of a group's CW invocations (R·T/KG per invocation per tile, 32 at the
//!   benchmark shape): cheaper than another barrier. At the end the KG groups are
//!   combined by the log-sum-exp rule through workgroup memory (the staged-K buffer, free
//!   then: one barrier for R = 4 at D = 128, where the second version took 2 per row).
//!   Why no fused merge: the last workgroup of a row block could merge its splits behind
//!   an atomic counter, but WGSL has no device-scope release/acquire, so the partials of
//!   the other workgroups are not guaranteed visible to it; the merge stays a dispatch.
//!   The merge is 256 invocations per 32 output elements, 8 split groups × 8 splits per
//!   invocation with all 24 loads of a round in flight (64 splits per round, as many
//!   rounds as needed), combined in a fixed order: deterministic.
//!
//!   Measured on the H100 (GPU time, benchmark decode): 90 µs (second version) → 49 µs
//!   with this design at 64 splits, 40–42 µs at 32 splits (now the default: 256 target
//!   workgroups); the 8-row, split-dot and K-only-prefetch variants measured 48–78 µs.
//!   That is ≈ 0.8 TB/s, a quarter of HBM: the estimate below assumed full issue and
//!   was not met; not profiled further.
//!
//!   Expected on an H100 for the benchmark decode (Hq 32, Hkv 8, Sq 1, Skv 8192,
//!   D 128, f16), as first planned: R = 4, 64 splits of 128 keys (4 tiles of 32), 512 workgroups of 4
//!   warps, 20.1 KiB each, all resident at once (≈ 3.9 per SM; registers ≈ 110–128 per
//!   invocation). Per tile each invocation has 8 K + 8 V loads of 8 B in flight: 128 B ×
//!   65,536 invocations = 8.4 MB, over 3× the latency-bandwidth product. HBM: 33.5 MB /
//!   3.35 TB/s = 10 µs. Issue: ≈ 750 instructions per invocation per tile (128 score
//!   FMAs on 64 vec4 workgroup reads, 128 P·V FMAs, 32 exponentials, 64 f16 → f32
//!   conversions, the loads' address math), 2,048 warps × 4 tiles → ≈ 6 µs at full
//!   issue, overlapping the loads; the score reads (each staged K vec4 read by the R
//!   rows' invocations, 64 KiB per workgroup tile) ≈ 4 µs of workgroup-memory bandwidth.
//!   Merge: 1 MB of partials from L2 in one round of loads, ≈ 1–2 µs plus the barrier
//!   between the dispatches. Expected ≈ 13–18 µs of GPU time (≈ 1.9–2.6 TB/s), from
//!   90 µs measured for the second version (whose own estimate was 15–20 µs: the gap
//!   was not profiled; the tunables are there to find it). If registers are the limit
//!   (K and V a tile ahead plus the current V: ≈ 96 of them at R = 4 before the
//!   accumulators and probabilities; under 128 per invocation is needed for 4
//!   workgroups per SM, i.e. all 512 in one wave), `XKERN_WGPU_DECODE_PREFETCH=k` drops
//!   the V prefetch (32 fewer) and `XKERN_WGPU_DECODE_GROUPS=256` gives one wave of
//!   fewer, longer workgroups. Next step if the score reads show up: split each score's
//!   features over R invocations (every K vec4 read once from workgroup memory instead of
//!   R times, partial dot products summed by the V invocations: ≈ 40 % fewer
//!   workgroup-memory wavefronts for ≈ 30 % more ALU instructions): written, off by
//!   default until timed, `XKERN_WGPU_DECODE_DOT=split`.
//! - **Fallback** (`attention.wgsl`): one workgroup per query row, any size. Taken for
//!   `D` or `Dv` above [`MAX_FAST_DIM`], empty outputs, and when a fast kernel's
//!   workgroup memory exceeds the device's limit.
//!
//! Paths: Sq ≤ 4 → decode (if D ≤ 256, Dv ≤ 256); larger Sq → prefill with the largest
//! tiling that fits (the H100, 48 KiB: 128 × 64 × 32 at Dv ≤ 128, else 64 × 64 × 32;
//! lavapipe, 32 KiB: 64 × 64 × 16);
//! D or Dv > 256 or no output → fallback. Any strides, offsets and dtype (f32, f16
//! through `shader-f16`, bf16 as packed words) take the same paths.
//!
//! The WGSL text, with its constants and unrolled loops, is generated in
//! `attention_wgsl.rs`. Head dims are baked into the fast kernels (one pipeline per (dtype, D, Dv, tiles),
//! each compiled once); loads go through the views' strides, so every layout takes the
//! fast paths (unit stride along D makes their loads coalesced). Bounds the host
//! guarantees: every element index of q, k, v, the output and the decode scratch fits u32
//! (`fit_u32` on the strides, the lengths, and `Sq + Skv + 128` for the causal bound), the
//! bindings hold at most `max_storage_buffer_binding_size` bytes, and the kernels check
//! every load against Sq, Skv, D and Dv (zero-filling ragged tiles) and every store
//! against Sq and Dv, so no size must be a multiple of a tile.

use crate::WgpuBackend;
use crate::attention_wgsl::{
    MERGE_EB, attention_source, bindings, decode_bindings, decode_source, flash_bindings,
    flash_source, merge_bindings, merge_source,
};
use crate::buffers::WgpuStorage;
use crate::pipelines::{Params, fit_u32};
use xkern_core::{AttentionSpec, DType, Result, View4};

/// Output features per workgroup of the fallback: 64 invocations × 4 accumulators.
const DV_CHUNK: usize = 256;
/// Largest D and Dv of the fast kernels (their accumulators and staged rows grow with Dv).
pub(crate) const MAX_FAST_DIM: usize = 256;
/// Largest Sq taken by the split-KV decode kernel.
pub(crate) const DECODE_MAX_SQ: usize = 4;
/// Invocations of a decode workgroup; its rows (query head × query) R are 8, or 4 where
/// a kv head has at most 4 rows (then tiles of 128 / R = 32 keys, no idle rows).
pub(crate) const DECODE_WG: usize = 128;
/// Fewest keys per split: below this the merge's traffic outweighs the parallelism.
pub(crate) const DECODE_MIN_CHUNK: usize = 64;
/// Workgroups the decode aims at (about two per SM of a large GPU): on the H100 the
/// benchmark decode took 42 µs of GPU time with 256 (32 splits), 49 µs with 512, 59 µs
/// with 1024 (one run, `XKERN_WGPU_DECODE_GROUPS`).
pub(crate) const DECODE_TARGET_GROUPS: usize = 256;

const _: () = assert!(DECODE_MIN_CHUNK.is_multiple_of(DECODE_WG / 4));

/// Keys per decode tile for `rows` rows: one score per invocation.
pub(crate) fn decode_t(rows: usize) -> usize {
    DECODE_WG / rows
}

/// Row stride, in vec4s, of the staged Q and K of the decode kernel: D rounded up to 4,
/// then to an odd count of vec4s so that the 8 invocations of a quarter warp reading
/// neighbouring rows hit distinct banks.
pub(crate) fn decode_sd4(d: usize) -> usize {
    d.div_ceil(4) | 1
}

/// Tile sizes of the prefill kernel: query rows, keys and features per step, and where
/// V is staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlashTiles {
    pub(crate) br: usize,
    pub(crate) bc: usize,
    pub(crate) bk: usize,
    /// 0: V shares the space of the Q and K chunks, as many keys per step as fit (the
    /// 64- and 32-row tilings). Else V has a space of its own, `vk` keys per step at
    /// Dv ≤ 128 (fewer above), and the Q and K chunks share the space of P (the 128-row
    /// tilings: P alone is 33 KiB there).
    pub(crate) vk: usize,
}

/// The prefill variants, largest first (see the module doc). The 128-row tiling runs
/// only where Dv ≤ [`WIDE_MAX_DV`].
pub(crate) const FLASH_TILES: [FlashTiles; 4] = [
    FlashTiles {
        br: 128,
        bc: 64,
        bk: 32,
        vk: 16,
    },
    FlashTiles {
        br: 64,
        bc: 64,
        bk: 32,
        vk: 0,
    },
    FlashTiles {
        br: 64,
        bc: 64,
        bk: 16,
        vk: 0,
    },
    FlashTiles {
        br: 32,
        bc: 32,
        bk: 16,
        vk: 0,
    },
];

/// Tilings only `XKERN_WGPU_ATTN_TILE` picks (A/B timing): 128 × 64 with 16-feature
/// steps (the same 43 KiB as 128 × 64 × 32, 12 staged Q/K registers instead of 24, for
/// the case that the H100's compiler spills the 32-feature version; 8 more barriers per
/// tile).
pub(crate) const FORCED_TILES: [FlashTiles; 1] = [FlashTiles {
    br: 128,
    bc: 64,
    bk: 16,
    vk: 16,
}];

/// Tilings the host never picks, for the tests: 32-feature steps with 64 query rows, as
/// in the H100's 64-row tiling (36 KiB: more than lavapipe's 32 KiB); and the 128-row
/// code with 32-key tiles (23 and 27 KiB), so that the generated code of the H100's
/// 128-row tiling (44 KiB) runs on lavapipe, V's own space with 8 and 16 keys a step.
#[cfg(test)]
pub(crate) const TEST_TILES: [FlashTiles; 4] = [
    FlashTiles {
        br: 64,
        bc: 32,
        bk: 32,
        vk: 0,
    },
    FlashTiles {
        br: 32,
        bc: 64,
        bk: 16,
        vk: 0,
    },
    FlashTiles {
        br: 128,
        bc: 32,
        bk: 32,
        vk: 8,
    },
    FlashTiles {
        br: 128,
        bc: 32,
        bk: 16,
        vk: 16,
    },
];

/// Largest Dv of the 128-row tilings: 8 rows × Dv/16 accumulators per invocation (64 at
/// 128) plus 32 scores and the staging registers fill the 255 registers an H100
/// invocation of a 256-wide workgroup may have; at 256 they would spill.
pub(crate) const WIDE_MAX_DV: usize = 128;

// 16 × 16 invocations: rows and keys split evenly, and the softmax step's invocations
// per row divide the keys.
const _: () = {
    let mut rest: &[FlashTiles] = &FLASH_TILES;
    while let [t, tail @ ..] = rest {
        assert!(t.valid());
        rest = tail;
    }
    assert!(FORCED_TILES[0].valid());
};

impl FlashTiles {
    /// Whether the generator supports these sizes: micro-tiles of 2 or 4 rows and keys
    /// (one vec2 or vec4 load each) or of 8 rows (two vec4s, 64 rows apart), and feature
    /// steps a multiple of 4 (the Q and K staging uses whole rows of 256 invocations).
    pub(crate) const fn valid(self) -> bool {
        (self.br == 32 || self.br == 64 || self.br == 128)
            && (self.bc == 32 || self.bc == 64)
            && self.bc.is_multiple_of(256 / self.br)
            && (self.bk == 16 || self.bk == 32)
            && (self.vk == 0 || self.vk.is_power_of_two())
            // The 128-row tilings keep Q and K in P's space.
            && ((self.br == 128) == (self.vk > 0))
    }
    /// Dv rounded up to the 16 columns of the invocation grid.
    pub(crate) fn dvp(dv: usize) -> usize {
        dv.div_ceil(16).max(1) * 16
    }
    /// Words of the staged Q and K chunks (rows padded by 4: vec4-aligned).
    fn qk_words(self) -> usize {
        self.bk * (self.br + 4) + self.bk * (self.bc + 4)
    }
    /// Words of P (key-major, rows padded by 4).
    fn p_words(self) -> usize {
        self.bc * (self.br + 4)
    }
    /// Keys of V staged per step: the largest power of two up to `bc` whose rows fit the
    /// space of the Q and K chunks, or (`vk` > 0) V's own space of `vk` rows of 128.
    pub(crate) fn bkv(self, dv: usize) -> usize {
        let room = if self.vk > 0 {
            self.vk * 128
        } else {
            self.qk_words()
        };
        let mut n = self.bc;
        while n > 1 && n * Self::dvp(dv) > room {
            n /= 2;
        }
        n
    }
    /// Words of `stage` (the Q/K chunks and V, or V alone).
    pub(crate) fn stage_words(self, dv: usize) -> usize {
        let v = self.bkv(dv) * Self::dvp(dv);
        if self.vk > 0 {
            v
        } else {
            self.qk_words().max(v)
        }
    }
    /// Words of `ps` (P, and with `vk` > 0 the Q/K chunks).
    pub(crate) fn ps_words(self) -> usize {
        if self.vk > 0 {
            self.p_words().max(self.qk_words())
        } else {
            self.p_words()
        }
    }
    /// Workgroup memory in bytes.
    pub(crate) fn bytes(self, dv: usize) -> usize {
        4 * (self.stage_words(dv) + self.ps_words() + 2 * 256)
    }
    /// Whether this tiling may run Dv-wide values (the 128-row ones only up to
    /// [`WIDE_MAX_DV`]) in `wg_bytes` of workgroup memory.
    pub(crate) fn fits(self, dv: usize, wg_bytes: usize) -> bool {
        (self.br < 128 || dv <= WIDE_MAX_DV) && self.bytes(dv) <= wg_bytes
    }
    /// `128x64x32`: the name `XKERN_WGPU_ATTN_TILE` takes and pipeline keys use.
    pub(crate) fn name(self) -> String {
        format!("{}x{}x{}", self.br, self.bc, self.bk)
    }
    /// Parses a value of `XKERN_WGPU_ATTN_TILE`: `auto` or the empty string is
    /// `Ok(None)`, the name of one of [`FLASH_TILES`] or [`FORCED_TILES`] that tiling,
    /// anything else an error message.
    pub(crate) fn parse(s: &str) -> std::result::Result<Option<Self>, String> {
        let s = s.trim().to_lowercase();
        if s.is_empty() || s == "auto" {
            return Ok(None);
        }
        let all = || FLASH_TILES.into_iter().chain(FORCED_TILES);
        all().find(|t| t.name() == s).map(Some).ok_or_else(|| {
            let names: Vec<String> = all().map(|t| t.name()).collect();
            format!(
                "XKERN_WGPU_ATTN_TILE={s:?}: expected auto or one of {}",
                names.join(", ")
            )
        })
    }
}

/// Workgroup memory of the decode kernel with `rows` rows, in bytes: the staged Q and K,
/// the scores (R blocks of partial scores where `split_dot`), the key groups' running max and sum (at most 2·WG words), and the
/// one-row combine buffer where the staged K is smaller than a row of accumulators.
pub(crate) fn decode_bytes(d: usize, rows: usize, split_dot: bool) -> usize {
    let t = decode_t(rows);
    let (_, in_wk) = crate::attention_wgsl::decode_rows_per_round(d, rows);
    let wo = if in_wk { 0 } else { 16 * DECODE_WG };
    let ws = crate::attention_wgsl::decode_ws_parts(rows, split_dot) * rows * t;
    4 * (4 * (rows + t) * decode_sd4(d) + ws + 2 * DECODE_WG) + wo
}

/// The decode plan's tunables, read once per device (`Gpu::open`) so that one GPU run can
/// sweep them: `XKERN_WGPU_DECODE_GROUPS` (workgroups aimed at, default
/// [`DECODE_TARGET_GROUPS`]), `XKERN_WGPU_DECODE_MIN_CHUNK` (fewest keys per split,
/// default [`DECODE_MIN_CHUNK`]), `XKERN_WGPU_DECODE_SPLITS` (a fixed number of splits
/// per row block, overriding both; clamped to one key tile per split at least) and
/// `XKERN_WGPU_DECODE_ROWS` (4 or 8 rows per workgroup where its memory fits; default:
/// 4 where a kv head has at most 4 rows and D, Dv ≤ 128, else 8) and
/// `XKERN_WGPU_DECODE_PREFETCH` (`kv`, the default: K and V loaded a tile ahead; `k`: only
/// K, a tile's V loaded at its start, 4·⌈T/KG⌉ fewer registers per invocation) and
/// `XKERN_WGPU_DECODE_DOT` (`whole`, the default: one invocation per score; `split`: each
/// score's features split over R invocations, where its R·WG words of partial scores
/// fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodeTuning {
    pub(crate) target_groups: usize,
    pub(crate) min_chunk: usize,
    pub(crate) splits: Option<usize>,
    pub(crate) rows: Option<usize>,
    pub(crate) prefetch_v: bool,
    pub(crate) split_dot: bool,
}

impl Default for DecodeTuning {
    fn default() -> Self {
        DecodeTuning {
            target_groups: DECODE_TARGET_GROUPS,
            min_chunk: DECODE_MIN_CHUNK,
            splits: None,
            rows: None,
            prefetch_v: true,
            split_dot: false,
        }
    }
}

impl DecodeTuning {
    /// The defaults with the environment's overrides; an unparsable or out-of-range
    /// value is an error naming the variable.
    pub(crate) fn from_env() -> std::result::Result<Self, String> {
        let read = |name: &str,
                    ok: &dyn Fn(usize) -> bool|
         -> std::result::Result<Option<usize>, String> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) if v.trim().is_empty() || v.trim() == "auto" => Ok(None),
                Ok(v) => match v.trim().parse::<usize>() {
                    Ok(n) if ok(n) => Ok(Some(n)),
                    _ => Err(format!("{name}={v:?} is not a valid setting")),
                },
            }
        };
        let mut t = Self::default();
        if let Some(n) = read("XKERN_WGPU_DECODE_GROUPS", &|n| n >= 1)? {
            t.target_groups = n;
        }
        if let Some(n) = read("XKERN_WGPU_DECODE_MIN_CHUNK", &|n| n >= 1)? {
            t.min_chunk = n;
        }
        t.splits = read("XKERN_WGPU_DECODE_SPLITS", &|n| n >= 1)?;
        t.rows = read("XKERN_WGPU_DECODE_ROWS", &|n| n == 4 || n == 8)?;
        // Whether a two-way choice names its alternative (unset, empty, `auto` and the
        // default's name do not).
        let chosen = |name: &str, default: &str, alt: &str| -> std::result::Result<bool, String> {
            match std::env::var(name) {
                Err(_) => Ok(false),
                Ok(v) => match v.trim() {
                    w if w.is_empty() || w == "auto" || w == default => Ok(false),
                    w if w == alt => Ok(true),
                    _ => Err(format!("{name}={v:?} is not {default} or {alt}")),
                },
            }
        };
        if chosen("XKERN_WGPU_DECODE_PREFETCH", "kv", "k")? {
            t.prefetch_v = false;
        }
        if chosen("XKERN_WGPU_DECODE_DOT", "whole", "split")? {
            t.split_dot = true;
        }
        Ok(t)
    }
}

/// Whether every element `len`-long run of `v` along its last axis starts on a multiple
/// of 4 elements with unit stride and `len` a multiple of 4: then each vec4 of a row is
/// aligned and lies wholly inside the row.
fn vec4_rows(v: &View4, len: usize) -> bool {
    len.is_multiple_of(4)
        && v.strides[3] == 1
        && v.offset.is_multiple_of(4)
        && v.strides[..3].iter().all(|s| s.is_multiple_of(4))
}

/// Whether the decode kernel reads K and V as vec4s: unit feature stride, D and Dv
/// multiples of 4, and every row start a multiple of 4 elements, so each vec4 is aligned
/// and lies wholly inside its row; and at least one key (an empty tensor's 4-byte buffer
/// cannot be bound as an array of 8- or 16-byte vectors).
pub(crate) fn decode_vec(spec: &AttentionSpec) -> bool {
    spec.kv_seq > 0 && vec4_rows(&spec.k, spec.head_dim) && vec4_rows(&spec.v, spec.v_head_dim)
}

/// Whether the prefill kernel reads Q, K and V as vec4s (as [`decode_vec`], Q too).
pub(crate) fn flash_vec(spec: &AttentionSpec) -> bool {
    decode_vec(spec) && vec4_rows(&spec.q, spec.head_dim)
}

/// Which kernel runs an attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The prefill kernel with these tiles.
    Flash(FlashTiles),
    /// Split-KV decode: `rows` (query head, query) rows per workgroup, `splits`
    /// workgroups per (batch, kv head, row block), `chunk` keys each (a multiple of 32);
    /// `prefetch_v` loads V a tile ahead like K; `split_dot` splits each score's
    /// features over R invocations.
    Decode {
        rows: usize,
        splits: usize,
        chunk: usize,
        prefetch_v: bool,
        split_dot: bool,
    },
    /// The one-row-per-workgroup kernel.
    Fallback,
}

/// Chooses the kernel for `spec` on a device with `wg_bytes` of workgroup memory, the
/// decode tunables `tune`, and a `forced` prefill tiling (`XKERN_WGPU_ATTN_TILE`), taken
/// where it fits, else the usual choice.
pub(crate) fn plan(
    spec: &AttentionSpec,
    wg_bytes: usize,
    tune: &DecodeTuning,
    forced: Option<FlashTiles>,
) -> Plan {
    let (d, dv) = (spec.head_dim, spec.v_head_dim);
    let rows = spec.batch * spec.q_heads * spec.q_seq;
    if rows == 0 || dv == 0 || d > MAX_FAST_DIM || dv > MAX_FAST_DIM {
        return Plan::Fallback;
    }
    if spec.q_seq <= DECODE_MAX_SQ {
        let group = spec.q_heads / spec.kv_heads.max(1);
        let per_kv = group * spec.q_seq;
        // Four rows take tiles of 32 keys: above D or Dv = 128 their prefetched K and V
        // (3 × 16 vec4s per invocation at 256) would exceed the registers of a full SM.
        let auto = if per_kv <= 4 && d <= 128 && dv <= 128 {
            4
        } else {
            8
        };
        let mut rows = tune.rows.unwrap_or(auto);
        if decode_bytes(d, rows, false) > wg_bytes {
            rows = 8;
        }
        if decode_bytes(d, rows, false) > wg_bytes {
            return Plan::Fallback;
        }
        let split_dot = tune.split_dot && decode_bytes(d, rows, true) <= wg_bytes;
        // Splits of whole tiles of 32 keys (a multiple of both tile lengths).
        let tiles = spec.kv_seq.div_ceil(32).max(1);
        let want = match tune.splits {
            Some(n) => n,
            None => {
                let base = spec.batch * spec.kv_heads * per_kv.div_ceil(rows);
                let most = spec.kv_seq.div_ceil(tune.min_chunk.max(1)).max(1);
                tune.target_groups.div_ceil(base.max(1)).clamp(1, most)
            }
        };
        let chunk = tiles.div_ceil(want.clamp(1, tiles)) * 32;
        let splits = spec.kv_seq.div_ceil(chunk).max(1);
        return Plan::Decode {
            rows,
            splits,
            chunk,
            prefetch_v: tune.prefetch_v,
            split_dot,
        };
    }
    forced
        .into_iter()
        .chain(FLASH_TILES)
        .find(|t| t.fits(dv, wg_bytes))
        .map_or(Plan::Fallback, Plan::Flash)
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
        let gpu = self.gpu();
        let wg = gpu.limits.max_compute_workgroup_storage_size;
        plan(
            spec,
            usize::try_from(wg).unwrap_or(usize::MAX),
            &gpu.decode,
            gpu.attn_tile,
        )
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
        fit_u32(spec.q_seq + spec.kv_seq + 128)?;
        let group = (spec.q_heads / spec.kv_heads.max(1)).max(1);
        let (dtype, d, dv) = (spec.dtype, spec.head_dim, spec.v_head_dim);
        match plan {
            Plan::Flash(t) => {
                let vec = flash_vec(spec);
                let key = format!(
                    "attention-flash/{dtype}/{d}/{dv}/{}v{}{}",
                    t.name(),
                    t.vk,
                    if vec { "/vec4" } else { "" }
                );
                let kernel = self.kernel(&key, &flash_bindings(dtype, vec), || {
                    flash_source(dtype, d, dv, t, vec)
                })?;
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
                prefetch_v,
                split_dot,
            } => {
                let vec = decode_vec(spec);
                let key = format!(
                    "attention-decode/{dtype}/{d}/{dv}/r{r}{}{}{}",
                    if vec { "/vec4" } else { "" },
                    if prefetch_v { "" } else { "/k-prefetch" },
                    if split_dot { "/split-dot" } else { "" }
                );
                let kernel = self.kernel(&key, &decode_bindings(dtype, vec), || {
                    decode_source(dtype, d, dv, r, vec, prefetch_v, split_dot)
                })?;
                let merge = self.kernel(
                    &format!("attention-merge/{dtype}"),
                    &merge_bindings(dtype),
                    || merge_source(dtype),
                )?;
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
                    // The merge writes the output dtype itself: two dispatches in all.
                    let out = self.alloc_storage(dtype, len)?;
                    let params = Params::default()
                        .u(spec.q_seq)?
                        .u(spec.kv_seq)?
                        .u(usize::from(spec.causal))?
                        .u(splits)?
                        .u(dv)?
                        .u(ml_base)?
                        .u(len)?;
                    rec.dispatch(&merge, &[&part, &out], len.div_ceil(MERGE_EB), params)?;
                    rec.keep(&part);
                    Ok(out)
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
