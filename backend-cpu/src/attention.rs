//! CPU attention: flash attention on the GEMM micro-kernels, memory O(tile) per task.
//!
//! Algorithm (Dao et al., "FlashAttention", 2022; online softmax of Milakov & Gimelshein,
//! 2018), per (batch, key/value head):
//!
//! 1. K and Vᵀ are packed once as the micro-kernel's A panels (MR keys, resp. MR rows of
//!    the value dimension, per panel; converting f16/bf16 to f32 and reading any strides
//!    in place), shared by every query head of the group (GQA/MQA by index mapping, never
//!    by copying K/V per head).
//! 2. Each task owns `BQ` query rows of one head, computed transposed: Qᵀ is packed once
//!    as B panels of NR queries, then for each tile of `BK` visible keys `Sᵀ = K·Qᵀ` by
//!    the micro-kernel lands in NR-wide key-major panels, and every query is a lane of a
//!    vertical online softmax (`RowKernels::softmax_cols`: the scale, the causal mask on
//!    tiles that cross the diagonal — tiles above it are never visited —, running max
//!    `m`, sum `l`, and `Oᵀ` rescaled by `exp(m_old − m_new)`), with no horizontal
//!    reduction per row and no repacking: those panels are the B panels of
//!    `Oᵀ += Vᵀ·P`. (The query-major version — `S = Q·Kᵀ`, a softmax along each row,
//!    P packed again as A panels — ran 1.12–1.22× slower, end to end, on Zen 4.) Where a
//!    V chunk holds NaN or ∞ and the tile crosses the diagonal, each query adds exactly
//!    its visible keys one by one, so a masked key never contributes (a zero probability
//!    times ∞ would be NaN). `Oᵀ` becomes rows once, at the end of the task.
//! 3. Decode-shaped problems (all queries in one tile, many keys) also split the keys into
//!    fixed ranges of `DECODE_SPLIT`, computed in parallel and merged in order; the split
//!    depends only on the shape, so results are the same for any thread count.
//!
//! Decode-shaped problems whose query rows per kv head (group × Sq) are at most
//! `DECODE_ROWS`, with at most `DECODE_SQ` queries per head, skip the packing: their cost
//! is reading K and V once, so `decode` streams each key and value row once per kv head
//! for all its query rows (in tasks of eight rows where the shape gives few tasks), in
//! key blocks with the same online softmax, split over fixed key ranges as above. With
//! AVX2 or AVX-512 the rows are read where they lie, in their own dtype, by
//! `simd::rowops`: each key row is dotted with all the group's query rows in one pass,
//! and each block's value rows are added into all its output rows, held in registers,
//! in one pass.
//!
//! bf16 operands on CPUs with AVX-512 BF16 take their scores `K·Qᵀ` from the bf16 pair
//! kernel (`vdpbf16ps`, twice the f32 kernel's multiply-adds per instruction; K and Qᵀ
//! packed as pairs of consecutive head-dim elements; products exact, summed in f32 with
//! round-to-nearest-even, bf16 denormal inputs and f32 denormal sums flushed to zero, as
//! the instruction does whatever MXCSR says), and `Vᵀ·P` from the f32 kernel (P stays
//! f32). h32 S1024 D128, 3 interleaved rounds: full 96–107 → 75–80 ms, causal 58–60 →
//! 45–49 ms.
//!
//! A row that sees no key ends with `l = 0` and is written as zeros; the max is
//! NaN-propagating, so a NaN score poisons exactly the rows that see it.

// Kernel code: every slice is cut from a buffer sized from the validated spec (rows,
// head dims, key blocks), with loop bounds no larger than those sizes.
#![allow(clippy::indexing_slicing)]

use crate::internal;
use crate::matmul::{
    Ahead, CPtr, MicroKernel, Packed, View, macro_tile, pack_a, pack_b, with_task_buf,
};
use crate::reduce::rows::{ColState, RowKernels};
use crate::simd::exp::exp;
use crate::simd::rowops::{Lanes, RowOps};
use crate::simd::{Isa, nan_max};
use crate::storage::{CpuStorage, Scalar, try_vec_overwrite};
use rayon::prelude::*;
use xkern_core::{AttentionSpec, Error, Result};

