//! Reductions (sum, mean, max, min, argmax, argmin, logsumexp) and row normalisations
//! (softmax, log_softmax, rms_norm) of the canonical `[outer, axis, inner]` problem.
//!
//! Rows on partitions, the reduced axis on the free axis: up to 128 rows per group
//! (consecutive `outer` rows when `inner = 1`; consecutive `inner` positions of one
//! `outer` otherwise, loaded by a transposing DMA whose free stride is `inner`, which
//! column sums/means/maxes/mins avoid: see "Columns" below). The axis
//! streams through SBUF in chunks of [`CHUNK`] fp32 elements; each chunk is reduced on
//! the vector engine (`tensor_reduce`) or the scalar engine (`activation` with its
//! reduce-add accumulator) and folded into `[P, 1]` running values:
//! - sum/mean: running sum (mean multiplies by `1/n`, NaN for `n = 0`);
//! - max/min: NaN-propagating running extreme;
//! - argmax/argmin: per chunk the extreme, an equality mask (NaN counts as equal so the
//!   first NaN wins), `iota` indices and a min-reduce of masked indices; chunks merge
//!   with a strict comparison so the first index wins ties;
//! - logsumexp and softmax: the online form `s ← s·e^{m−m'} + Σ e^{x−m'}`, with the
//!   running max starting at −MAX (and, for logsumexp, clamped to ±MAX) so that rows of
//!   −∞ and +∞ give the results the contract states instead of `∞ − ∞`.
//!
//! Three input buffers rotate and loads are issued one chunk ahead of the folds, so the
//! chunk k.
//!
//! Long rows: with few rows (at most `P / 16`, i.e. eight of 128) and a long axis (at
//! least 1024 positions per partition), rows on partitions would leave almost every lane
//! and DMA engine idle and reduce one long sequence in fp32. Each row is then split
//! across all `P` partitions instead: partition `p` gets positions `[p·r, (p+1)·r)` with
//! `r = ⌊n / P⌋` (one DMA access pattern, partition stride `r`), and the `n mod P` tail
//! positions are folded into partition 0 after its run. Each partition reduces its run in
//! chunks as above (fp32, vector/scalar engines), giving one partial per partition, and
//! the partials are combined across partitions on GpSimd, then finished on partition 0:
//! - sum/mean/max/min: one `partition_reduce` (add, max, min) of the `[P, 1]` partials;
//! - logsumexp: partials `(m_p, s_p)` gathered into rows on partition 0, then
//!   `M = max m_p` and `log Σ_p s_p·e^{m_p − M} + M`;
//! - argmax/argmin: partials (value, first index in the run + `p·r`) gathered into rows,
//!   then the same first-candidate rule as within a chunk: NaN first, else the extreme,
//!   ties to the smaller index.
//!
//! A gather of a `[P, 1]` column into a `[1, P]` row is GpSimd work too: broadcast the
//! column along the free axis (`0 + v`), keep the diagonal with `affine_select` (−∞
//! elsewhere), and max-reduce across partitions. GpSimd rather than a ones-vector (or
//! identity) matmul on the tensor engine: its adds are plain fp32 in a fixed partition
//! order (exact for the gather, deterministic for the sum), it also reduces with max/min,
//! which a matmul cannot, and NaN/±∞ partials pass through unchanged, where a matmul
//! multiplies every partial by 0 or 1 (0·∞ and 0·NaN are NaN) and rounds fp32 operands
//! per the tensor engine's mode.
//!
//! Columns: sum, mean, max and min over a non-last axis (`inner` ≥ [`COLUMN_MIN_INNER`])
//! do not put `inner` positions on partitions, which needs a transposing DMA of
//! element-sized descriptors (2.3 GB/s on a 4096² column sum). Instead each DMA loads a
//! contiguous block: 128 consecutive axis positions on partitions, up to [`CHUNK`]
//! `inner` columns on the free axis. GpSimd folds the blocks of the axis elementwise into
//! a `[128, F]` accumulator (the first block is loaded straight into it), then reduces it
//! across partitions once (`partition_reduce`). GpSimd rather than a ones-vector matmul:
//! it also does max/min, and at ≈ 150 + F cycles per block it outruns HBM on both
//! generations (≈ 590 GB/s on trn2 at F = 4096) while leaving the vector engine free.
//! Three input buffers and two accumulators keep the DMAs streaming.
//!
//! Indices are computed in fp32, exact below 2^24; longer axes are refused for
//! argmax/argmin with an error rather than answered wrongly.

// Kernel code: tile and block indices are bounded by the validated op spec and the
// tile sizes this kernel chose.
#![allow(clippy::indexing_slicing)]

use super::unsupported;
use crate::{ActFn, Affine, AluOp, CmpOp, Engine, HbmTensor, Result, ScalarArg, Simulator, Tile};
use xkern_core::{DType, NormKind, NormSpec, ReduceKind, ReduceSpec};

/// Elements of the axis per chunk (16 KiB of fp32 per partition).
const CHUNK: usize = 4096;
/// Replaces ±∞ in running maxima (f32::MAX).
const BIG: f32 = f32::MAX;
/// Index penalty for non-candidates in argmax (larger than any exact index).
const INDEX_PENALTY: f32 = 1.0e9;

