//! Fused attention as a NeuronCore kernel: the flash loop of NEURON.md.
//!
//! For each (batch, query head) and each tile of up to 128 queries (queries on
//! partitions), the key axis streams in blocks of 512 (one PSUM bank of scores):
//! 1. `S = q·kᵀ` on the tensor engine (stationary qᵀ `[D, Mq]`, moving kᵀ `[D, Nk]`,
//!    accumulated over D in chunks of 128), scaled into SBUF by the scalar engine;
//! 2. causal: `affine_select` (GpSimd) on blocks that straddle the diagonal only; blocks
//!    entirely above it are skipped, blocks entirely below need no mask (bottom-right
//!    alignment: query i sees keys j ≤ i + Skv − Sq);
//! 3. row max (`tensor_reduce`), running max `m'` (starting at −MAX so fully masked rows
//!    never form ∞ − ∞), correction `e^{m−m'}` and probabilities `e^{s−m'}` with their
//!    row sum (`activation` with the reduce accumulator), in the input dtype;
//! 4. `p` transposed on the tensor engine (128-key chunks), `p·v` accumulated in PSUM;
//! 5. `acc ← acc·e^{m−m'} + p·v`, `l ← l·e^{m−m'} + Σp` on the vector engine.
//!
//! Finally `out = acc / max(l, tiny)`: a query that sees no key has `acc = 0`, `l = 0`
//! and gets zeros; NaN in a visible score propagates through the max to its row.
//!
//! GQA/MQA: query head h reads key/value head `h / (Hq / Hkv)`. Decode (Sq = 1) runs the
//! same loop with one partition; the key axis is split into blocks.
//! qᵀ and kᵀ are gathered by transposing DMAs (counted in the profile).

use crate::{ActFn, Affine, AluOp, CmpOp, Engine, HbmTensor, Result, Simulator};
use xkern_core::{AttentionSpec, DType};

const TQ: usize = 128;
const TKV: usize = 512;
const TD: usize = 128;
const V: Engine = Engine::Vector;