/// Query rows per task: a multiple of every micro-kernel's NR (32, 16).
const BQ: usize = 64;
/// Keys per tile: a multiple of every micro-kernel's MR (12, 6, 4).
const BK: usize = 96;
/// The widest micro-kernel NR (query lanes per panel).
const NR_MAX: usize = 32;
/// Keys per split of a decode-shaped problem (a multiple of BK: tiles start on K panels).
const DECODE_SPLIT: usize = 960;
/// Query rows per kv head (GQA group × queries) up to which attention streams K/V
/// instead of packing them, where each head has at most [`DECODE_SQ`] queries: the packed
/// path's query tiles are at least NR = 32 lanes per head, so with 16 queries or fewer at
/// least half of every tile is padding, while the streaming path shares each K/V row
/// among all the group's rows. Causal, kv 4096, d 128, f32, 2 interleaved rounds
/// (medians, packed → streamed): q32 kv8 sq4 (16 rows) 15–16 → 5.3–6.0 ms, q32 kv4 sq4
/// (32) 14–16 → 4.3–5.0, q32 kv8 sq8 (32) 15–20 → 8.3–8.8, q32 kv32 sq16 (16) 28–33 →
/// 19–24; but q32 kv32 sq32 (32 rows, one full tile per head) 26–28 → 34–36 and q32 kv8
/// sq16 (64) 16 → 19–22 stay packed.
const DECODE_ROWS: usize = 32;
/// Queries per head up to which attention may stream (see [`DECODE_ROWS`]).
const DECODE_SQ: usize = 16;
/// (batch, kv head, key split) items below which the streaming decode also splits a kv
/// head's rows into tasks of eight.
const DECODE_TASKS: usize = 8;
/// Keys per block of the streaming decode path.
const DECODE_BLOCK: usize = 64;

/// K and Vᵀ of one (batch, kv head) in A-panel layout.
struct KvPack {
    /// K (`Skv × D`) in MR-tall panels of keys, `D` deep.
    k: Vec<f32>,
    /// Vᵀ (`Dv × Skv`) in chunks of `BK` keys, each chunk in MR-tall panels (rows of the
    /// value dimension, zero-padded to a multiple of MR) as deep as the chunk.
    vt: Vec<f32>,
    /// Per chunk of V: every value is finite, so a masked key (probability exactly 0)
    /// contributes exactly 0 through the micro-kernel on a diagonal tile.
    finite: Vec<bool>,
}

/// The running softmax state of one task's rows.
struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    o: Vec<f32>,
}

pub(crate) fn attention(
    isa: Isa,
    bf16_dot: bool,
    spec: &AttentionSpec,
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
) -> Result<CpuStorage> {
    use crate::matmul::kernel_generic::Generic;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bf16_dot; // (only x86 has a bf16 pair kernel)
    let rk = RowKernels::for_isa(isa);
    // (`typed!` instantiates `run` per dtype; each picks its decode row operations.)
    macro_rules! typed {
        // typed!(S, P) expands to the match over the operand dtypes below, with the f32
        // output of `run::<S, P, T>` for the matching element type T: scores by the
        // kernel S, weighted sums by P.
        ($s:ty, $p:ty) => {
            match (q, k, v) {
                (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                    run::<$s, $p, f32>(spec, q, k, v, rk, isa)
                }
                (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                    run::<$s, $p, _>(spec, q, k, v, rk, isa)
                }
                (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                    run::<$s, $p, _>(spec, q, k, v, rk, isa)
                }
                _ => Err(Error::Backend {
                    backend: "cpu",
                    message: "attention operands of different dtypes".into(),
                }),
            }
        };
    }
    let out = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if bf16_dot && matches!(q, CpuStorage::BF16(_)) => typed!(
            crate::matmul::kernel_avx512_bf16::Avx512Bf16,
            crate::matmul::kernel_avx512::Avx512
        )?,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => typed!(
            crate::matmul::kernel_avx512::Avx512,
            crate::matmul::kernel_avx512::Avx512
        )?,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => typed!(
            crate::matmul::kernel_avx2::Avx2,
            crate::matmul::kernel_avx2::Avx2
        )?,
        _ => typed!(Generic, Generic)?,
    };
    CpuStorage::from_f32(spec.dtype, out)
}