/// Buffer sets of the row normalisations, rotating over groups of rows: with two, the
/// next group's load still waited for the stores of the group before (trn2 softmax
/// 4096² f32: 88% of HBM with two, 94% with three; four no longer fit trn1's SBUF).
const NORM_SETS: usize = 3;

/// Column reductions take contiguous row blocks from this many `inner` positions (512 B of
/// fp32 per DMA descriptor, where DMA efficiency is on its plateau); narrower ones keep
/// `inner` on partitions.
const COLUMN_MIN_INNER: usize = 128;

/// Few rows split across partitions: at most `P / SPLIT_ROWS_DIVISOR` rows (8 of 128,
/// one DMA engine's worth of partitions), so that unsplit they would leave most of the
/// 16 DMA engines and 128 lanes idle.
const SPLIT_ROWS_DIVISOR: usize = 16;
/// ... and at least this many positions per partition (4 KiB of fp32, where DMA
/// efficiency saturates), so that the per-row cross-partition step stays negligible.
const SPLIT_MIN_RUN: usize = 1024;

const V: Engine = Engine::Vector;

/// A group of rows on partitions.
#[derive(Clone, Copy)]
struct Group {
    /// Input element of (row 0, axis 0).
    start: usize,
    /// Input stride between rows.
    pstride: usize,
    /// Rows (partitions).
    parts: usize,
    /// First output row.
    out_row: usize,
}

/// The groups of `[outer, axis, inner]` (input at `offset`).
fn groups(outer: usize, axis: usize, inner: usize, offset: usize, p: usize) -> Vec<Group> {
    let mut g = Vec::new();
    if inner == 1 {
        for r0 in (0..outer).step_by(p) {
            g.push(Group {
                start: offset + r0 * axis,
                pstride: axis,
                parts: p.min(outer - r0),
                out_row: r0,
            });
        }
    } else {
        for o in 0..outer {
            for i0 in (0..inner).step_by(p) {
                g.push(Group {
                    start: offset + o * axis * inner + i0,
                    pstride: 1,
                    parts: p.min(inner - i0),
                    out_row: o * inner + i0,
                });
            }
        }
    }
    g
}

/// `dst = f(...)` shorthand helpers over `[P, 1]` tiles.
fn tt(sim: &mut Simulator, dst: &Tile, a: &Tile, b: &Tile, op: AluOp) -> Result<()> {
    sim.tensor_tensor(V, dst, a, b, op).map(drop)
}

fn ts(sim: &mut Simulator, dst: &Tile, x: &Tile, op: AluOp, s: impl Into<ScalarArg>) -> Result<()> {
    sim.tensor_scalar(V, dst, x, op, s.into(), None).map(drop)
}

fn ts2(
    sim: &mut Simulator,
    dst: &Tile,
    x: &Tile,
    op0: AluOp,
    s0: f32,
    op1: AluOp,
    s1: f32,
) -> Result<()> {
    sim.tensor_scalar(V, dst, x, op0, s0.into(), Some((op1, s1.into())))
        .map(drop)
}

/// Loads chunk `[j0, j0 + c)` of the group's rows into `dst` (fp32, cast by the DMA).
fn load_chunk(
    sim: &mut Simulator,
    x: &HbmTensor,
    g: &Group,
    inner: usize,
    j0: usize,
    c: usize,
    dst: &Tile,
) -> Result<()> {
    let ap = x.pattern(g.start + j0 * inner, [g.pstride, g.parts], &[[inner, c]])?;
    sim.dma_copy(*dst, ap).map(drop)
}

/// Running state `[P, 1]` tiles of one group.
#[derive(Clone, Copy)]
struct Scratch {
    x: Tile,
    tmp: Tile,
    idx: Tile,
    mask: Tile,
    cm: Tile,
    ci: Tile,
    acc: Tile,
    acc2: Tile,
    t1: Tile,
    t2: Tile,
    t3: Tile,
}

impl Scratch {
    fn new(sim: &mut Simulator, p: usize, c: usize) -> Result<Scratch> {
        let s = Scratch::without_indices(sim, p, c)?;
        Ok(Scratch {
            idx: sim.sbuf(p, c, DType::F32)?,
            mask: sim.sbuf(p, c, DType::F32)?,
            ..s
        })
    }

    /// Scratch for kernels that never use `idx` and `mask` (they alias `x` and `tmp`):
    /// half the SBUF of [`Scratch::new`].
    fn without_indices(sim: &mut Simulator, p: usize, c: usize) -> Result<Scratch> {
        let f = DType::F32;
        let (x, tmp) = (sim.sbuf(p, c, f)?, sim.sbuf(p, c, f)?);
        Ok(Scratch {
            x,
            tmp,
            idx: x,
            mask: tmp,
            cm: sim.sbuf(p, 1, f)?,
            ci: sim.sbuf(p, 1, f)?,
            acc: sim.sbuf(p, 1, f)?,
            acc2: sim.sbuf(p, 1, f)?,
            t1: sim.sbuf(p, 1, f)?,
            t2: sim.sbuf(p, 1, f)?,
            t3: sim.sbuf(p, 1, f)?,
        })
    }

