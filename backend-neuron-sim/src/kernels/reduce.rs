//! Reductions (sum, mean, max, min, argmax, argmin, logsumexp) and row normalisations
//! (softmax, log_softmax, rms_norm) of the canonical `[outer, axis, inner]` problem.
//!
//! Rows on partitions, the reduced axis on the free axis: up to 128 rows per group
//! (consecutive `outer` rows when `inner = 1`; consecutive `inner` positions of one
//! `outer` otherwise, loaded by a transposing DMA whose free stride is `inner`). The axis
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
//! Indices are computed in fp32, exact below 2^24; longer axes are refused for
//! argmax/argmin with an error rather than answered wrongly.

use super::unsupported;
use crate::{ActFn, Affine, AluOp, Engine, HbmTensor, Result, ScalarArg, Simulator, Tile};
use xkern_core::{DType, NormKind, NormSpec, ReduceKind, ReduceSpec};

/// Elements of the axis per chunk (16 KiB of fp32 per partition).
const CHUNK: usize = 4096;
/// Replaces ±∞ in running maxima (f32::MAX).
const BIG: f32 = f32::MAX;
/// Index penalty for non-candidates in argmax (larger than any exact index).
const INDEX_PENALTY: f32 = 1.0e9;

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
        let f = DType::F32;
        Ok(Scratch {
            x: sim.sbuf(p, c, f)?,
            tmp: sim.sbuf(p, c, f)?,
            idx: sim.sbuf(p, c, f)?,
            mask: sim.sbuf(p, c, f)?,
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
    sim.tensor_reduce(V, &s.cm, AluOp::Max, &s.x)?;
    tt(sim, &s.cm, &s.cm, &s.acc, AluOp::Max)?;
    if clamp {
        ts2(sim, &s.cm, &s.cm, AluOp::Min, BIG, AluOp::Max, -BIG)?;
    }
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
    )?;
    tt(sim, &s.acc2, &s.acc2, &s.t2, AluOp::Multiply)?;
    tt(sim, &s.acc2, &s.acc2, &s.ci, AluOp::Add)?;
    sim.tensor_copy(V, &s.acc, &s.cm).map(drop)
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
    let c_max = n.clamp(1, CHUNK);
    let full = Scratch::new(sim, pmax.min(outer * inner).max(1), c_max)?;
    let res_out = sim.sbuf(pmax, 1, out.dtype())?;
    for g in groups(outer, n, inner, spec.offset, pmax) {
        let s0 = full.view(g.parts, c_max)?;
        let init = match spec.kind {
            ReduceKind::Sum | ReduceKind::Mean => 0.0,
            ReduceKind::Max | ReduceKind::ArgMax => f32::NEG_INFINITY,
            ReduceKind::Min | ReduceKind::ArgMin => f32::INFINITY,
            ReduceKind::LogSumExp => -BIG,
        };
        sim.memset(V, &s0.acc, init)?;
        if arg || spec.kind == ReduceKind::LogSumExp {
            sim.memset(V, &s0.acc2, 0.0)?;
        }
        if arg {
            sim.iota(
                &s0.idx,
                Affine {
                    offset: 0,
                    partition: 0,
                    free: 1,
                },
            )?;
        }
        for j0 in (0..n).step_by(c_max) {
            let c = c_max.min(n - j0);
            let s = full.view(g.parts, c)?;
            load_chunk(sim, &x, &g, inner, j0, c, &s.x)?;
            match spec.kind {
                ReduceKind::Sum | ReduceKind::Mean => {
                    sim.tensor_reduce(V, &s.cm, AluOp::Add, &s.x)?;
                    tt(sim, &s.acc, &s.acc, &s.cm, AluOp::Add)?;
                }
                ReduceKind::Max | ReduceKind::Min => {
                    let op = if spec.kind == ReduceKind::Max {
                        AluOp::Max
                    } else {
                        AluOp::Min
                    };
                    sim.tensor_reduce(V, &s.cm, op, &s.x)?;
                    tt(sim, &s.acc, &s.acc, &s.cm, op)?;
                }
                ReduceKind::LogSumExp => online_exp_sum(sim, &s, true)?,
                ReduceKind::ArgMax | ReduceKind::ArgMin => {
                    arg_chunk(sim, &s, spec.kind == ReduceKind::ArgMax, j0)?
                }
            }
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
        let o = res_out.partition_slice(0, g.parts)?;
        sim.tensor_copy(V, &o, res)?;
        sim.dma_copy(out.pattern(g.out_row, [1, g.parts], &[[1, 1]])?, o)?;
    }
    Ok(())
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
    // Candidates: x == cm, or x is NaN (then cm is NaN too and nothing equals it).
    ts(sim, &s.tmp, &s.x, AluOp::IsEqual, s.cm)?;
    tt(sim, &s.mask, &s.x, &s.x, AluOp::IsEqual)?;
    ts2(
        sim,
        &s.mask,
        &s.mask,
        AluOp::Multiply,
        -1.0,
        AluOp::Add,
        1.0,
    )?;
    tt(sim, &s.tmp, &s.tmp, &s.mask, AluOp::Max)?;
    // 0 for candidates, a penalty for the rest, plus the column index; the min is the
    // first candidate.
    ts2(
        sim,
        &s.tmp,
        &s.tmp,
        AluOp::Multiply,
        -INDEX_PENALTY,
        AluOp::Add,
        INDEX_PENALTY,
    )?;
    tt(sim, &s.tmp, &s.tmp, &s.idx, AluOp::Add)?;
    sim.tensor_reduce(V, &s.ci, AluOp::Min, &s.tmp)?;
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

/// The normalisation kernel: a statistics pass over the axis, then an output pass (the
/// chunk stays in SBUF when the axis fits one chunk, else it is streamed again).
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
    let full = Scratch::new(sim, rows, c_max)?;
    let ostage = sim.sbuf(rows, c_max, out.dtype())?;
    let wstage = match weight {
        Some(_) => Some(sim.sbuf(rows, c_max, DType::F32)?),
        None => None,
    };
    let weight = match (weight, &spec.weight) {
        (Some(w), Some(view)) => Some((w, view.clone())),
        _ => None,
    };
    for g in groups(outer, n, inner, spec.offset, pmax) {
        let s0 = full.view(g.parts, c_max)?;
        // Pass 1: row statistics.
        match spec.kind {
            NormKind::Softmax | NormKind::LogSoftmax => {
                sim.memset(V, &s0.acc, -BIG)?;
                sim.memset(V, &s0.acc2, 0.0)?;
            }
            NormKind::RmsNorm { .. } => {
                sim.memset(V, &s0.acc2, 0.0)?;
            }
        }
        for j0 in (0..n).step_by(c_max) {
            let c = c_max.min(n - j0);
            let s = full.view(g.parts, c)?;
            load_chunk(sim, &x, &g, inner, j0, c, &s.x)?;
            match spec.kind {
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
                load_chunk(sim, &x, &g, inner, j0, c, &s.x)?;
            }
            let o = ostage.partition_slice(0, g.parts)?.cols(0, c)?;
            match spec.kind {
                NormKind::Softmax => {
                    sim.activation(&s.tmp, ActFn::Exp, &s.x, 1.0.into(), s.t1.into(), None)?;
                    ts(sim, &o, &s.tmp, AluOp::Multiply, s.t2)?;
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