/// The attention kernel.
pub(crate) fn attention(
    sim: &mut Simulator,
    spec: &AttentionSpec,
    q: HbmTensor,
    k: HbmTensor,
    v: HbmTensor,
    out: HbmTensor,
) -> Result<()> {
    let dt = spec.dtype;
    let f = DType::F32;
    let (d, dv) = (spec.head_dim, spec.v_head_dim);
    let dchunks = d.div_ceil(TD);
    let dv_chunks = dv.div_ceil(TKV);
    // On-chip buffers, allocated once.
    let qt: Vec<_> = (0..dchunks)
        .map(|_| sim.sbuf(TD, TQ, dt))
        .collect::<Result<_>>()?;
    let kt: Vec<_> = (0..dchunks)
        .map(|_| sim.sbuf(TD, TKV, dt))
        .collect::<Result<_>>()?;
    let kt2: Vec<_> = (0..dchunks)
        .map(|_| sim.sbuf(TD, TKV, dt))
        .collect::<Result<_>>()?;
    let s_ps = [sim.psum(TQ, TKV, f)?, sim.psum(TQ, TKV, f)?];
    let pt_ps = [sim.psum(TKV / 4, TKV, f)?, sim.psum(TKV / 4, TKV, f)?];
    let o_ps = [sim.psum(TQ, TKV, f)?, sim.psum(TQ, TKV, f)?];
    let s_sb = sim.sbuf(TQ, TKV, f)?;
    let p_sb = sim.sbuf(TQ, TKV, dt)?;
    let pt_sb = [sim.sbuf(TKV / 4, TKV, dt)?, sim.sbuf(TKV / 4, TKV, dt)?];
    let v_sb = [sim.sbuf(TKV / 4, dv, dt)?, sim.sbuf(TKV / 4, dv, dt)?];
    let acc = sim.sbuf(TQ, dv, f)?;
    let o_sb = sim.sbuf(TQ, dv, dt)?;
    let mut m_t = [sim.sbuf(TQ, 1, f)?, sim.sbuf(TQ, 1, f)?];
    let l = sim.sbuf(TQ, 1, f)?;
    let (neg, corr, rs) = (
        sim.sbuf(TQ, 1, f)?,
        sim.sbuf(TQ, 1, f)?,
        sim.sbuf(TQ, 1, f)?,
    );
    let mut turn = 0usize;
    let shift = spec.kv_seq as i64 - spec.q_seq as i64;
    for b in 0..spec.batch {
        for h in 0..spec.q_heads {
            let kvh = spec.kv_head(h);
            for q0 in (0..spec.q_seq).step_by(TQ) {
                let mq = TQ.min(spec.q_seq - q0);
                // qᵀ [D, Mq] by transposing DMA.
                for (c, t) in qt.iter().enumerate() {
                    let (d0, dsz) = (c * TD, TD.min(d - c * TD));
                    let ap = q.pattern(
                        spec.q.row(b, h, q0) + d0 * spec.q.strides[3],
                        [spec.q.strides[3], dsz],
                        &[[spec.q.strides[2], mq]],
                    )?;
                    sim.dma_copy(t.partition_slice(0, dsz)?.cols(0, mq)?, ap)?;
                }
                let part = |t: &crate::Tile| t.partition_slice(0, mq);
                let (acc_q, l_q) = (part(&acc)?, part(&l)?);
                sim.memset(V, &part(&m_t[0])?, -f32::MAX)?;
                sim.memset(V, &l_q, 0.0)?;
                sim.memset(Engine::GpSimd, &acc_q, 0.0)?;
                // Last key the last query of the tile sees, and the first query's.
                let last_seen = (q0 + mq - 1) as i64 + shift;
                let first_seen = q0 as i64 + shift;
                for k0 in (0..spec.kv_seq).step_by(TKV) {
                    if spec.causal && k0 as i64 > last_seen {
                        break;
                    }
                    let nk = TKV.min(spec.kv_seq - k0);
                    let ktile = if turn.is_multiple_of(2) { &kt } else { &kt2 };
                    let sp = s_ps[turn % 2].partition_slice(0, mq)?.cols(0, nk)?;
                    turn += 1;
                    for (c, t) in ktile.iter().enumerate() {
                        let (d0, dsz) = (c * TD, TD.min(d - c * TD));
                        let ap = k.pattern(
                            spec.k.row(b, kvh, k0) + d0 * spec.k.strides[3],
                            [spec.k.strides[3], dsz],
                            &[[spec.k.strides[2], nk]],
                        )?;
                        let kv = t.partition_slice(0, dsz)?.cols(0, nk)?;
                        sim.dma_copy(kv, ap)?;
                        let qv = qt[c].partition_slice(0, dsz)?.cols(0, mq)?;
                        sim.matmul(&sp, &qv, &kv, c > 0)?;
                    }
                    let s = s_sb.partition_slice(0, mq)?.cols(0, nk)?;
                    sim.activation(
                        &s,
                        ActFn::Identity,
                        &sp,
                        spec.scale.into(),
                        0.0.into(),
                        None,
                    )?;
                    if spec.causal && (k0 + nk - 1) as i64 > first_seen {
                        let expr = Affine {
                            offset: q0 as i64 + shift - k0 as i64,
                            partition: 1,
                            free: -1,
                        };
                        sim.affine_select(&s, &s, expr, CmpOp::Ge, f32::NEG_INFINITY)?;
                    }
                    let (m_old, m_new) = (part(&m_t[0])?, part(&m_t[1])?);
                    let (neg, corr, rs) = (part(&neg)?, part(&corr)?, part(&rs)?);
                    sim.tensor_reduce(V, &m_new, AluOp::Max, &s)?;
                    sim.tensor_tensor(V, &m_new, &m_new, &m_old, AluOp::Max)?;
                    sim.tensor_scalar(V, &neg, &m_new, AluOp::Multiply, (-1.0).into(), None)?;
                    sim.activation(&corr, ActFn::Exp, &m_old, 1.0.into(), neg.into(), None)?;
                    let p = p_sb.partition_slice(0, mq)?.cols(0, nk)?;
                    sim.activation(&p, ActFn::Exp, &s, 1.0.into(), neg.into(), Some(&rs))?;
                    sim.tensor_tensor(V, &l_q, &l_q, &corr, AluOp::Multiply)?;
                    sim.tensor_tensor(V, &l_q, &l_q, &rs, AluOp::Add)?;
                    // p·v, 128 keys at a time.
                    let chunks = nk.div_ceil(TKV / 4);
                    for dc in 0..dv_chunks {
                        let (e0, esz) = (dc * TKV, TKV.min(dv - dc * TKV));
                        let op = o_ps[dc % 2].partition_slice(0, mq)?.cols(0, esz)?;
                        for c in 0..chunks {
                            let (c0, csz) = (c * (TKV / 4), (TKV / 4).min(nk - c * (TKV / 4)));
                            let slot = (turn + c) % 2;
                            let ptp = pt_ps[slot].partition_slice(0, csz)?.cols(0, mq)?;
                            sim.transpose(&ptp, &p.cols(c0, csz)?)?;
                            let pts = pt_sb[slot].partition_slice(0, csz)?.cols(0, mq)?;
                            sim.tensor_copy(Engine::Scalar, &pts, &ptp)?;
                            let vt = v_sb[slot].partition_slice(0, csz)?.cols(0, esz)?;
                            let ap = v.pattern(
                                spec.v.row(b, kvh, k0 + c0) + e0 * spec.v.strides[3],
                                [spec.v.strides[2], csz],
                                &[[spec.v.strides[3], esz]],
                            )?;
                            sim.dma_copy(vt, ap)?;
                            sim.matmul(&op, &pts, &vt, c > 0)?;
                        }
                        let a = acc_q.cols(e0, esz)?;
                        sim.tensor_scalar(V, &a, &a, AluOp::Multiply, corr.into(), None)?;
                        sim.tensor_tensor(V, &a, &a, &op, AluOp::Add)?;
                    }
                    m_t.swap(0, 1);
                }
                // out = acc / max(l, tiny)
                let r = part(&rs)?;
                sim.tensor_scalar(V, &r, &l_q, AluOp::Max, f32::MIN_POSITIVE.into(), None)?;
                sim.reciprocal(&r, &r)?;
                let o = part(&o_sb)?;
                sim.tensor_scalar(V, &o, &acc_q, AluOp::Multiply, r.into(), None)?;
                let row = ((b * spec.q_heads + h) * spec.q_seq + q0) * dv;
                let dst = out.pattern(row, [dv, mq], &[[1, dv]])?;
                sim.dma_copy(dst, o)?;
            }
        }
    }
    Ok(())
}