    /// The scratch tiles cut to `parts` partitions and `c` chunk columns.
    fn view(&self, parts: usize, c: usize) -> Result<Scratch> {
        let p = |t: &Tile| t.partition_slice(0, parts);
        let pc = |t: &Tile| t.partition_slice(0, parts).and_then(|t| t.cols(0, c));
        Ok(Scratch {
            x: pc(&self.x)?,
            tmp: pc(&self.tmp)?,
            idx: pc(&self.idx)?,
            mask: pc(&self.mask)?,
            cm: p(&self.cm)?,
            ci: p(&self.ci)?,
            acc: p(&self.acc)?,
            acc2: p(&self.acc2)?,
            t1: p(&self.t1)?,
            t2: p(&self.t2)?,
            t3: p(&self.t3)?,
        })
    }
}

/// Folds chunk `s.x` (columns `j0..`) of a `max`-like online state (m in `acc`, sum in
/// `acc2`): `m' = max(m, max(x))` (clamped to ±MAX when `clamp`), `s = s·e^{m−m'} +
/// Σ e^{x−m'}`.
fn online_exp_sum(sim: &mut Simulator, s: &Scratch, clamp: bool) -> Result<()> {
    online_max(sim, s, clamp)?;
    online_exp(sim, s)
}

/// The vector-engine half of [`online_exp_sum`]: `cm = m' = max(m, max(x))`.
fn online_max(sim: &mut Simulator, s: &Scratch, clamp: bool) -> Result<()> {
    sim.tensor_reduce(V, &s.cm, AluOp::Max, &s.x)?;
    tt(sim, &s.cm, &s.cm, &s.acc, AluOp::Max)?;
    if clamp {
        ts2(sim, &s.cm, &s.cm, AluOp::Min, BIG, AluOp::Max, -BIG)?;
    }
    Ok(())
}

/// The rest of [`online_exp_sum`], from `cm = m'`: the exponentials and the running sum.
fn online_exp(sim: &mut Simulator, s: &Scratch) -> Result<()> {
    online_exp_issue(sim, s)?;
    online_exp_finish(sim, s)
}

/// The exponentials of [`online_exp`] (scalar engine), after `t1 = −m'`.
fn online_exp_issue(sim: &mut Simulator, s: &Scratch) -> Result<()> {
    // t1 = −m'
    ts(sim, &s.t1, &s.cm, AluOp::Multiply, -1.0)?;
    // t2 = e^{m − m'}
    sim.activation(&s.t2, ActFn::Exp, &s.acc, 1.0.into(), s.t1.into(), None)?;
    // Σ e^{x − m'} into ci (the exponentials themselves are scratch).
    sim.activation(
        &s.tmp,
        ActFn::Exp,
        &s.x,
        1.0.into(),
        s.t1.into(),
        Some(&s.ci),
    )
    .map(drop)
}

/// The running-state update of [`online_exp`] (vector engine).
fn online_exp_finish(sim: &mut Simulator, s: &Scratch) -> Result<()> {
    tt(sim, &s.acc2, &s.acc2, &s.t2, AluOp::Multiply)?;
    tt(sim, &s.acc2, &s.acc2, &s.ci, AluOp::Add)?;
    sim.tensor_copy(V, &s.acc, &s.cm).map(drop)
}

/// The identity a kind's running value starts from.
fn init_value(kind: ReduceKind) -> f32 {
    match kind {
        ReduceKind::Sum | ReduceKind::Mean => 0.0,
        ReduceKind::Max | ReduceKind::ArgMax => f32::NEG_INFINITY,
        ReduceKind::Min | ReduceKind::ArgMin => f32::INFINITY,
        ReduceKind::LogSumExp => -BIG,
    }
}

/// Sets the running state of `s` (all its partitions) to the empty reduction.
fn init_state(sim: &mut Simulator, kind: ReduceKind, s: &Scratch) -> Result<()> {
    let arg = matches!(kind, ReduceKind::ArgMax | ReduceKind::ArgMin);
    sim.memset(V, &s.acc, init_value(kind))?;
    if arg || kind == ReduceKind::LogSumExp {
        sim.memset(V, &s.acc2, 0.0)?;
    }
    if arg {
        sim.iota(
            &s.idx,
            Affine {
                offset: 0,
                partition: 0,
                free: 1,
            },
        )?;
    }
    Ok(())
}

/// Folds the chunk in `s.x` (its columns are axis positions `j0..` of each partition's
/// run) into the running state of `s`.
fn fold_chunk(sim: &mut Simulator, kind: ReduceKind, s: &Scratch, j0: usize) -> Result<()> {
    match kind {
        ReduceKind::Sum | ReduceKind::Mean => {
            sim.tensor_reduce(V, &s.cm, AluOp::Add, &s.x)?;
            tt(sim, &s.acc, &s.acc, &s.cm, AluOp::Add)
        }
        ReduceKind::Max | ReduceKind::Min => {
            let op = if kind == ReduceKind::Max {
                AluOp::Max
            } else {
                AluOp::Min
            };
            sim.tensor_reduce(V, &s.cm, op, &s.x)?;
            tt(sim, &s.acc, &s.acc, &s.cm, op)
        }
        ReduceKind::LogSumExp => online_exp_sum(sim, s, true),
        ReduceKind::ArgMax | ReduceKind::ArgMin => {
            arg_chunk(sim, s, kind == ReduceKind::ArgMax, j0)
        }
    }
}