/// Attention with the scores `S = K·Qᵀ` by the micro-kernel `KS` and the weighted sums
/// `Oᵀ += Vᵀ·P` by `KP` (the same tile shape: `Sᵀ`'s panels are `P`'s B panels).
fn run<KS: MicroKernel, KP: MicroKernel, T: Lanes>(
    spec: &AttentionSpec,
    q: &[T],
    k: &[T],
    v: &[T],
    rk: RowKernels,
    isa: Isa,
) -> Result<Vec<f32>> {
    if KS::MR != KP::MR || KS::NR != KP::NR {
        return Err(internal("attention kernels of different tile shapes"));
    }
    let (sq, dv) = (spec.q_seq, spec.v_head_dim);
    // Every output row is written by `finish` below (no fill pass first).
    let mut out = try_vec_overwrite(spec.batch * spec.q_heads * sq * dv, 0.0f32)?;
    if out.is_empty() || spec.kv_seq == 0 {
        out.fill(0.0);
        return Ok(out);
    }
    let splits = if sq <= BQ && spec.kv_seq > 2 * DECODE_SPLIT {
        spec.kv_seq.div_ceil(DECODE_SPLIT)
    } else {
        1
    };
    let group = spec.q_heads / spec.kv_heads;
    if sq <= DECODE_SQ && group * sq <= DECODE_ROWS {
        let ops = RowOps::<T>::for_isa(isa);
        // Rows of a kv head in groups of eight as separate tasks (each reading K and V)
        // where (batch, kv head, key split) alone make few: an MQA decode over 1,500 keys
        // would otherwise be one task. Each row's result is the same either way (rows
        // never mix), and the choice depends on the shape only.
        let rows = group * sq;
        let per = if spec.batch * spec.kv_heads * splits >= DECODE_TASKS {
            rows
        } else {
            8
        };
        out.par_chunks_mut(rows * dv)
            .enumerate()
            .for_each(|(bkv, group_out)| {
                group_out
                    .par_chunks_mut(per * dv)
                    .enumerate()
                    .for_each(|(g, part_out)| {
                        let (r0, r1) = (g * per, g * per + part_out.len() / dv);
                        let states: Vec<Partial> = (0..splits)
                            .into_par_iter()
                            .map(|s| {
                                let keys = split_range(s, splits, spec.kv_seq);
                                decode(spec, q, k, v, (rk, ops), bkv, ((r0, r1), keys))
                            })
                            .collect();
                        finish(merge(states), dv, part_out);
                    });
            });
        return Ok(out);
    }
    // One parallel item per (batch, kv head): its query heads' outputs are contiguous.
    // K/V are packed inside it, so only the items in flight hold packed copies.
    out.par_chunks_mut(group * sq * dv)
        .enumerate()
        .try_for_each(|(bkv, group_out)| -> Result<()> {
            let kv = pack_kv::<KS, KP, T>(spec, k, v, bkv)?;
            let (b, kvh) = (bkv / spec.kv_heads, bkv % spec.kv_heads);
            group_out
                .par_chunks_mut(sq * dv)
                .enumerate()
                .try_for_each(|(g, head_out)| {
                    let h = kvh * group + g;
                    head_out.par_chunks_mut(BQ * dv).enumerate().try_for_each(
                        |(t, o_tile)| -> Result<()> {
                            let at = (b, h, t * BQ, o_tile.len() / dv);
                            if splits == 1 {
                                // One state: normalised straight into the output rows.
                                let all = (0, spec.kv_seq);
                                tile::<KS, KP, T>(spec, q, &kv, rk, at, all, Some(o_tile))?;
                                return Ok(());
                            }
                            let states = (0..splits)
                                .into_par_iter()
                                .map(|s| {
                                    let keys = split_range(s, splits, spec.kv_seq);
                                    tile::<KS, KP, T>(spec, q, &kv, rk, at, keys, None)
                                })
                                .collect::<Result<Vec<Option<Partial>>>>()?;
                            finish(merge(states.into_iter().flatten().collect()), dv, o_tile);
                            Ok(())
                        },
                    )
                })?;
            Ok(())
        })?;
    Ok(out)
}

/// Keys of split `s` of `splits` (all keys when there is one split).
fn split_range(s: usize, splits: usize, kv_seq: usize) -> (usize, usize) {
    if splits == 1 {
        (0, kv_seq)
    } else {
        (s * DECODE_SPLIT, ((s + 1) * DECODE_SPLIT).min(kv_seq))
    }
}