/// The reduction kernel.
pub(crate) fn reduce(
    sim: &mut Simulator,
    spec: &ReduceSpec,
    x: HbmTensor,
    out: HbmTensor,
) -> Result<()> {
    let (outer, n, inner) = (spec.outer, spec.axis_len, spec.inner);
    let arg = matches!(spec.kind, ReduceKind::ArgMax | ReduceKind::ArgMin);
    if arg && n > 1 << 24 {
        return Err(unsupported(
            "argmax/argmin",
            format!("an axis of {n} positions; fp32 indices are exact up to 2^24"),
        ));
    }
    let pmax = sim.config().partitions;
    if outer * inner * SPLIT_ROWS_DIVISOR <= pmax && n >= pmax * SPLIT_MIN_RUN {
        return reduce_split(sim, spec, x, out);
    }
    let columns = matches!(
        spec.kind,
        ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Max | ReduceKind::Min
    );
    if columns && inner >= COLUMN_MIN_INNER && n > 0 {
        return reduce_columns(sim, spec, x, out);
    }
    let c_max = n.clamp(1, CHUNK);
    let rows = pmax.min(outer * inner).max(1);
    let full = if arg {
        Scratch::new(sim, rows, c_max)?
    } else {
        Scratch::without_indices(sim, rows, c_max)?
    };
    // Three input buffers: loads run ahead of the folds (below).
    let xbuf = [
        full.x,
        sim.sbuf(rows, c_max, DType::F32)?,
        sim.sbuf(rows, c_max, DType::F32)?,
    ];
    // Results rotate over four columns, so that a group's result copy does not wait
    // for the store of the group before (a DMA's fixed latency per group).
    let res_out = sim.sbuf(pmax, 4, out.dtype())?;
    // Loads run one chunk ahead of the folds, in program order too: the DMA engines
    // serve transfers in issue order, so a load issued after a group's result store
    // waited for that store (its reduction plus the DMA fixed latency). Buffers rotate
    // across groups (with one chunk per row, a per-group count would reuse one buffer).
    let gs = groups(outer, n, inner, spec.offset, pmax);
    let steps: Vec<(usize, usize)> = (0..gs.len())
        .flat_map(|gi| (0..n).step_by(c_max).map(move |j0| (gi, j0)))
        .collect();
    let chunk = |i: usize| -> Result<Scratch> {
        let (gi, j0) = steps[i];
        Scratch {
            x: xbuf[i % xbuf.len()],
            ..full
        }
        .view(gs[gi].parts, c_max.min(n - j0))
    };
    let load = |sim: &mut Simulator, i: usize| -> Result<()> {
        let (gi, j0) = steps[i];
        let s = chunk(i)?;
        load_chunk(sim, &x, &gs[gi], inner, j0, s.x.free_size(), &s.x)
    };
    if !steps.is_empty() {
        load(sim, 0)?;
    }
    let mut i = 0;
    for (gi, g) in gs.iter().enumerate() {
        let s0 = full.view(g.parts, c_max)?;
        init_state(sim, spec.kind, &s0)?;
        while i < steps.len() && steps[i].0 == gi {
            if i + 1 < steps.len() {
                load(sim, i + 1)?;
            }
            fold_chunk(sim, spec.kind, &chunk(i)?, steps[i].1)?;
            i += 1;
        }
        let res = &s0.t1;
        match spec.kind {
            ReduceKind::Sum | ReduceKind::Max | ReduceKind::Min => {
                sim.tensor_copy(V, res, &s0.acc)?;
            }
            ReduceKind::Mean => ts(sim, res, &s0.acc, AluOp::Multiply, 1.0 / n as f32)?,
            ReduceKind::LogSumExp => {
                sim.activation(res, ActFn::Log, &s0.acc2, 1.0.into(), 0.0.into(), None)?;
                tt(sim, res, res, &s0.acc, AluOp::Add)?;
            }
            ReduceKind::ArgMax | ReduceKind::ArgMin => {
                sim.tensor_copy(V, res, &s0.acc2).map(drop)?
            }
        }
        let o = res_out.partition_slice(0, g.parts)?.cols(gi % 4, 1)?;
        sim.tensor_copy(V, &o, res)?;
        sim.dma_copy(out.pattern(g.out_row, [1, g.parts], &[[1, 1]])?, o)?;
    }
    Ok(())
}

/// Sum, mean, max or min over a non-last axis (see the module doc, "Columns"): contiguous
/// `[128 axis positions, F inner columns]` blocks folded elementwise on GpSimd, then one
/// reduction across partitions per column chunk.
fn reduce_columns(
    sim: &mut Simulator,
    spec: &ReduceSpec,
    x: HbmTensor,
    out: HbmTensor,
) -> Result<()> {
    let (outer, n, inner) = (spec.outer, spec.axis_len, spec.inner);
    let g = Engine::GpSimd;
    let op = match spec.kind {
        ReduceKind::Max => AluOp::Max,
        ReduceKind::Min => AluOp::Min,
        _ => AluOp::Add,
    };
    let p = sim.config().partitions;
    let f_max = inner.clamp(1, CHUNK);
    let f32_ = DType::F32;
    let acc = [sim.sbuf(p, f_max, f32_)?, sim.sbuf(p, f_max, f32_)?];
    let xbuf = [
        sim.sbuf(p, f_max, f32_)?,
        sim.sbuf(p, f_max, f32_)?,
        sim.sbuf(p, f_max, f32_)?,
    ];
    let row = sim.sbuf(1, f_max, f32_)?;
    let ostage = sim.sbuf(1, f_max, out.dtype())?;
    let (mut k, mut chunk) = (0, 0);
    for o in 0..outer {
        for c0 in (0..inner).step_by(f_max) {
            let f = f_max.min(inner - c0);
            let base = spec.offset + o * n * inner + c0;
            let acc_t = acc[chunk % 2];
            chunk += 1;
            for a0 in (0..n).step_by(p) {
                let asz = p.min(n - a0);
                let ap = x.pattern(base + a0 * inner, [inner, asz], &[[1, f]])?;
                let a = acc_t.partition_slice(0, asz)?.cols(0, f)?;
                if a0 == 0 {
                    sim.dma_copy(a, ap)?;
                    continue;
                }
                let xt = xbuf[k % 3].partition_slice(0, asz)?.cols(0, f)?;
                k += 1;
                sim.dma_copy(xt, ap)?;
                sim.tensor_tensor(g, &a, &a, &xt, op)?;
            }
            let r = row.cols(0, f)?;
            sim.partition_reduce(&r, op, &acc_t.partition_slice(0, p.min(n))?.cols(0, f)?)?;
            let o_t = ostage.cols(0, f)?;
            if spec.kind == ReduceKind::Mean {
                sim.tensor_scalar(g, &o_t, &r, AluOp::Multiply, (1.0 / n as f32).into(), None)?;
            } else {
                sim.tensor_copy(g, &o_t, &r)?;
            }
            sim.dma_copy(out.pattern(o * inner + c0, [f, 1], &[[1, f]])?, o_t)?;
        }
    }
    Ok(())
}

/// Moves `col [P, 1]` into `row [1, P]` on partition 0 with GpSimd, exactly (NaN and ±∞
/// included): broadcast along the free axis (`0 + v`), keep the diagonal, fill the rest
/// with −∞, and max-reduce across partitions. `zeros` and `sq` are `[P, P]`.
fn gather_row(sim: &mut Simulator, row: &Tile, col: &Tile, zeros: &Tile, sq: &Tile) -> Result<()> {
    let g = Engine::GpSimd;
    sim.tensor_scalar(g, sq, zeros, AluOp::Add, (*col).into(), None)?;
    let diagonal = Affine {
        offset: 0,
        partition: 1,
        free: -1,
    };
    sim.affine_select(sq, sq, diagonal, CmpOp::Eq, f32::NEG_INFINITY)?;
    sim.partition_reduce(row, AluOp::Max, sq).map(drop)
}