/// Packs K (for the kernel `KS`) and Vᵀ (for `KP`) of (batch, kv head) `bh` as A panels.
fn pack_kv<KS: MicroKernel, KP: MicroKernel, T: Scalar>(
    spec: &AttentionSpec,
    k: &[T],
    v: &[T],
    bh: usize,
) -> Result<KvPack> {
    let (b, h) = (bh / spec.kv_heads, bh % spec.kv_heads);
    let (skv, d, dv, mr) = (spec.kv_seq, spec.head_dim, spec.v_head_dim, KP::MR);
    // Packed depth steps of K (pairs of bf16 for a pair kernel).
    let ds = d.div_ceil(KS::KU);
    // K[j, p]: keys are the rows of A, the head dimension its depth.
    let k_view = View {
        data: k,
        offset: spec.k.row(b, h, 0),
        rs: spec.k.strides[2],
        cs: spec.k.strides[3],
    };
    // Every slot of both is written by the packing (padding lanes as zeros), but for the
    // tail of the last V chunk, which nothing reads.
    let mut kp = try_vec_overwrite(skv.div_ceil(mr) * mr * ds, 0.0f32)?;
    pack_a(k_view, skv, 0, d, mr, KS::KU, &mut kp, false, KS::PACK);
    // Vᵀ[c, j] = V[j, c]: the value dimension is the rows of A, the keys its depth.
    let vt_view = View {
        data: v,
        offset: spec.v.row(b, h, 0),
        rs: spec.v.strides[3],
        cs: spec.v.strides[2],
    };
    let dvr = dv.div_ceil(mr) * mr;
    let mut vp = try_vec_overwrite(skv.div_ceil(BK) * dvr * BK, 0.0f32)?;
    for (c, chunk) in vp.chunks_mut(dvr * BK).enumerate() {
        let len = BK.min(skv - c * BK);
        pack_a(
            vt_view,
            dv,
            c * BK,
            len,
            mr,
            1,
            &mut chunk[..dvr * len],
            false,
            KP::PACK,
        );
    }
    let finite = vp
        .chunks(dvr * BK)
        .enumerate()
        // The largest exponent field of the chunk's packed keys, without an early exit so
        // that the scan vectorises (the short-circuiting `all(is_finite)` ran one element
        // at a time: 3.7% of attention's samples at S512).
        .map(|(c, chunk)| {
            let packed = &chunk[..dvr * BK.min(skv - c * BK)];
            packed
                .iter()
                .fold(0u32, |m, x| m.max(x.to_bits() & 0x7f80_0000))
                < 0x7f80_0000
        })
        .collect();
    Ok(KvPack {
        k: kp,
        vt: vp,
        finite,
    })
}