/// The reduction of few long rows (see the module doc, "Long rows"): each row is split
/// into `P` runs of `⌊n / P⌋` positions, one per partition, plus a tail of `n mod P`
/// positions folded into partition 0; the per-partition partials are then combined
/// across partitions on GpSimd and finished on partition 0.
fn reduce_split(
    sim: &mut Simulator,
    spec: &ReduceSpec,
    x: HbmTensor,
    out: HbmTensor,
) -> Result<()> {
    let (outer, n, inner) = (spec.outer, spec.axis_len, spec.inner);
    let kind = spec.kind;
    let arg = matches!(kind, ReduceKind::ArgMax | ReduceKind::ArgMin);
    let pairs = arg || kind == ReduceKind::LogSumExp;
    let p = sim.config().partitions;
    let run = n / p;
    let tail = n - run * p;
    let c_max = run.min(CHUNK);
    let full = Scratch::new(sim, p, c_max)?;
    let xbuf = [full.x, sim.sbuf(p, c_max, DType::F32)?];
    let res_out = sim.sbuf(1, 1, out.dtype())?;
    // Pair kinds gather (value, second) partials onto partition 0.
    let (zeros, sq, rows) = if pairs {
        let zeros = sim.sbuf(p, p, DType::F32)?;
        sim.memset(Engine::GpSimd, &zeros, 0.0)?;
        (
            Some(zeros),
            Some(sim.sbuf(p, p, DType::F32)?),
            Some(sim.sbuf(1, 2 * p, DType::F32)?),
        )
    } else {
        (None, None, None)
    };
    // Argmax/argmin: the first axis position of each partition's run.
    let base = if arg {
        let b = sim.sbuf(p, 1, DType::F32)?;
        let first = Affine {
            offset: 0,
            partition: run as i64,
            free: 0,
        };
        sim.iota(&b, first)?;
        Some(b)
    } else {
        None
    };
    let s0 = full.view(p, c_max)?;
    let mut k = 0;
    for r in 0..outer * inner {
        let start = spec.offset + (r / inner) * n * inner + r % inner;
        init_state(sim, kind, &s0)?;
        for j0 in (0..run).step_by(c_max) {
            let c = c_max.min(run - j0);
            let s = Scratch {
                x: xbuf[k % 2],
                ..full
            }
            .view(p, c)?;
            k += 1;
            let ap = x.pattern(start + j0 * inner, [run * inner, p], &[[inner, c]])?;
            sim.dma_copy(s.x, ap)?;
            fold_chunk(sim, kind, &s, j0)?;
        }
        if tail > 0 {
            // Positions [P·run, n) join partition 0's run (they come after all of it, so
            // its first-index rule still holds).
            let s = Scratch {
                x: xbuf[k % 2],
                ..full
            }
            .view(1, tail)?;
            k += 1;
            let ap = x.pattern(start + p * run * inner, [inner, 1], &[[inner, tail]])?;
            sim.dma_copy(s.x, ap)?;
            fold_chunk(sim, kind, &s, p * run)?;
        }
        // Across partitions, finished on partition 0.
        let s1 = full.view(1, p)?;
        let res = &s1.t1;
        match (kind, zeros, sq, rows) {
            (ReduceKind::LogSumExp, Some(z), Some(sq), Some(rows)) => {
                // Partials (m_p, s_p): log Σ_p s_p·e^{m_p − M} + M with M = max m_p.
                let (mrow, srow) = (rows.cols(0, p)?, rows.cols(p, p)?);
                gather_row(sim, &mrow, &s0.acc, &z, &sq)?;
                gather_row(sim, &srow, &s0.acc2, &z, &sq)?;
                sim.tensor_reduce(V, &s1.cm, AluOp::Max, &mrow)?;
                ts(sim, &s1.t2, &s1.cm, AluOp::Multiply, -1.0)?;
                sim.activation(&s1.tmp, ActFn::Exp, &mrow, 1.0.into(), s1.t2.into(), None)?;
                tt(sim, &s1.tmp, &s1.tmp, &srow, AluOp::Multiply)?;
                sim.tensor_reduce(V, &s1.ci, AluOp::Add, &s1.tmp)?;
                sim.activation(res, ActFn::Log, &s1.ci, 1.0.into(), 0.0.into(), None)?;
                tt(sim, res, res, &s1.cm, AluOp::Add)?;
            }
            (ReduceKind::ArgMax | ReduceKind::ArgMin, Some(z), Some(sq), Some(rows)) => {
                // Partials (value, first index within the run) → global indices, then the
                // first candidate among the partials: NaN first, else the extreme, ties
                // to the smaller index.
                if let Some(b) = &base {
                    tt(sim, &s0.acc2, &s0.acc2, b, AluOp::Add)?;
                }
                let (vrow, irow) = (rows.cols(0, p)?, rows.cols(p, p)?);
                gather_row(sim, &vrow, &s0.acc, &z, &sq)?;
                gather_row(sim, &irow, &s0.acc2, &z, &sq)?;
                let ext = if kind == ReduceKind::ArgMax {
                    AluOp::Max
                } else {
                    AluOp::Min
                };
                sim.tensor_reduce(V, &s1.cm, ext, &vrow)?;
                first_candidate(sim, &vrow, &irow, &s1.cm, &s1.tmp, &s1.mask, res)?;
            }
            _ => {
                let op = match kind {
                    ReduceKind::Max => AluOp::Max,
                    ReduceKind::Min => AluOp::Min,
                    _ => AluOp::Add,
                };
                sim.partition_reduce(&s1.ci, op, &s0.acc)?;
                if kind == ReduceKind::Mean {
                    ts(sim, res, &s1.ci, AluOp::Multiply, 1.0 / n as f32)?;
                } else {
                    sim.tensor_copy(V, res, &s1.ci)?;
                }
            }
        }
        sim.tensor_copy(V, &res_out, res)?;
        sim.dma_copy(out.pattern(r, [1, 1], &[[1, 1]])?, res_out)?;
    }
    Ok(())
}

/// Into `out [P, 1]`: the smallest `idx` among the candidates of `x` for its extreme
/// `cm` — the elements equal to it, or NaN (then `cm` is NaN and nothing equals it).
fn first_candidate(
    sim: &mut Simulator,
    x: &Tile,
    idx: &Tile,
    cm: &Tile,
    tmp: &Tile,
    mask: &Tile,
    out: &Tile,
) -> Result<()> {
    ts(sim, tmp, x, AluOp::IsEqual, *cm)?;
    tt(sim, mask, x, x, AluOp::IsEqual)?;
    ts2(sim, mask, mask, AluOp::Multiply, -1.0, AluOp::Add, 1.0)?;
    tt(sim, tmp, tmp, mask, AluOp::Max)?;
    // 0 for candidates, a penalty for the rest, plus the index; the min is the first
    // candidate.
    ts2(
        sim,
        tmp,
        tmp,
        AluOp::Multiply,
        -INDEX_PENALTY,
        AluOp::Add,
        INDEX_PENALTY,
    )?;
    tt(sim, tmp, tmp, idx, AluOp::Add)?;
    sim.tensor_reduce(V, out, AluOp::Min, tmp).map(drop)
}

/// One chunk of argmax (`max`) or argmin: best value in `acc`, its index in `acc2`.
fn arg_chunk(sim: &mut Simulator, s: &Scratch, max: bool, j0: usize) -> Result<()> {
    let (ext, better) = if max {
        (AluOp::Max, AluOp::IsGt)
    } else {
        (AluOp::Min, AluOp::IsLt)
    };
    // cm = extreme of the chunk (NaN if it holds NaN).
    sim.tensor_reduce(V, &s.cm, ext, &s.x)?;
    first_candidate(sim, &s.x, &s.idx, &s.cm, &s.tmp, &s.mask, &s.ci)?;
    ts(sim, &s.ci, &s.ci, AluOp::Add, j0 as f32)?;
    // Merge with the running best: take the chunk's when strictly better, or when it is
    // NaN and the best so far is not (the first NaN wins).
    tt(sim, &s.t1, &s.cm, &s.acc, better)?;
    tt(sim, &s.t2, &s.cm, &s.cm, AluOp::IsEqual)?;
    ts2(sim, &s.t2, &s.t2, AluOp::Multiply, -1.0, AluOp::Add, 1.0)?;
    tt(sim, &s.t3, &s.acc, &s.acc, AluOp::IsEqual)?;
    tt(sim, &s.t2, &s.t2, &s.t3, AluOp::Multiply)?;
    tt(sim, &s.t1, &s.t1, &s.t2, AluOp::Max)?;
    // index += take · (chunk index − index); value = NaN-propagating extreme.
    tt(sim, &s.t2, &s.ci, &s.acc2, AluOp::Subtract)?;
    tt(sim, &s.t2, &s.t2, &s.t1, AluOp::Multiply)?;
    tt(sim, &s.acc2, &s.acc2, &s.t2, AluOp::Add)?;
    tt(sim, &s.acc, &s.acc, &s.cm, ext)
}