/// The softmax state of rows `i0..i0 + rows` of head (b, h) over keys `lo..hi`: with
/// `out`, normalised into those output rows (`None` returned); without, returned.
///
/// Computed transposed, so that the softmax runs down columns and no tile is repacked:
/// `Sᵀ = K·Qᵀ` (A = K panels, B = Qᵀ panels of NR queries) lands in NR-wide key-major
/// panels, which are exactly the B panels of `Oᵀ += Vᵀ·P` (A = Vᵀ panels). Each query is
/// a lane of the online softmax ([`RowKernels::softmax_cols`]); `Oᵀ` is turned back into
/// rows once, at the end. The panels live in the thread's reused task buffer and the
/// per-lane state on the stack: no allocation or fill per task but `Oᵀ`'s zeros (8% of
/// the samples at S = 512 went to allocating, zeroing and freeing them).
fn tile<KS: MicroKernel, KP: MicroKernel, T: Scalar>(
    spec: &AttentionSpec,
    q: &[T],
    kv: &KvPack,
    rk: RowKernels,
    (b, h, i0, rows): (usize, usize, usize, usize),
    (lo, hi): (usize, usize),
    out: Option<&mut [f32]>,
) -> Result<Option<Partial>> {
    let (d, dv, mr, nr) = (spec.head_dim, spec.v_head_dim, KP::MR, KP::NR);
    // Packed depth steps of K and Qᵀ (pairs of bf16 for a pair kernel).
    let ds = d.div_ceil(KS::KU);
    let dvr = dv.div_ceil(mr) * mr;
    // Query lanes computed: whole panels (the padding lanes hold zero queries); at most
    // BQ, a multiple of every NR.
    let wq = rows.div_ceil(nr) * nr;
    if wq > BQ || nr > NR_MAX {
        return Err(internal("attention tile wider than its state arrays"));
    }
    let q_view = View {
        data: q,
        offset: spec.q.row(b, h, i0),
        rs: spec.q.strides[3],
        cs: spec.q.strides[2],
    };
    with_task_buf(|buf| {
        let scratch = buf.get(wq * ds + wq * BK + dvr * wq)?;
        let (qb, rest) = scratch.split_at_mut(wq * ds);
        let (st, ot) = rest.split_at_mut(wq * BK);
        if cfg!(debug_assertions) {
            // Reused buffers hold old values: in the tests, NaN, so that a slot the tile
            // reads without writing fails them.
            qb.fill(f32::NAN);
            st.fill(f32::NAN);
        }
        pack_b(q_view, rows, 0, d, nr, KS::KU, qb, false, KS::PACK);
        ot.fill(0.0);
        let mut m = [f32::NEG_INFINITY; BQ];
        let mut l = [0.0f32; BQ];
        let mut corr = [0.0f32; BQ];
        let (m, l, corr) = (&mut m[..wq], &mut l[..wq], &mut corr[..wq]);
        // Keys each lane sees (padding lanes: all, their scores are zeros).
        let mut visible = [spec.kv_seq; BQ];
        for (r, vis) in visible.iter_mut().enumerate().take(rows) {
            *vis = spec.visible_keys(i0 + r);
        }
        // Keys beyond what the tile's last row sees are never visited.
        let end = hi.min(spec.visible_keys(i0 + rows - 1));
        for j0 in (lo..end).step_by(BK) {
            let bk = BK.min(end - j0);
            let chunk_len = BK.min(spec.kv_seq - j0);
            // Some lane sees only part of the tile's keys (the tile crosses the diagonal).
            let partial = visible[0] < j0 + bk;
            for (jq, panel) in st.chunks_exact_mut(BK * nr).enumerate() {
                let sp = Packed {
                    a: &kv.k[j0 / mr * mr * ds..],
                    a_stride: mr * ds,
                    b: &qb[jq * nr * ds..],
                    b_stride: nr * ds,
                    kc: ds,
                    next: Ahead::default(),
                };
                // SAFETY: the panel holds BK ≥ bk rows of NR floats, owned by this task.
                unsafe {
                    macro_tile::<KS>(
                        (0, bk, 0, nr),
                        sp,
                        CPtr(panel.as_mut_ptr()),
                        nr,
                        false,
                        None,
                    )
                };
                let lanes = jq * nr..(jq + 1) * nr;
                // Masked keys of a tile crossing the diagonal: key p is hidden from lane q
                // from p = limit[q] on.
                let mut limit = [0u32; NR_MAX];
                let limit = if partial {
                    for (lim, &vis) in limit.iter_mut().zip(&visible[lanes.clone()]) {
                        *lim = vis.saturating_sub(j0).min(bk) as u32;
                    }
                    &limit[..nr]
                } else {
                    &limit[..0]
                };
                let state = ColState {
                    m: &mut m[lanes.clone()],
                    l: &mut l[lanes.clone()],
                    corr: &mut corr[lanes],
                };
                // SAFETY: `rk` was built for an ISA detected on this CPU.
                unsafe { (rk.softmax_cols)(&mut panel[..bk * nr], nr, spec.scale, limit, state) };
            }
            // SAFETY: `rk` was built for an ISA detected on this CPU.
            unsafe { (rk.mul_cols)(ot, corr) };
            let v_chunk = &kv.vt[j0 / BK * dvr * BK..];
            if partial && !kv.finite[j0 / BK] {
                // A V chunk holding NaN or ∞ on a tile that crosses the diagonal: each lane
                // adds exactly its visible keys (a masked key's 0 · ∞ would be NaN).
                for (r, &vis) in visible.iter().enumerate().take(rows) {
                    let (jq, lane) = (r / nr, r % nr);
                    for p in 0..vis.saturating_sub(j0).min(bk) {
                        let pr = st[(jq * BK + p) * nr + lane];
                        for c in 0..dv {
                            ot[c * wq + r] +=
                                pr * v_chunk[c / mr * mr * chunk_len + p * mr + c % mr];
                        }
                    }
                }
                continue;
            }
            // Masked keys have probability exactly 0 and the chunk is finite: they add 0.
            let pv = Packed {
                a: v_chunk,
                a_stride: mr * chunk_len,
                b: st,
                b_stride: BK * nr,
                kc: bk,
                next: Ahead::default(),
            };
            // The dv rows of Oᵀ only: the panels' zero padding rows (up to dvr) would add
            // nothing but work (12.5% of P·V at D = 64 with 12-row panels); a ragged last
            // strip runs a shorter kernel where the ISA has one.
            // SAFETY: `ot` holds dvr ≥ dv rows of wq floats, owned by this task.
            unsafe { macro_tile::<KP>((0, dv, 0, wq), pv, CPtr(ot.as_mut_ptr()), wq, true, None) };
        }
        let ot = &ot[..dv * wq];
        if let Some(out) = out {
            // out[r, c] = Oᵀ[c, r] / l[r].
            normalise(l, dv, out, |r, c| ot[c * wq + r]);
            return Ok(None);
        }
        let mut o = vec![0.0f32; rows * dv];
        for (c, orow) in ot.chunks_exact(wq).enumerate() {
            for (r, &x) in orow.iter().take(rows).enumerate() {
                o[r * dv + c] = x;
            }
        }
        Ok(Some(Partial {
            m: m[..rows].to_vec(),
            l: l[..rows].to_vec(),
            o,
        }))
    })
}