/// Softmax, log_softmax or RMS norm along the axis (rows on partitions), in two passes
/// per group of rows: statistics (online max and exp-sum, or Σ x²), then the outputs.
///
/// Three sets of buffers rotate over groups, so the next groups' loads overlap this
/// group's compute and stores; 16-bit inputs stay 16-bit in SBUF. When the whole row fits one chunk, pass 1 keeps
/// `e^{x − m}` (softmax) and pass 2 only scales it on the vector engine, so the scalar
/// engine computes each exponential once.
pub(crate) fn normalize(
    sim: &mut Simulator,
    spec: &NormSpec,
    x: HbmTensor,
    weight: Option<HbmTensor>,
    out: HbmTensor,
) -> Result<()> {
    let (outer, n, inner) = (spec.outer, spec.axis_len, spec.inner);
    let pmax = sim.config().partitions;
    let c_max = n.clamp(1, CHUNK);
    let one_chunk = n <= c_max;
    let rows = pmax.min(outer * inner).max(1);
    // 16-bit inputs stay 16-bit in SBUF (the engines widen on read): a casting DMA
    // moves the wider element size, which capped bf16 softmax at half of HBM.
    let xdt = x.dtype();
    let mut sets = (0..NORM_SETS)
        .map(|_| Scratch::without_indices(sim, rows, c_max))
        .collect::<Result<Vec<_>>>()?;
    if xdt != DType::F32 {
        for set in &mut sets {
            set.x = sim.sbuf(rows, c_max, xdt)?;
        }
    }
    let ostages = (0..NORM_SETS)
        .map(|_| sim.sbuf(rows, c_max, out.dtype()))
        .collect::<Result<Vec<_>>>()?;
    let wstage = match weight {
        Some(_) => Some(sim.sbuf(rows, c_max, DType::F32)?),
        None => None,
    };
    let weight = match (weight, &spec.weight) {
        (Some(w), Some(view)) => Some((w, view.clone())),
        _ => None,
    };
    let gs = groups(outer, n, inner, spec.offset, pmax);
    let softmax_like = matches!(spec.kind, NormKind::Softmax | NormKind::LogSoftmax);
    // Rows of one chunk are software-pipelined over groups, in program order: the load
    // of group g + 2 and the vector engine's max of group g + 1 are issued before the
    // rest of group g. The DMA engines and each compute engine serve their instructions
    // in issue order, so a load issued after a store waited for it, and the vector
    // engine's max of the next group waited behind this group's scaling, which waits for
    // the scalar engine's exponentials (trn2 bf16 softmax: 10.5 µs per group, no engine
    // busier than 63%).
    let load_group = |sim: &mut Simulator, gi: usize| -> Result<()> {
        let x_t = sets[gi % NORM_SETS]
            .x
            .partition_slice(0, gs[gi].parts)?
            .cols(0, n)?;
        load_chunk(sim, &x, &gs[gi], inner, 0, n, &x_t)
    };
    // Resets the statistics of group gi; for softmax-like kinds with one chunk, also its
    // vector-engine max.
    let stats_start = |sim: &mut Simulator, gi: usize| -> Result<()> {
        let s0 = sets[gi % NORM_SETS].view(gs[gi].parts, c_max)?;
        if softmax_like {
            sim.memset(V, &s0.acc, -BIG)?;
        }
        sim.memset(V, &s0.acc2, 0.0)?;
        if softmax_like && one_chunk {
            online_max(sim, &s0.view(gs[gi].parts, n)?, false)?;
        }
        Ok(())
    };
    if one_chunk {
        for gi in 0..gs.len().min(2) {
            load_group(sim, gi)?;
        }
        if !gs.is_empty() {
            stats_start(sim, 0)?;
        }
    }
    for (gi, g) in gs.iter().enumerate() {
        if one_chunk {
            if gi + 2 < gs.len() {
                load_group(sim, gi + 2)?;
            }
        } else {
            stats_start(sim, gi)?;
        }
        let full = sets[gi % NORM_SETS];
        let ostage = ostages[gi % NORM_SETS];
        let s0 = full.view(g.parts, c_max)?;
        // Pass 1: row statistics.
        for j0 in (0..n).step_by(c_max) {
            let c = c_max.min(n - j0);
            let s = full.view(g.parts, c)?;
            if !one_chunk {
                load_chunk(sim, &x, g, inner, j0, c, &s.x)?;
            }
            match spec.kind {
                NormKind::Softmax | NormKind::LogSoftmax if one_chunk => {
                    // The next group's max runs on the vector engine while the scalar
                    // engine computes this group's exponentials.
                    online_exp_issue(sim, &s)?;
                    if gi + 1 < gs.len() {
                        stats_start(sim, gi + 1)?;
                    }
                    online_exp_finish(sim, &s)?;
                }
                NormKind::Softmax | NormKind::LogSoftmax => online_exp_sum(sim, &s, false)?,
                NormKind::RmsNorm { .. } => {
                    sim.activation(
                        &s.tmp,
                        ActFn::Square,
                        &s.x,
                        1.0.into(),
                        0.0.into(),
                        Some(&s.ci),
                    )?;
                    tt(sim, &s.acc2, &s.acc2, &s.ci, AluOp::Add)?;
                }
            }
        }
        if one_chunk && !softmax_like && gi + 1 < gs.len() {
            stats_start(sim, gi + 1)?;
        }
        // Per-row scalars: t1 (and t2).
        match spec.kind {
            NormKind::Softmax => {
                ts(sim, &s0.t1, &s0.acc, AluOp::Multiply, -1.0)?;
                sim.reciprocal(&s0.t2, &s0.acc2)?;
            }
            NormKind::LogSoftmax => {
                sim.activation(&s0.t2, ActFn::Log, &s0.acc2, 1.0.into(), 0.0.into(), None)?;
                tt(sim, &s0.t1, &s0.t2, &s0.acc, AluOp::Add)?;
            }
            NormKind::RmsNorm { eps } => {
                let scale = ScalarArg::Imm(1.0 / n as f32);
                sim.activation(&s0.t1, ActFn::Rsqrt, &s0.acc2, scale, eps.into(), None)?;
            }
        }
        // Pass 2: outputs.
        for j0 in (0..n).step_by(c_max) {
            let c = c_max.min(n - j0);
            let s = full.view(g.parts, c)?;
            if !one_chunk {
                load_chunk(sim, &x, g, inner, j0, c, &s.x)?;
            }
            let o = ostage.partition_slice(0, g.parts)?.cols(0, c)?;
            match spec.kind {
                NormKind::Softmax => {
                    if one_chunk {
                        // tmp already holds e^{x − m} with the row's final max. The
                        // scaling is split between the scalar engine (Identity with a
                        // per-partition scale: the same product) and the vector engine,
                        // which also did the max: a third on the scalar engine for f32
                        // rows, two thirds for 16-bit ones (measured on trn2 4096²:
                        // f32 94% of HBM against 83% all-vector and 75% at two thirds;
                        // bf16 54% against 43% all-vector, when the vector engine alone
                        // was the bottleneck).
                        let ca = if xdt == DType::F32 { c / 3 } else { c * 2 / 3 };
                        if ca > 0 {
                            sim.activation(
                                &o.cols(0, ca)?,
                                ActFn::Identity,
                                &s.tmp.cols(0, ca)?,
                                s.t2.into(),
                                0.0.into(),
                                None,
                            )?;
                        }
                        if ca < c {
                            ts(
                                sim,
                                &o.cols(ca, c - ca)?,
                                &s.tmp.cols(ca, c - ca)?,
                                AluOp::Multiply,
                                s.t2,
                            )?;
                        }
                    } else {
                        sim.activation(&s.tmp, ActFn::Exp, &s.x, 1.0.into(), s.t1.into(), None)?;
                        ts(sim, &o, &s.tmp, AluOp::Multiply, s.t2)?;
                    }
                }
                NormKind::LogSoftmax => ts(sim, &o, &s.x, AluOp::Subtract, s.t1)?,
                NormKind::RmsNorm { .. } => match (&weight, &wstage) {
                    (Some((w, view)), Some(ws)) => {
                        let wt = ws.partition_slice(0, g.parts)?.cols(0, c)?;
                        let ap = w.pattern(
                            view.offset + j0 * view.stride,
                            [0, g.parts],
                            &[[view.stride, c]],
                        )?;
                        sim.dma_copy(wt, ap)?;
                        ts(sim, &s.tmp, &s.x, AluOp::Multiply, s.t1)?;
                        tt(sim, &o, &s.tmp, &wt, AluOp::Multiply)?;
                    }
                    _ => ts(sim, &o, &s.x, AluOp::Multiply, s.t1)?,
                },
            }
            let dst = out.pattern(
                g.start - spec.offset + j0 * inner,
                [g.pstride, g.parts],
                &[[inner, c]],
            )?;
            sim.dma_copy(dst, o)?;
        }
    }
    Ok(())
}