/// The softmax state of query rows `r0..r1` of (batch, kv head) `bkv` (its rows ordered
/// head by head, as in the output) over keys `lo..hi`, streaming each key and value row
/// once.
/// Contiguous rows are read where they lie, by `ops` where the ISA has them (any dtype)
/// or by `dot8` and a plain loop (f32); others are converted into `kr` / `vr` first.
fn decode<T: Scalar>(
    spec: &AttentionSpec,
    q: &[T],
    k: &[T],
    v: &[T],
    (rk, ops): (RowKernels, Option<RowOps<T>>),
    bkv: usize,
    ((r0, r1), (lo, hi)): ((usize, usize), (usize, usize)),
) -> Partial {
    let (b, kvh) = (bkv / spec.kv_heads, bkv % spec.kv_heads);
    let (sq, d, dv, group) = (
        spec.q_seq,
        spec.head_dim,
        spec.v_head_dim,
        spec.q_heads / spec.kv_heads,
    );
    let rows = r1 - r0;
    let mut qs = vec![0.0f32; rows * d];
    for (r, qr) in (r0..r1).zip(qs.chunks_exact_mut(d)) {
        let (h, i) = (kvh * group + r / sq, r % sq);
        gather_row(q, spec.q.row(b, h, i), spec.q.strides[3], qr);
    }
    let mut st = Partial {
        m: vec![f32::NEG_INFINITY; rows],
        l: vec![0.0; rows],
        o: vec![0.0; rows * dv],
    };
    let (k_unit, v_unit) = (spec.k.strides[3] == 1, spec.v.strides[3] == 1);
    let (k_src, v_src) = (Row::of(k, k_unit, ops), Row::of(v, v_unit, ops));
    let converted = |src: &Row<'_, T>, len| match src {
        Row::Converted => len,
        _ => 0,
    };
    let mut kr = vec![0.0f32; converted(&k_src, d)];
    let mut vr = vec![0.0f32; converted(&v_src, DECODE_BLOCK * dv)];
    let mut s = vec![f32::NEG_INFINITY; rows * DECODE_BLOCK];
    // Keys each row sees (causal: fewer for earlier queries).
    let mut visible = [0usize; DECODE_ROWS];
    for (r, vis) in (r0..r1).zip(visible.iter_mut()) {
        *vis = spec.visible_keys(r % sq);
    }
    for j0 in (lo..hi).step_by(DECODE_BLOCK) {
        let bk = DECODE_BLOCK.min(hi - j0);
        for j in 0..bk {
            if j0 == lo && j + PREFETCH_KEYS < bk {
                // The first block: its own rows, a few keys ahead.
                let ahead = j0 + j + PREFETCH_KEYS;
                prefetch_row(k, spec.k.row(b, kvh, ahead), spec.k.strides[3], d);
                prefetch_row(v, spec.v.row(b, kvh, ahead), spec.v.strides[3], dv);
            }
            if j0 + j + DECODE_BLOCK < hi {
                // The next block's key rows, one per key of this one.
                let ahead = j0 + j + DECODE_BLOCK;
                prefetch_row(k, spec.k.row(b, kvh, ahead), spec.k.strides[3], d);
            }
            let kb = spec.k.row(b, kvh, j0 + j);
            if let Row::Converted = k_src {
                gather_row(k, kb, spec.k.strides[3], &mut kr);
            }
            if let Row::Converted = v_src {
                gather_row(
                    v,
                    spec.v.row(b, kvh, j0 + j),
                    spec.v.strides[3],
                    &mut vr[j * dv..(j + 1) * dv],
                );
            }
            let mut dots = [0.0f32; DECODE_ROWS];
            match &k_src {
                // SAFETY: `ops` were chosen for an ISA detected on this CPU.
                Row::Typed(k, o) => unsafe { (o.dots)(&qs, &k[kb..kb + d], &mut dots[..rows]) },
                portable => {
                    let krow = match portable {
                        Row::F32(k32) => &k32[kb..kb + d],
                        _ => &kr[..],
                    };
                    for (x, qr) in dots.iter_mut().zip(qs.chunks_exact(d)) {
                        *x = dot8(qr, krow);
                    }
                }
            }
            for r in 0..rows {
                s[r * DECODE_BLOCK + j] = if j0 + j < visible[r] {
                    spec.scale * dots[r]
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        // Keys each row adds this block (0: none, all of its scores being −∞).
        let mut seen = [0usize; DECODE_ROWS];
        for r in 0..rows {
            let row = &mut s[r * DECODE_BLOCK..r * DECODE_BLOCK + bk];
            // SAFETY: `rk` was built for an ISA detected on this CPU.
            let m_new = nan_max(st.m[r], unsafe { (rk.extreme)(row, 1.0) });
            if m_new == f32::NEG_INFINITY {
                continue;
            }
            let correction = exp(st.m[r] - m_new);
            // SAFETY: `rk` was built for an ISA detected on this CPU.
            let sum = unsafe { (rk.exp_shift)(row, m_new) };
            st.l[r] = st.l[r] * correction + sum;
            let o = &mut st.o[r * dv..(r + 1) * dv];
            if correction != 1.0 {
                o.iter_mut().for_each(|x| *x *= correction);
            }
            st.m[r] = m_new;
            seen[r] = visible[r].saturating_sub(j0).min(bk);
        }
        let vb = spec.v.row(b, kvh, j0);
        let vrs = spec.v.strides[2];
        if let Row::Typed(v, o_ops) = &v_src {
            // All rows at once, reading each value row once; the next block's rows are
            // fetched meanwhile.
            let next = if j0 + DECODE_BLOCK < hi {
                v.as_ptr()
                    .wrapping_add(spec.v.row(b, kvh, j0 + DECODE_BLOCK))
            } else {
                std::ptr::null()
            };
            // (`pv` leaves out keys whose rows would not fit; a valid spec has none.)
            debug_assert!(
                seen[..rows]
                    .iter()
                    .all(|&n| n == 0 || vb + (n - 1) * vrs + dv <= v.len())
            );
            // SAFETY: `ops` were chosen for an ISA detected on this CPU.
            unsafe { (o_ops.pv)(&mut st.o, &s, &seen[..rows], &v[vb..], vrs, next) };
            continue;
        }
        for (r, &visible) in seen.iter().enumerate().take(rows) {
            let o = &mut st.o[r * dv..(r + 1) * dv];
            let row = &s[r * DECODE_BLOCK..r * DECODE_BLOCK + bk];
            for (j, &p) in row.iter().enumerate().take(visible) {
                if r == 0 && j0 + j + DECODE_BLOCK < hi {
                    // The next block's value rows, one per key of this one.
                    let ahead = j0 + j + DECODE_BLOCK;
                    prefetch_row(v, spec.v.row(b, kvh, ahead), spec.v.strides[3], dv);
                }
                let vrow = match &v_src {
                    Row::F32(v32) => &v32[vb + j * vrs..vb + j * vrs + dv],
                    _ => &vr[j * dv..(j + 1) * dv],
                };
                for (x, &y) in o.iter_mut().zip(vrow) {
                    *x += p * y;
                }
            }
        }
    }
    st
}

/// Where the streaming decode reads a K or V row from.
enum Row<'a, T> {
    /// In place, in its own dtype, through the ISA's row operations.
    Typed(&'a [T], RowOps<T>),
    /// In place, f32, through the portable loops.
    F32(&'a [f32]),
    /// Converted (or gathered, when strided) into a buffer first.
    Converted,
}

impl<'a, T: Scalar> Row<'a, T> {
    /// Where rows of `x` are read from: contiguous rows (`unit`) in place, through `ops`
    /// where the ISA has them, or as f32 through the portable loops; all others converted.
    fn of(x: &'a [T], unit: bool, ops: Option<RowOps<T>>) -> Self {
        match (ops, unit.then(|| T::as_f32(x)).flatten()) {
            (Some(o), _) if unit => Row::Typed(x, o),
            (_, Some(x32)) => Row::F32(x32),
            _ => Row::Converted,
        }
    }
}

/// Σ q·k in eight lanes (element i into lane i mod 8, lanes summed in order at the end).
/// Whole chunks of eight go through fixed-size arrays so that the lanes stay in
/// registers: with `chunks(8)` the compiler kept them on the stack, and the store-to-load
/// chain of each add was the decode's hottest instruction (perf: 23% of its samples).
#[inline(always)]
fn dot8(q: &[f32], k: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (qc, kc) = (q.chunks_exact(8), k.chunks_exact(8));
    let (qt, kt) = (qc.remainder(), kc.remainder());
    for (q8, k8) in qc.zip(kc) {
        for i in 0..8 {
            acc[i] += q8[i] * k8[i];
        }
    }
    for ((a, x), y) in acc.iter_mut().zip(qt).zip(kt) {
        *a += x * y;
    }
    acc.iter().sum::<f32>()
}

/// Keys ahead of the current one whose K and V rows the streaming decode prefetches in
/// its first block of keys. After that, each key of a block prefetches the key and value
/// rows of the key one block later, the key rows while the dot products run and the
/// value rows while the weighted sums do (`rowops`' `pv`: during its first pass over the
/// block; the portable loops: during the first query row's sums, over the keys it sees,
/// all but at most the last few of a causal decode's, whose next block lies past the end).
/// Fetching only a few keys ahead, from the dot products' loop, left the memory idle
/// while each block's weighted sums ran (h32 q1 kv4096 d128, 6 interleaved rounds,
/// medians: 5.1–5.6 → 4.5–5.0 ms; two blocks ahead was no better).
const PREFETCH_KEYS: usize = 8;

/// Asks the CPU to start loading the contiguous row of `len` elements at `base` into the
/// L2 cache (a hint: no fault, no effect on results); strided rows are left to the
/// hardware. One decode key reads two such rows and does little arithmetic with them, so
/// without this each key waits for its rows' misses one after another. Into L2, not L1:
/// the 16 lines per key in flight filled L1's miss buffers, and the decode's loads
/// queued behind them (h32 q1 kv4096 d128, decode thread time summed with the TSC over
/// 100 calls, 6 interleaved rounds: 14.3–19.4 ms per call with L1 prefetches, 10.5–15.6
/// into L2; none at all was about as fast as L2 in 3 rounds).
#[inline(always)]
fn prefetch_row<T>(src: &[T], base: usize, stride: usize, len: usize) {
    if stride == 1 {
        crate::simd::prefetch_run_l2(src.as_ptr().wrapping_add(base), len);
    }
}

/// Reads `dst.len()` elements `base + c·stride` as f32: one row of `storage::gather`.
fn gather_row<T: Scalar>(src: &[T], base: usize, stride: usize, dst: &mut [f32]) {
    crate::storage::gather(src, base, 0, stride, dst.len(), dst);
}

/// Merges the states of consecutive key ranges, in order.
fn merge(mut states: Vec<Partial>) -> Partial {
    let mut acc = states.remove(0);
    for s in states {
        let dv = acc.o.len() / acc.m.len().max(1);
        for r in 0..acc.m.len() {
            let m = nan_max(acc.m[r], s.m[r]);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let (ca, cs) = (exp(acc.m[r] - m), exp(s.m[r] - m));
            acc.l[r] = acc.l[r] * ca + s.l[r] * cs;
            for (x, y) in acc.o[r * dv..(r + 1) * dv]
                .iter_mut()
                .zip(&s.o[r * dv..(r + 1) * dv])
            {
                *x = *x * ca + y * cs;
            }
            acc.m[r] = m;
        }
    }
    acc
}

/// Divides by the softmax sum (zeros for a row that saw no key) into the output rows.
fn finish(st: Partial, dv: usize, out: &mut [f32]) {
    normalise(&st.l, dv, out, |r, c| st.o[r * dv + c]);
}

/// `out[r, c] = o(r, c) / l[r]` for the rows of `out` (`dv` wide, one per entry of `l`
/// at most), or zeros for a row whose sum is 0: it saw no key.
fn normalise(l: &[f32], dv: usize, out: &mut [f32], o: impl Fn(usize, usize) -> f32) {
    for ((r, o_row), &l) in out.chunks_exact_mut(dv).enumerate().zip(l) {
        if l == 0.0 {
            o_row.fill(0.0);
            continue;
        }
        let inv = 1.0 / l;
        for (c, x) in o_row.iter_mut().enumerate() {
            *x = o(r, c) * inv;
        }
    }
}
